"""build-engine -> validate -> report on a structured ResNet-20 run, with real ONNX Runtime engines."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import HOSTS, ROOT, assert_user_error, run_cli, run_cli_here
from deploy_runs import make_structured_run, real_metrics

from iee_deploy.deploy.build import (
    DENSE_NOTE,
    DENSE_ROW,
    ENGINE_REPORT,
    build_engine,
    read_engine_report,
    run_statistic,
)
from iee_deploy.deploy.report import (
    CURVES,
    EnginePoint,
    RunData,
    counts_line,
    curve,
    front_line,
    front_of,
    fronts_of,
    pareto_figure,
    pareto_series,
    plot_pareto,
    write_report,
)
from iee_deploy.deploy.validate import lut_elsewhere, validate_engine
from iee_deploy.errors import UserError
from iee_deploy.io import save_torch
from iee_deploy.models import build_model
from iee_deploy.runs import FINAL_MODEL, RunInfo, write_run_info
from runtime.timing import TimingConfig

FAST = TimingConfig(warmup_s=0.05, min_iterations=5, min_seconds=0.2)
FAST_CLI = ("--warmup-s", "0.05", "--min-iters", "5", "--min-seconds", "0.2")


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    return real_metrics(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, metrics):
    return make_structured_run(tmp_path_factory.mktemp("run"), keep=0.5, budget_ms=500.0, predicted_latency_ms=0.5,
                               metrics=metrics, summary={"top1": 0.1}, dense_start=True)


@pytest.fixture(scope="module")
def engine_dir(run):
    """The command a user runs: build-engine with the ONNX Runtime backend into the run folder."""
    out = run / "engine-ort"
    result = run_cli("build-engine", "--run", str(run), "--backend", "onnxruntime", "--batch", "2",
                     "--threads", "1", "--out", str(out), *FAST_CLI)
    assert result.returncode == 0, result.stderr
    assert "Speed-up (dense / pruned latency, fastest run)" in result.stdout  # the cpu target's statistic
    return out


def copy_engine(engine_dir: Path, dest: Path) -> Path:
    """A copy of an engine folder's files, to damage or edit without touching the shared fixture."""
    dest.mkdir()
    for f in engine_dir.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_build_engine_measures_dense_and_pruned(run, engine_dir):
    report = read_engine_report(engine_dir)
    assert report.backend == "onnxruntime" and report.spec.batch == 2 and report.spec.threads == 1
    assert report.pruned.params < report.dense.params
    for result in (report.pruned, report.dense):
        assert (engine_dir / result.onnx).is_file() and (engine_dir / result.artefact).is_file()
        assert result.timing.iterations >= 5 and result.timing.total_s >= 0.2
        assert 0 < result.timing.median_ms <= result.timing.p90_ms
        assert result.timing.images_per_s == pytest.approx(2 * result.timing.iterations / result.timing.total_s)
    assert report.statistic == "min"  # the run's target is cpu: latency is the fastest run, as in its LUT
    assert report.speedup == pytest.approx(report.dense.timing.min_ms / report.pruned.timing.min_ms)
    assert report.pruned.latency_ms == report.pruned.timing.min_ms
    assert report.pruned.nonzero_params == report.pruned.params  # structured: every remaining weight is used
    assert json.loads((engine_dir / ENGINE_REPORT).read_text())["run_dir"] == str(run.resolve())
    markdown = (engine_dir / "engine.md").read_text()
    assert "| pruned |" in markdown and "latency ms/batch (fastest run)" in markdown
    assert "Unstructured sparsity" not in markdown
    # the reference row is the full-width model with the run's masked weights, and says so
    assert f"| {DENSE_ROW} |" in markdown and "| dense |" not in markdown and DENSE_NOTE in markdown


def test_validate_passes_with_fp32_outputs_within_1e4(engine_dir):
    report = validate_engine(engine_dir, subset=250, timing=FAST)
    assert not report.failed, report.checks
    assert report.errors["engine_vs_pruned"].max_abs <= 1e-4
    assert report.errors["pruned_vs_masked"].max_abs <= 1e-4
    assert report.images == 50 and report.scores["engine"] == report.scores["pruned"]
    status = {c.name: c.status for c in report.checks}
    assert status == {"engine-vs-pytorch": "pass", "predictions-agree": "info", "pruned-vs-masked": "pass",
                      "accuracy": "pass", "latency-budget": "pass", "latency-vs-lut": "info"}  # budget from run.json (500 ms)
    assert report.errors["engine_vs_pruned"].agreement == 100.0 and report.agreement_label == "top-1 agreement"
    assert json.loads((engine_dir / "validation.json").read_text())["passed"] is True


def test_validate_fails_naming_the_missed_budget(engine_dir, tmp_path):
    result = run_cli("validate", "--engine", str(engine_dir), "--latency-ms", "0.000001", "--subset", "50",
                     "--out", str(tmp_path), *FAST_CLI)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: validation failed: latency-budget (measured")
    record = json.loads((tmp_path / "validation.json").read_text())
    assert record["passed"] is False and record["failed"] == ["latency-budget"]
    assert "FAILED: latency-budget" in (tmp_path / "validation.md").read_text()


def test_validate_never_replaces_another_engines_validation(engine_dir, tmp_path):
    out = tmp_path / "out"
    validate_engine(engine_dir, subset=20, timing=FAST, out=out)
    validate_engine(engine_dir, subset=20, timing=FAST, out=out)  # the same engine again: its own file, replaced
    other = copy_engine(engine_dir, tmp_path / "other")
    with pytest.raises(UserError, match="holds the validation of another engine"):
        validate_engine(other, subset=20, timing=FAST, out=out)


def test_budget_tolerance_scales_the_limit(engine_dir, tmp_path):
    budget = 0.001
    report = validate_engine(engine_dir, subset=20, latency_ms=budget, budget_tolerance=0.5, timing=FAST, out=tmp_path)
    check = next(c for c in report.checks if c.name == "latency-budget")
    assert check.limit == pytest.approx(budget * 1.5)
    assert check.status == ("pass" if check.measured <= budget * 1.5 else "fail")
    with pytest.raises(UserError, match="budget_tolerance -0.1 is not a fraction in \\[0, 1\\]"):
        validate_engine(engine_dir, subset=20, budget_tolerance=-0.1, timing=FAST, out=tmp_path)


def test_validate_catches_a_pruned_model_that_differs_from_training(run, engine_dir, tmp_path):
    bad_run = make_structured_run(tmp_path / "bad", keep=0.5, channels_seed=1)  # channels.json keeps other units
    bad_engine = build_engine(bad_run, tmp_path / "engine", threads=1, timing=FAST)
    assert bad_engine.spec.batch == 1
    report = validate_engine(tmp_path / "engine", subset=50, timing=FAST)
    assert [c.name for c in report.failed] == ["pruned-vs-masked"]  # engine still matches its PyTorch model
    # this run records no LUT prediction: a LUT tolerance would be a limit no check applies
    with pytest.raises(UserError, match="`lut_tolerance` is given, but the run records no LUT-predicted latency"):
        validate_engine(tmp_path / "engine", subset=50, lut_tolerance=0.0, timing=FAST)


def test_fp16_engine_within_documented_tolerance(run, tmp_path):
    build_engine(run, tmp_path, precision="fp16", threads=1, timing=FAST)
    report = validate_engine(tmp_path, subset=100, timing=FAST, latency_ms=1e4)
    assert not report.failed, report.checks
    err = report.errors["engine_vs_pruned"]
    assert 0 < err.max_rel <= 1e-2


def test_report_plots_across_runs(run, engine_dir, metrics, tmp_path):
    validation = validate_engine(engine_dir, subset=50, timing=FAST)
    assert set(validation.scores) == {"engine", "pruned", "masked", "dense"}  # the run started from dense.pt
    result = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "report"
    for name in ("report.md", "report.html", "report.json", "pareto.png", "exploration.png", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "report.json").read_text())
    (engine,) = data["engines"]
    assert engine["score_source"] == "validation.json" and engine["predicted_ms"] == 0.5
    assert engine["dense_score"] == validation.scores["dense"] and engine["dense_ms"] > 0  # the dense point of pareto.png
    updates = [r for r in metrics if r["type"] == "update"]
    assert data["runs"][0]["metrics"] == len(updates) >= 8 and data["runs"][0]["summary_score"] == pytest.approx(10.0)
    assert "exploration.png" in data["figures"]  # the IoU and survival panels read the trainer's own keys
    for event, key, _ in CURVES:
        xs, ys = curve(updates, event, key)
        assert len(xs) >= 2 and all(0 <= y <= 1 for y in ys), (event, key)
    assert '<img src="pareto.png"' in (out / "report.html").read_text()
    assert f"Pareto-optimal engines: {run.name}/onnxruntime-b2-fp32" in (out / "report.md").read_text()


def test_report_counts_in_the_right_number_and_marks_an_unfinished_run(tmp_path):
    def run_data(finished):
        return RunData("r", "dir", RunInfo("resnet20", 10, 32, "cifar10", finished=finished), None)

    assert counts_line([run_data(True)], []) == "1 run, 0 engines."
    assert counts_line([run_data(True), run_data(True)], [engine_point("e", 1.0, 0.5)]) == "2 runs, 1 engine."
    assert counts_line([run_data(False), run_data(True)], []) == (
        "2 runs (1 unfinished: to finish, run the same `iee-deploy train` again with `resume`), 0 engines.")
    (tmp_path / "stopped").mkdir()  # a run stopped part-way: run.json as training writes it at the start
    (tmp_path / "stopped" / "run.json").write_text(json.dumps({"model": "resnet20", "num_classes": 10, "resolution": 32,
                                                             "dataset": "cifar10", "finished": False}))
    text = write_report([tmp_path / "stopped"], tmp_path / "report").read_text()
    assert "1 run (1 unfinished: " in text and "| stopped (unfinished) |" in text


def engine_point(label, ms, top1, run="run", dense_ms=4.0, dense_top1=None):
    return EnginePoint(label, run, "dir", "onnxruntime", 1, "fp32", ms, dense_ms, dense_ms / ms, None, top1, None,
                       "min", dense_top1)


def test_pareto_front_of_engines():
    points = [engine_point("a", 1.0, 70.0), engine_point("b", 2.0, 75.0), engine_point("c", 1.5, 69.0),
              engine_point("d", 3.0, 74.0), engine_point("e", 0.5, 60.0), engine_point("f", 2.0, 71.0),
              engine_point("g", 0.1, None)]
    assert [p.label for p in front_of(points)] == ["e", "a", "b"]
    assert front_of([engine_point("g", 0.1, None)]) == []


def test_pareto_plot_has_the_dense_models_and_stays_below_100(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    points = [engine_point("r1/a", 1.0, 97.0, run="r1", dense_ms=3.0, dense_top1=99.5),
              engine_point("r1/b", 2.0, 99.0, run="r1", dense_ms=3.0, dense_top1=99.5),  # the same dense model
              engine_point("r2/a", 0.5, 90.0, run="r2", dense_ms=2.5)]  # dense accuracy unknown
    series = pareto_series(points)
    assert series is not None
    assert series.dense == [("dense (r1)", 3.0, 99.5)] and series.dense_latency_only == [("dense (r2), accuracy unknown", 2.5)]
    assert series.fronts == [("top-1", [(0.5, 90.0), (1.0, 97.0), (2.0, 99.0)])]
    assert series.y_range == (85.0, 100.0)  # 99.5 + 2 would run past 100 %
    assert plot_pareto(points, tmp_path / "pareto.png") and (tmp_path / "pareto.png").stat().st_size > 0
    r3 = engine_point("r3/a", 0.8, 95.0, run="r3", dense_ms=2.8)  # a second dense model of unknown accuracy
    legend = [t.get_text() for t in pareto_figure(pareto_series([*points, r3]), "fastest run").axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["Pareto front", "dense (r2), accuracy unknown: measured latency",
                              "dense (r3), accuracy unknown: measured latency",
                              "dense model (measured latency and accuracy)", "pruned engines"]
    lone = pareto_figure(pareto_series([engine_point("x", 1.0, 90.0)]), "fastest run")  # one engine is its own front
    assert "Pareto front (one engine)" in [t.get_text() for t in lone.axes[0].get_legend().get_texts()]
    assert pareto_series([engine_point("x", 1.0, None)]) is None and not plot_pareto([], tmp_path / "none.png")


def test_engines_of_different_scores_get_a_front_each(tmp_path):
    """A classifier's top-1 and a detector's mAP@0.5 drew one front, on which the classifier 'dominated' the detector:
    each score (and dataset) gets its own front, drawn and named apart, and the report still renders."""
    def scored(label, ms, score, score_label, dataset):
        return replace(engine_point(label, ms, score), score_label=score_label, dataset=dataset)

    points = [scored("cls/a", 1.0, 90.0, "top-1", "digits"), scored("cls/b", 2.0, 95.0, "top-1", "digits"),
              scored("det/a", 3.0, 40.0, "mAP@0.5", "digit-scenes"), scored("cls10/a", 0.5, 60.0, "top-1", "cifar10")]
    fronts = {name: [p.label for p in front] for name, front in fronts_of(points).items()}
    assert fronts == {"mAP@0.5 on digit-scenes": ["det/a"], "top-1 on cifar10": ["cls10/a"],
                      "top-1 on digits": ["cls/a", "cls/b"]}  # one front over all would hold cls10/a, cls/a, cls/b only
    assert front_line(fronts_of(points)) == (
        "Pareto-optimal engines, one front per score (engines scored on different tasks or data are not compared): "
        "mAP@0.5 on digit-scenes: det/a; top-1 on cifar10: cls10/a; top-1 on digits: cls/a, cls/b")
    assert front_line(fronts_of(points[:2])) == "Pareto-optimal engines: cls/a, cls/b"  # one score: as before
    series = pareto_series(points)
    assert series is not None and series.score_label == "mAP@0.5 or top-1"
    legend = [t.get_text() for t in pareto_figure(series, "fastest run").axes[0].get_legend().get_texts()]
    assert [t for t in legend if t.startswith("Pareto")] == [
        "Pareto front: mAP@0.5 on digit-scenes (one engine)", "Pareto front: top-1 on cifar10 (one engine)",
        "Pareto front: top-1 on digits"]
    assert plot_pareto(points, tmp_path / "pareto.png") and (tmp_path / "pareto.png").stat().st_size > 0


def test_user_errors(run, tmp_path, cpu_host):
    assert_user_error(run_cli("build-engine", "--run", str(run), "--backend", "tensorrt", "--out", str(tmp_path), host="cpu"),
                      "TensorRT", "pip install .[tensorrt] on a machine with an NVIDIA GPU")
    for name in ("torch", "torch-cuda"):  # torch-cuda: the earlier name of the torch backend
        assert_user_error(run_cli_here("build-engine", "--run", str(run), "--backend", name, "--out", str(tmp_path)),
                          "wrong device", "found no CUDA device")
    assert_user_error(run_cli_here("build-engine", "--run", str(run), "--out", "/sys/e", *FAST_CLI),
                      "--out '/sys/e' is not writable")  # before any export or timing
    with pytest.raises(UserError, match="not an engine folder"):
        validate_engine(tmp_path)
    with pytest.raises(UserError, match="neither a run folder"):
        write_report([tmp_path], tmp_path / "r")
    with pytest.raises(UserError, match="batch size \\(batch\\) must be at least 1"):
        build_engine(run, tmp_path, batch=0)


def test_budget_check_uses_the_targets_statistic():
    base = dict(model="resnet20", num_classes=10, resolution=32, dataset="digits")
    assert run_statistic(RunInfo(**base, target="cpu"), "cpu") == "min"  # the shared-CPU target records the fastest run
    assert run_statistic(RunInfo(**base, target="h100"), "cuda") == "median"
    assert run_statistic(RunInfo(**base), "cpu") == "min"  # no target: a CPU engine gets the cpu target's
    assert run_statistic(RunInfo(**base), "cuda") == "median"


def test_validate_refuses_impossible_limits_and_another_dataset_before_work(engine_dir, tmp_path):
    other = copy_engine(engine_dir, tmp_path / "other")  # another engine: its validation.json is its own
    refusals = ((("--out", str(other)), f"--out '{other}' holds another engine"),
                (("--budget-tolerance", "5"), "'--budget-tolerance': 5.0 is not in the range 0<=x<=1"),
                (("--latency-ms", "-1"), "'--latency-ms': -1.0 is not in the range x>0"),
                (("--max-accuracy-drop", "-1"), "'--max-accuracy-drop': -1.0 is not in the range 0<=x<=100"),
                (("--min-seconds", "nan"), "--min-seconds nan is not a non-negative finite number"),
                (("--warmup-s", "inf"), "--warmup-s inf is not a non-negative finite number"),
                (("--dataset", "fashion-mnist"), "is not the run's dataset 'digits'"),
                (("--out", "/sys/v"), "--out '/sys/v' is not writable"))
    for i, (args, words) in enumerate(refusals):
        validate = run_cli if i == 0 else run_cli_here  # as a user runs it once; the rest in this process, same code
        assert_user_error(validate("validate", "--engine", str(engine_dir), *FAST_CLI, *args), words)  # args last win
    help_text = run_cli_here("validate", "--help").stdout
    assert "fastest run" in help_text and "median latency must" not in help_text


def test_a_model_with_more_outputs_than_the_datasets_classes_is_validated(tmp_path):
    """`train --num-classes 12` on the 10 digits is a run train accepts: validate scores it, as train did (it refused
    the dataset as 'not the one the run was trained on'); fewer outputs than classes stay refused."""
    run = tmp_path / "run"
    run.mkdir()
    save_torch(run / FINAL_MODEL, build_model("resnet20", 12, 8).state_dict())
    write_run_info(run, RunInfo(model="resnet20", num_classes=12, resolution=8, dataset="digits", finished=True))
    build_engine(run, tmp_path / "engine", threads=1, timing=FAST)
    report = validate_engine(tmp_path / "engine", timing=FAST)
    assert "accuracy" in {check.name for check in report.checks}
    save_torch(run / FINAL_MODEL, build_model("resnet20", 8, 8).state_dict())  # a run of 8 outputs
    write_run_info(run, RunInfo(model="resnet20", num_classes=8, resolution=8, dataset="digits", finished=True))
    with pytest.raises(UserError, match="dataset 'digits' has 10 classes but the run's model has 8 outputs"):
        validate_engine(tmp_path / "engine", timing=FAST)


def test_empty_or_corrupt_engine_files_are_one_line_errors(run, engine_dir, tmp_path):
    broken = copy_engine(engine_dir, tmp_path / "engine")
    (broken / "pruned.onnx").write_bytes(b"")
    assert_user_error(run_cli("validate", "--engine", str(broken), *FAST_CLI), "pruned.onnx' is empty",
                      "run build-engine again")
    (broken / "pruned.onnx").write_bytes((engine_dir / "pruned.onnx").read_bytes())
    (broken / "pruned.ort.onnx").write_bytes(b"not a model")
    assert_user_error(run_cli_here("validate", "--engine", str(broken), *FAST_CLI), "pruned.ort.onnx' is not the one "
                      "build-engine wrote")
    report = json.loads((broken / "engine.json").read_text())  # a folder from before digests were recorded
    (broken / "engine.json").write_text(json.dumps({**report, "pruned": {**report["pruned"], "sha256": {}}}))
    assert_user_error(run_cli_here("validate", "--engine", str(broken), *FAST_CLI), "ONNX Runtime cannot load")
    for field, value in (("batch", -4), ("resolution", 0)):  # hand-edited: never a session built for it
        (broken / "engine.json").write_text(json.dumps({**report, "spec": {**report["spec"], field: value}}))
        with pytest.raises(UserError, match=f"engine.json' is corrupt \\(`{field}` {value} is not a whole number"):
            read_engine_report(broken)


def test_validate_uses_the_runs_subset(run, engine_dir, tmp_path):
    config = run / "config.json"
    config.write_text(json.dumps({"subset": 100}))
    try:
        report = validate_engine(engine_dir, timing=FAST, out=tmp_path)
    finally:
        config.unlink()
    assert report.images == 20  # N/5 validation images, as in training
    config.write_text(json.dumps({"subset": 100, "val_subset": 30}))
    try:
        report = validate_engine(engine_dir, timing=FAST, out=tmp_path)
    finally:
        config.unlink()
    assert report.images == 30  # the run's own validation sample


def test_unstructured_engine_reports_nonzero_parameters_and_what_can_use_them(run, tmp_path):
    """An unstructured run keeps its shapes: non-zero parameters, and the note that ONNX Runtime cannot use zeros."""
    unstructured = tmp_path / "run"
    unstructured.mkdir()
    info = json.loads((run / "run.json").read_text())
    (unstructured / "run.json").write_text(json.dumps({**info, "kind": "unstructured", "target": None, "budget_ms": None,
                                                      "predicted_latency_ms": None}))
    masked = build_model("resnet20", 10, 32)
    masked.load_state_dict(torch.load(run / FINAL_MODEL, weights_only=True))
    save_torch(unstructured / FINAL_MODEL, masked.state_dict())  # no channels.json: deployed at full width
    report = build_engine(unstructured, tmp_path / "engine", timing=FAST)
    assert report.pruned.params == report.dense.params and report.pruned.nonzero_params < report.pruned.params
    assert report.spec.threads == 1 and report.statistic == "min"  # the cpu target's threads and statistic, for both
    markdown = (tmp_path / "engine" / "engine.md").read_text()
    assert "non-zero parameters" in markdown and "Unstructured sparsity" in markdown and "TensorRT with 2:4" in markdown
    # no budget given or recorded: a stage for it says nothing, and is refused before any work
    with pytest.raises(UserError, match="`budget_stage` end-to-end says what a latency budget holds, but none is given"):
        validate_engine(tmp_path / "engine", budget_stage="end-to-end")


def interrupt(command: str, *args: str, at: str) -> tuple[int, list[str], str]:
    """Run `iee-deploy COMMAND ARGS`, send it SIGINT (Ctrl-C) once a stderr line starts with `at`.

    Returns the exit status, the stderr lines seen before the signal, and the rest of stderr.
    """
    env = dict(os.environ, PYTHONPATH=f"{HOSTS}{os.pathsep}{ROOT}", PYTHONUNBUFFERED="1")
    # A suite started in the background (`make test &`) inherits SIGINT ignored, and Python then installs no
    # Ctrl-C handler: give the command the default disposition, as an interactive shell would.
    process = subprocess.Popen([sys.executable, "-m", "iee_deploy", command, *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith(at):
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    return process.wait(timeout=60), seen, rest


def assert_interrupted_without_resume(code: int, seen: list[str], rest: str) -> None:
    """Ctrl-C on a command without --resume: exit 130, one line saying how to start again, no traceback."""
    assert code == 130, seen + [rest]
    lines = [line for line in rest.splitlines() if line.strip()]  # a progress line may still come before the message
    assert lines[-1].startswith("interrupted: run the same command again"), rest
    assert sum("interrupted" in line for line in lines) == 1, rest
    assert "--resume" not in rest and "Traceback" not in rest
    assert "\r" not in "".join(seen)  # log-friendly progress: whole lines, no carriage returns


@pytest.mark.slow
def test_ctrl_c_on_validate_does_not_suggest_resume(engine_dir, tmp_path):
    assert_interrupted_without_resume(*interrupt("validate", "--engine", str(engine_dir), "--out", str(tmp_path),
                                                 "--min-seconds", "60", at="validate: latency"))
    assert not (tmp_path / "validation.json").exists()


@pytest.mark.slow
def test_ctrl_c_on_build_engine_does_not_suggest_resume(run, tmp_path):
    out = tmp_path / "engine"
    assert_interrupted_without_resume(*interrupt("build-engine", "--run", str(run), "--out", str(out),
                                                 "--min-seconds", "60", at="timing dense and pruned"))
    assert not (out / ENGINE_REPORT).exists()  # no report of a timing that did not finish


def test_build_engine_never_replaces_another_runs_engine_silently(run, engine_dir, tmp_path):
    """A folder holding another run's engine is refused before any work unless --force; a rebuild removes
    the old engine's validation files, which described another engine."""
    other = copy_engine(engine_dir, tmp_path / "engine")
    report = json.loads((other / "engine.json").read_text())
    (other / "engine.json").write_text(json.dumps({**report, "run_dir": "/elsewhere/another-run"}))
    (other / "validation.json").write_text("{}")
    argv = ("build-engine", "--run", str(run), "--threads", "1", "--out", str(other), *FAST_CLI)
    assert_user_error(run_cli(*argv), f"'{other}' holds the engine of another run (/elsewhere/another-run)", "--force")
    assert (other / "validation.json").exists()
    result = run_cli(*argv, "--force")
    assert result.returncode == 0, result.stderr
    assert not (other / "validation.json").exists()
    assert json.loads((other / "engine.json").read_text())["run_dir"] == str(run.resolve())


def test_validate_and_report_name_an_engines_run_folder_that_is_gone(engine_dir, tmp_path):
    """An engine whose run folder was moved: both commands say so (validate asked for a run folder it has no option for)."""
    moved = copy_engine(engine_dir, tmp_path / "engine")
    report = json.loads((moved / "engine.json").read_text())
    (moved / "engine.json").write_text(json.dumps({**report, "run_dir": str(tmp_path / "moved-run")}))
    gone = f"was built from '{tmp_path / 'moved-run'}', which is gone"
    assert_user_error(run_cli("validate", "--engine", str(moved), *FAST_CLI), gone, "move that run folder back")
    assert_user_error(run_cli("report", str(moved), "--out", str(tmp_path / "report")), gone)


def test_report_calls_a_damaged_validation_json_corrupt(engine_dir, tmp_path):
    """A truncated validation.json was skipped without a word, and the engine scored by training's summary.json."""
    damaged = copy_engine(engine_dir, tmp_path / "engine")
    (damaged / "validation.json").write_text('{"scores": {"engine": 9')
    assert_user_error(run_cli("report", str(damaged), "--out", str(tmp_path / "report")), "validation.json' is corrupt",
                      "run `iee-deploy validate` on the engine again")


def test_validate_refuses_an_engine_file_that_is_not_the_runs(run, engine_dir, tmp_path):
    """An ONNX file swapped for another model's (right format, wrong network) is caught by its recorded digest."""
    swapped = copy_engine(engine_dir, tmp_path / "engine")
    report = json.loads((swapped / "engine.json").read_text())
    assert set(report["pruned"]["sha256"]) >= {report["pruned"]["onnx"]}
    (swapped / report["pruned"]["onnx"]).write_bytes((engine_dir / report["dense"]["onnx"]).read_bytes())
    assert_user_error(run_cli("validate", "--engine", str(swapped), *FAST_CLI), "is not the one build-engine wrote",
                      "run build-engine again")


def test_a_second_writer_of_an_output_folder_is_refused_before_any_work(run, engine_dir, tmp_path):
    """Two build-engine into one --out at once both said 'wrote' and left one run's engine.json beside the other's
    ONNX files: the folder's lock (a running build's) refuses the second in one line, before any export or timing;
    validate and report writing into a locked folder are refused the same way."""
    from iee_deploy.deploy.build import output_lock

    out = tmp_path / "race"
    with output_lock(out):  # a build writing there now
        result = run_cli("build-engine", "--run", str(run), "--threads", "1", "--out", str(out), *FAST_CLI)
        assert_user_error(result, f"the folder '{out}' is being written by process {os.getpid()}",
                          "another command is writing there: wait for it to finish, or choose another --out")
        assert sorted(f.name for f in out.iterdir()) == [".lock"]  # nothing exported
        with pytest.raises(UserError, match="another command is writing there"):
            validate_engine(engine_dir, timing=FAST, out=out)
        with pytest.raises(UserError, match="another command is writing there"):
            write_report([engine_dir], out)
    assert not out.exists()  # the lock's folder goes with it; the refused commands made nothing


def test_latency_vs_lut_says_when_the_lut_was_profiled_on_another_cpu():
    zen3 = {"cpu": "AMD EPYC", "cpu_identity": "family 25, model 1, avx2"}
    zen4 = {"cpu": "AMD EPYC", "cpu_identity": "family 25, model 17, avx512"}
    assert lut_elsewhere(zen3, zen4) == (
        "; the LUT was profiled on another CPU (family 25, model 1, avx2; this machine: family 25, model 17, avx512), "
        "so its prediction and the run's budget describe that CPU: profile a table on this machine to aim at it")
    assert lut_elsewhere(zen4, dict(zen4)) == ""
    assert lut_elsewhere({"cpu": "AMD EPYC"}, zen4) == ""  # a LUT from before identities were kept: no guess
