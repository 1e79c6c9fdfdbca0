"""benchmarks/gpu_check.py: its pure helpers exactly, and every stage end to end in its CPU dry run."""

import json
import tarfile

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import choose_step, junit_counts, match_target, target_patterns, verdict

RESNET50_ROWS = {32: 7522, 64: 2083, 128: 638, 256: 238, 512: 126, 1024: 99}  # resnet50 at 224 px, grid from 8 in blocks of 8


def test_choose_step_takes_the_finest_grid_that_fits():
    assert choose_step(RESNET50_ROWS, 0.25, 180.0) == 128  # 638 rows x 0.25 s = 160 s
    assert choose_step(RESNET50_ROWS, 0.25, 159.0) == 256
    assert choose_step(RESNET50_ROWS, 0.01, 180.0) == 32  # 7522 rows x 0.01 s = 75 s: the finest fits
    assert choose_step(RESNET50_ROWS, 0.01, 70.0) == 64  # 7522 x 0.01 = 75 s > 70 s; 2083 x 0.01 = 21 s
    assert choose_step(RESNET50_ROWS, 10.0, 5.0) == 1024  # nothing fits: the coarsest (the probe itself)
    with pytest.raises(ValueError):
        choose_step({}, 1.0, 1.0)


def test_match_target_reads_the_shipped_device_patterns():
    patterns = target_patterns()
    assert match_target("NVIDIA H100 80GB HBM3", patterns) == "h100"
    assert match_target("NVIDIA H200", patterns) == "h200"
    assert match_target("Tesla V100-SXM2-16GB", patterns) == "v100"
    assert match_target("NVIDIA GeForce RTX 4090", patterns) is None


def test_junit_counts_and_verdicts():
    xml = ('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
           '</testsuite></testsuites>')
    assert junit_counts(xml) == {"tests": 10, "failures": 2, "errors": 1, "skipped": 3, "passed": 4}
    assert verdict(4.0, 10.0, 5.0, higher_is_better=False) == "goal"
    assert verdict(7.0, 10.0, 5.0, higher_is_better=False) == "pass"
    assert verdict(11.0, 10.0, 5.0, higher_is_better=False) == "fail"
    assert verdict(1.7, 1.6, 1.8, higher_is_better=True) == "pass"
    assert verdict(None, 1.6, 1.8, higher_is_better=True) == "not measured"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_runs_every_stage_through_the_cli(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    record = gpu_check.main(["--dry-run", "--out", str(out), "--work", str(work), "--budget-s", "800"])
    stages = {s.name: s for s in record.stages}
    assert list(stages)[:3] == ["tests", "profile-probe", "profile"] or list(stages)[:2] == ["tests", "profile-probe"]
    for name in ("tests", "profile-probe", "validate-lut", "prune", "build-engine"):
        assert stages[name].returncode == 0, (name, stages[name].note, (work / f"{name}.log").read_text()[-2000:])
    assert stages["validate"].returncode in (0, 1)  # a failed check is a result, reported below
    assert "python -m iee_deploy train" in stages["prune"].command and "--method halp" in stages["prune"].command
    # every output that comes back from the GPU machine, and no more than 8 files
    files = sorted(p.name for p in out.iterdir())
    assert files == ["cpu-wrn22_2.csv", "cpu-wrn22_2.json", "details.tar.gz", "gpu.json", "gpu.md", "gpu_check.log"]
    with tarfile.open(out / "details.tar.gz") as tar:
        names = tar.getnames()
    assert "validate-lut.json" in names and "engine/engine.json" in names and "prune.log" in names
    # the GPU tests are collected and skip without CUDA
    assert record.tests["skipped"] == record.tests["tests"] >= 5 and record.tests["failures"] == 0
    # the grid: chosen from the probe, recorded in the LUT's own metadata
    meta = json.loads((out / "cpu-wrn22_2.json").read_text())
    assert record.lut["step"] == meta["grid_step"] in record.lut["rows_by_step"]
    assert meta["rows_done"] == record.lut["rows_by_step"][meta["grid_step"]] and meta["complete"]
    assert len(record.validate_lut["samples"]) == 10 and -1 <= record.validate_lut["spearman"] <= 1
    assert record.prune["budget_ms"] == pytest.approx(record.prune["ratio"] * record.prune["dense_predicted_ms"], rel=1e-6)
    assert record.prune["predicted_latency_ms"] <= record.prune["budget_ms"] * (1 + 1e-6)
    assert record.engine["pruned"]["params"] < record.engine["dense"]["params"] and record.engine["speedup"] > 0
    assert record.engine["backend"] == "onnxruntime" and record.engine["precision"] == "fp32"
    budget = record.budget_check["checks"]["latency-budget"]
    assert budget["limit"] == pytest.approx(1.1 * record.budget_check["budget_ms"])
    assert set(record.acceptance) == {"mape_pct", "spearman", "speedup", "latency_over_budget"}
    saved = json.loads((out / "gpu.json").read_text())
    assert saved["engine"]["speedup"] == record.engine["speedup"] and saved["mode"] == "dry-run"
    md = (out / "gpu.md").read_text()
    assert "No figure here is a GPU figure" in md and "| validate-lut MAPE % |" in md
    assert "onnxruntime, fp32, batch 1" in md  # every figure names its device, backend and precision
