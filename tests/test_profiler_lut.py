"""LUT files: real (tiny) profiles on this CPU, metadata, mismatch and corruption checks, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
from conftest import HOSTS, ROOT, assert_user_error, run_cli

from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.profiling import profile as profile_model
from profiler.latency import Calibration, LatencyModel
from profiler.layers import enumerate_layers
from profiler.lut import check_lut, load_lut, meta_path
from profiler.measure import ProfileRequest
from profiler.measurer import settings_for
from profiler.targets import load_target

FAST = ["--target", "cpu", "--model", "resnet20", "--resolution", "16", "--step", "32", "--repeats", "3", "--warmup", "1",
        "--network-repeats", "3", "--calibration-networks", "1", "--min-channels", "8", "--align", "8"]


def request(**changes):
    cpu = load_target("cpu")
    base = ProfileRequest(model="resnet20", num_classes=10, resolution=16, batch=1, target=cpu,
                          settings=settings_for(cpu, warmup=1, repeats=3, network_repeats=3), grid_step=32,
                          calibration_networks=1)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "cpu-resnet20.csv"
    summary = profile_model(request(), out, progress=False)
    return out, summary


def test_profile_writes_a_complete_pandas_readable_lut_with_metadata(tiny_lut):
    out, summary = tiny_lut
    table = pd.read_csv(out)
    assert list(table.columns) == ["signature", "cin", "cout", "median_ms", "iqr_ms", "min_ms", "runs"]
    assert (table.median_ms > 0).all() and (table.runs == 3).all()
    meta = json.loads(meta_path(out).read_text())
    for key in ("target", "backend", "versions", "batch", "precision", "resolution", "model", "machine", "created"):
        assert meta[key], key
    assert (meta["target"], meta["backend"], meta["batch"], meta["precision"], meta["resolution"]) == \
        ("cpu", "onnxruntime", 1, "fp32", 16)
    assert meta["versions"]["onnxruntime"] and meta["machine"]["cpu"] and meta["complete"]
    assert meta["rows_done"] == meta["rows_planned"] == len(table) == summary.measured and summary.reused == 0
    assert len(meta["calibration"]["points"]) == 1 and meta["calibration"]["a"] > 0
    lut = load_lut(out)
    latency = LatencyModel.from_lut(lut)
    assert set(latency.layers) == set(enumerate_layers(build_model("resnet20", 10), (1, 3, 16, 16)))
    # the cpu target's statistic is the fastest run: the full-width model is the sum of the full-size rows' minima
    assert meta["statistic"] == "min"
    fastest = {(r.signature, r.cin, r.cout): r.min_ms for r in lut.rows}
    full = sum(fastest[(key, lut.meta.signatures[key].cin, lut.meta.signatures[key].cout)]
               for key in lut.meta.layers.values())
    assert latency.sum_of_layers({}) == pytest.approx(full)
    dense = latency.predict({})
    assert latency.predict({"layer3.0.conv2": (8, 8)}) < dense


def test_mismatched_luts_are_rejected_naming_the_mismatch(tiny_lut):
    out, _ = tiny_lut
    lut = load_lut(out)
    with pytest.raises(UserError, match="measured for model resnet20, not resnet56"):
        check_lut(lut, model="resnet56")
    with pytest.raises(UserError, match="measured for batch 1, not 256"):
        check_lut(lut, batch=256)
    with pytest.raises(UserError, match="measured for resolution 16, not 32"):
        check_lut(lut, resolution=32)
    bigger = enumerate_layers(build_model("resnet56", 10), (1, 3, 16, 16))
    with pytest.raises(UserError, match="no entry for layer\\(s\\) layer1.3.conv1, layer1.3.conv2, layer1.4.conv1 and"):
        check_lut(lut, layers=bigger)
    smaller = {n: s for n, s in enumerate_layers(build_model("resnet20", 10), (1, 3, 16, 16)).items() if n != "fc"}
    with pytest.raises(UserError, match="has layer\\(s\\) fc that the model lacks"):
        check_lut(lut, layers=smaller)
    other_classes = enumerate_layers(build_model("resnet20", 100), (1, 3, 16, 16))
    with pytest.raises(UserError, match="layer 'fc' is linear_64x10_fixout in the LUT but linear_64x100_fixout"):
        check_lut(lut, layers=other_classes)
    check_lut(lut, model="resnet20", batch=1, resolution=16, layers=enumerate_layers(build_model("resnet20", 10),
                                                                                          (1, 3, 16, 16)))


def test_corrupt_and_incomplete_luts_are_rejected(tiny_lut, tmp_path):
    out, _ = tiny_lut
    lines = out.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    meta_path(bad).write_text(meta_path(out).read_text())
    bad.write_text("".join(lines[:3]) + "conv_x,8,oops,1,1,1,3\n")
    with pytest.raises(UserError, match="corrupt.*line 4 is not a measurement"):
        load_lut(bad)
    bad.write_text("".join(lines[:-2]))
    with pytest.raises(UserError, match="incomplete: 2 of .* rows missing"):
        load_lut(bad)
    bad.write_text("".join(lines) + lines[-1])
    with pytest.raises(UserError, match="appears twice"):
        load_lut(bad)
    bad.write_text("".join(lines))
    meta_path(bad).write_text('{"model": "resnet20", ')
    with pytest.raises(UserError, match="metadata .* is corrupt"):
        load_lut(bad)
    meta_path(bad).unlink()
    with pytest.raises(UserError, match="metadata .* does not exist"):
        load_lut(bad)


def test_existing_out_needs_resume_and_resume_needs_the_same_settings(tiny_lut):
    out, _ = tiny_lut
    with pytest.raises(UserError, match="already exists and is complete; choose another path, or delete it and "):
        profile_model(request(), out, progress=False)  # it read "finish it with `resume`": there is nothing to finish
    with pytest.raises(UserError, match="cannot resume .* it was profiled with `grid_step` 32, this run asks for 16"):
        profile_model(request(grid_step=16), out, resume=True, progress=False)
    with pytest.raises(UserError, match="with `num_classes` 10, this run asks for 100"):
        profile_model(request(num_classes=100), out, resume=True, progress=False)
    meta = json.loads(meta_path(out).read_text())
    meta["versions"]["onnxruntime"] = "0.9"
    elsewhere = out.with_name("elsewhere.csv")
    elsewhere.write_text(out.read_text())
    meta_path(elsewhere).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="measured with library versions .*'onnxruntime': '0.9'"):
        profile_model(request(), elsewhere, resume=True, progress=False)
    meta_path(elsewhere).write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(UserError, match="already exists; finish it with `resume`"):  # an interrupted one
        profile_model(request(), elsewhere, progress=False)
    done = profile_model(request(), out, resume=True, progress=False)  # complete: nothing to measure
    assert (done.measured, done.reused) == (0, len(done.lut.rows))


def test_profile_out_onto_an_engines_record_names_it(tmp_path):
    engine = tmp_path / "eng"
    engine.mkdir()
    (engine / "engine.json").write_text(json.dumps({"run_dir": "run0", "kind": "classification"}))
    # it read "finish an interrupted profile with `resume`": the .json beside the table is an engine's file
    with pytest.raises(UserError, match=r"engine.json', where the LUT `out` .* would write its metadata, is an engine's "
                                        "file, not a LUT's; choose another path for the LUT"):
        profile_model(request(), engine / "engine.csv", progress=False)


def test_cli_validate_lut_rejects_another_model(tiny_lut):
    out, _ = tiny_lut
    assert_user_error(run_cli("validate-lut", "--lut", str(out), "--model", "resnet56", "--resolution", "16"),
                      "measured for model resnet20, not resnet56")


def test_killed_profile_resumes_without_remeasuring(tmp_path):
    out = tmp_path / "killed.csv"
    args = [sys.executable, "-m", "iee_deploy", "profile", *FAST, "--step", "8", "--resolution", "32", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=f"{HOSTS}{os.pathsep}{ROOT}")
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") > 40:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait() == -signal.SIGKILL, "the profile finished before it could be killed"
    before = out.read_text()
    complete_rows = before[: before.rfind("\n") + 1]  # a torn last line is re-measured
    killed_at = complete_rows.count("\n") - 1  # minus the header
    assert not json.loads(meta_path(out).read_text())["complete"]

    resumed = run_cli("profile", *FAST, "--step", "8", "--resolution", "32", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = out.read_text()
    assert after.startswith(complete_rows)  # finished rows untouched: not re-measured
    meta = json.loads(meta_path(out).read_text())
    assert meta["complete"] and len(load_lut(out).rows) == meta["rows_planned"] == 174
    assert f"({174 - killed_at} measured now, {killed_at} reused)" in resumed.stdout


def test_calibration_and_validate_lut_on_random_pruned_subnetworks(tmp_path):
    out = tmp_path / "cal.csv"
    profile_model(request(calibration_networks=3), out, progress=False)
    calibration = load_lut(out).meta.calibration
    assert len(calibration["points"]) == 3 and calibration["a"] > 0
    report = tmp_path / "validate.json"
    result = run_cli("validate-lut", "--lut", str(out), "--model", "resnet20", "--num-classes", "10", "--samples", "3",
                     "--json", str(report))
    assert result.returncode == 0, result.stderr
    figures = json.loads(report.read_text())
    assert len(figures["samples"]) == 3 and figures["keep_range"] == [0.3, 1.0]
    for sample in figures["samples"]:
        assert sample["measured_ms"] > 0 and sample["predicted_ms"] > 0 and 0.3 <= sample["level"] <= 1.0
        predicted = Calibration.from_dict(calibration).apply(sample["sum_of_layers_ms"])
        assert sample["predicted_ms"] == pytest.approx(predicted)
    assert figures["mape_pct"] >= 0 and -1 <= figures["spearman"] <= 1
    assert "MAPE" in result.stdout and "Spearman" in result.stdout
    assert "latency = fastest run" in result.stdout and "measured ms (fastest run)" in result.stdout


def test_lut_killed_during_calibration_is_refused_with_how_to_finish_it(tiny_lut, tmp_path):
    out, _ = tiny_lut
    killed = tmp_path / "killed.csv"
    killed.write_text(out.read_text())
    meta = json.loads(meta_path(out).read_text())
    meta_path(killed).write_text(json.dumps({**meta, "complete": False, "calibration": None}))
    with pytest.raises(UserError, match="stopped before the whole-network calibration finished.*again with resume on"):
        load_lut(killed)
    assert_user_error(run_cli("validate-lut", "--lut", str(killed), "--model", "resnet20", "--resolution", "16"),
                      "uncalibrated", "with resume on")


def test_unwritable_outputs_are_refused_before_any_timing(tiny_lut):
    out, _ = tiny_lut
    started = time.monotonic()
    assert_user_error(run_cli("profile", *FAST, "--out", "/proc/x/x.csv"), "--out '/proc/x/x.csv' is not writable")
    assert_user_error(run_cli("validate-lut", "--lut", str(out), "--model", "resnet20", "--resolution", "16",
                              "--samples", "50", "--json", "/sys/v.json"), "--json '/sys/v.json' is not writable")
    assert time.monotonic() - started < 120  # 50 whole networks were not timed first
