"""`validate_engine`: the edge-deployment checks of a built engine, in one report.

Checks (each passes, fails, or is informational):

| check | compares | passes when |
|---|---|---|
| `engine-vs-pytorch` | engine outputs vs the PyTorch pruned model's, on the validation images | max abs error <= the engine precision's tolerance (informational for quantized engines) |
| `predictions-agree` | the engine's predictions after post-processing vs PyTorch's (detectors: each detection matched by label, IoU and score) | the task's limit (float detector engines: at most 1% missed; else informational) |
| `pruned-vs-masked` | PyTorch pruned model vs the masked full-width training model | max abs error <= the FP32 tolerance |
| `accuracy` | the task's score (top-1, mAP@0.5) of the engine vs the fp32 PyTorch pruned model's, same images | drop <= `max_accuracy_drop` percentage points (default 1) |
| `latency-budget` | measured latency (ms per batch, in the target's statistic: fastest run on the cpu target, median on GPUs) vs `latency_ms`, else run.json `budget_ms` | measured <= budget x (1 + `budget_tolerance`) (informational without a budget) |
| `latency-vs-lut` | measured vs the LUT prediction in run.json (`predicted_latency_ms`); names the LUT's CPU when it was profiled on another (`cpu_identity`) | informational; with `lut_tolerance`: abs(measured / predicted - 1) <= it |

The score is also recorded (not checked) for the dense model training started from, when the run was
started from a checkpoint (`dense_start`): the report plots it as the dense reference.

What runs is the run's task's `Deployment` (`iee_deploy.tasks`): the engine and the PyTorch models compute the
same network on the same pre-processed batch; the outputs are compared elementwise, then post-processed alike
(a detector's decoding and NMS) and scored. A detector's latency is checked for the engine alone, the part the
latency table predicts, unless `budget_stage` is "end-to-end": the engine plus the post-processing stage that
build-engine timed beside it.

Tolerances (`TOLERANCES`): the error limit is `atol + rtol * max|reference logit|`.
FP32: atol 1e-4, rtol 0 (the same function up to float summation order).
FP16: atol 0, rtol 1e-2, i.e. errors up to 1% of the largest logit: FP16 keeps 11 significant bits
(relative rounding 4.9e-4 per operation), and the errors of a few dozen layers accumulate to a few 1e-3.
Quantized precisions (int8, fp8) have no elementwise tolerance: 8-bit activations move logits by
far more than any float rounding, by design, so such an engine is judged by what quantization
promises, its top-1 within `max_accuracy_drop` points of the fp32 model's; its logit error is
reported, not checked.

A run's budget and LUT prediction are in its LUT's precision: an engine of another precision is
refused (one line, before any work) unless the budget is given (`latency_ms`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from iee_deploy.deploy.build import (
    ENGINE_REPORT,
    VALIDATION_MARKDOWN,
    VALIDATION_REPORT,
    check_engine_run,
    load_engine,
    output_lock,
    read_engine_report,
    timing_input,
)
from iee_deploy.deploy.render import fmt, markdown_table
from iee_deploy.deploy.run_models import load_run_models, run_data, run_task
from iee_deploy.errors import UserError
from iee_deploy.io import check_writable, write_json, write_text
from iee_deploy.models import build_model
from iee_deploy.runs import RunFolder, RunInfo, read_run_info
from iee_deploy.tasks import Task
from iee_deploy.tasks.base import Deployment
from profiler.lut import LutMeta, read_meta
from runtime.machine import machine_info, same_cpu
from runtime.progress import progress
from runtime.timing import Timing, TimingConfig, describe, measure, rounds_of

IMAGES_PER_STEP = 64  # validation images per step (rounded up to whole engine batches)


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed max-abs error: `atol + rtol * max|reference|`."""

    atol: float
    rtol: float

    def limit(self, scale: float) -> float:
        return self.atol + self.rtol * scale


TOLERANCES = {"fp32": Tolerance(atol=1e-4, rtol=0.0), "fp16": Tolerance(atol=0.0, rtol=1e-2)}
"""Elementwise tolerances of float engines; a precision without one (int8, fp8) is checked by top-1 alone."""


@dataclass(frozen=True)
class OutputError:
    """How far one set of outputs is from a reference, and how many of the reference's predictions it reproduces."""

    max_abs: float  # max |actual - reference|
    max_rel: float  # max_abs / scale
    scale: float  # max |reference|
    agreement: float  # % of the reference's predictions reproduced (the task's `agreement`: top-1, detections)
    compared: int = 0  # the reference's predictions compared (images, or detections clear of a cutoff)


class ErrorAccumulator:
    """Running `OutputError` over batches (the validation set need not fit in memory)."""

    def __init__(self) -> None:
        self.max_abs = self.scale = 0.0
        self.same = self.count = 0

    def update(self, actual: np.ndarray, reference: np.ndarray, agreement: tuple[int, int] | None = None) -> None:
        """Adds a batch of outputs; `agreement` (agreeing, compared) of its predictions, by default the arg-max's."""
        error = float(np.abs(actual - reference).max(initial=0.0))  # NaN when an output is NaN
        # max() drops a NaN (it compares false): an engine computing NaN would pass with "0 error"; NaN stays NaN
        self.max_abs = math.nan if math.isnan(error) or math.isnan(self.max_abs) else max(self.max_abs, error)
        self.scale = max(self.scale, float(np.abs(reference).max(initial=0.0)))
        same, count = agreement or (int((actual.argmax(1) == reference.argmax(1)).sum()), len(reference))
        self.same += same
        self.count += count

    def result(self) -> OutputError:
        return OutputError(self.max_abs, self.max_abs / self.scale if self.scale > 0 else 0.0, self.scale,
                           100.0 * self.same / self.count if self.count else 100.0, self.count)


def compare_outputs(actual: np.ndarray, reference: np.ndarray) -> OutputError:
    """`OutputError` of logits (N, classes) against reference logits of the same shape (agreement: the arg-max's)."""
    acc = ErrorAccumulator()
    acc.update(actual, reference)
    return acc.result()


@dataclass(frozen=True)
class Check:
    """One named check: status "pass", "fail" or "info"."""

    name: str
    status: str
    measured: float | None
    limit: float | None
    detail: str


def threshold_check(name: str, measured: float, limit: float | None, detail: str) -> Check:
    """Pass when `measured <= limit`; informational when there is no limit."""
    status = "info" if limit is None else ("pass" if measured <= limit else "fail")
    return Check(name, status, measured, limit, detail)


@dataclass
class ValidationReport:
    engine_dir: str
    run_dir: str
    backend: str
    precision: str
    batch: int
    dataset: str
    images: int
    errors: dict[str, OutputError]  # engine_vs_pruned, pruned_vs_masked, engine_vs_masked
    scores: dict[str, float]  # the task's score in %: engine, pruned and masked (PyTorch), dense (`dense_start`) if known
    latency: Timing
    statistic: str  # the target's latency statistic ("min": fastest run, or "median") of latency_ms and the budget
    latency_ms: float
    budget_ms: float | None
    budget_source: str | None
    predicted_latency_ms: float | None
    checks: list[Check]
    environment: dict[str, str] = field(default_factory=dict)
    task: str = "classification"
    score_label: str = "top-1"  # what `scores` are: the task's score (top-1, mAP@0.5)
    agreement_label: str = "top-1 agreement"  # what the errors' `agreement` counts
    budget_stage: str = "engine"  # what the latency budget applies to: the engine alone, or "end-to-end"
    postprocess_ms: float | None = None  # the post-processing stage build-engine timed (detectors), in the statistic

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def markdown(self) -> str:
        rows = [[c.name, c.status.upper(), c.measured, c.limit, c.detail] for c in self.checks]
        err_rows = [[k, e.max_abs, e.max_rel, e.scale, e.agreement, e.compared] for k, e in self.errors.items()]
        verdict = "all checks pass" if not self.failed else "FAILED: " + ", ".join(c.name for c in self.failed)
        return "\n".join([
            f"# Validation of `{self.engine_dir}` ({self.backend}, {self.precision}, batch {self.batch})", "",
            f"**{verdict}**", "",
            markdown_table(["check", "status", "measured", "limit", "detail"], rows), "",
            f"## Outputs on {self.images} {self.dataset} validation images", "",
            markdown_table(["comparison", "max abs error", "max rel error", "max abs output", f"{self.agreement_label} %",
                            "compared"], err_rows), "",
            f"{self.score_label} %: " + ", ".join(f"{k} {fmt(v, 2)}" for k, v in self.scores.items()), "",
            f"Latency ({describe(self.statistic)}, the target's statistic): {fmt(self.latency_ms)} ms/batch; "
            f"median {fmt(self.latency.median_ms)}, p90 {fmt(self.latency.p90_ms)} ms/batch, "
            f"{fmt(self.latency.images_per_s, 1)} images/s ({self.latency.iterations} iterations)"
            + (f"; with post-processing {fmt(self.latency_ms + self.postprocess_ms)} ms/batch."
               if self.postprocess_ms is not None else "."), "",
            "Environment: " + ", ".join(f"{k} {v}" for k, v in self.environment.items()), "",
        ])


PAIRS = {"engine_vs_pruned": ("engine", "pruned"), "pruned_vs_masked": ("pruned", "masked"),
         "engine_vs_masked": ("engine", "masked")}


def _evaluate(engine_run: Callable[[np.ndarray], np.ndarray], task: Task, deployments: dict[str, Deployment],
              loader: DataLoader, precision: str) -> tuple[dict[str, OutputError], dict[str, float], int]:
    """Run the engine and the PyTorch models (pruned, masked, optionally dense) over `loader` on the same
    pre-processed batches; output errors and agreement of each pair, and each model's score."""
    accumulators = {name: ErrorAccumulator() for name in PAIRS}
    scores = {"engine": task.deploy_score(), **{name: task.deploy_score() for name in deployments}}
    engine = deployments["pruned"]  # the engine computes the pruned network: its post-processing is the engine's
    images = 0
    with torch.no_grad():
        for batch in progress(loader, total=len(loader), desc="validate: outputs and scores", unit="step"):
            x, context = engine.inputs(batch)
            outputs = {"engine": torch.from_numpy(engine_run(x.numpy()))}
            outputs.update({name: deployment.network(x) for name, deployment in deployments.items()})
            predictions = {"engine": engine.predictions(outputs["engine"], context)}
            predictions.update({name: d.predictions(outputs[name], context) for name, d in deployments.items()})
            for name, (a, b) in PAIRS.items():
                agreement = task.agreement(predictions[a], predictions[b], precision if a == "engine" else "fp32")
                accumulators[name].update(outputs[a].numpy(), outputs[b].numpy(), agreement)
            for name, score in scores.items():
                score.update(predictions[name], context)
            images += len(x)
    if images == 0:
        raise UserError("the validation set is empty", "use a larger subset or another dataset")
    return {name: acc.result() for name, acc in accumulators.items()}, {n: s.compute() for n, s in scores.items()}, images


BUDGET_STAGES = ("engine", "end-to-end")


def check_limits(latency_ms: float | None, lut_tolerance: float | None, max_accuracy_drop: float,
                 budget_tolerance: float, budget_stage: str = "engine") -> None:
    """Refuse impossible limits before any work: a UserError naming the field."""
    if budget_stage not in BUDGET_STAGES:
        raise UserError(f"budget_stage '{budget_stage}' is not a stage", f"choose one of: {', '.join(BUDGET_STAGES)}",
                        fields=("budget_stage",))
    if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms > 0):
        raise UserError(f"latency budget (latency_ms) {latency_ms:g} ms is not a positive latency", "give e.g. 2.5")
    for field_name, value in (("budget_tolerance", budget_tolerance), ("lut_tolerance", lut_tolerance)):
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"{field_name} {value:g} is not a fraction in [0, 1]", "give e.g. 0.1 for 10%")
    if not (math.isfinite(max_accuracy_drop) and max_accuracy_drop >= 0):
        raise UserError(f"max_accuracy_drop {max_accuracy_drop:g} is not a drop of 0 or more percentage points",
                        "give e.g. 1.0")


def lut_elsewhere(lut_machine: dict[str, str], here: dict[str, str]) -> str:
    """What the latency-vs-LUT check adds when the run's LUT was profiled on another CPU than this one (`same_cpu`):
    its prediction, and the budget aimed with it, describe that CPU. "" on the same CPU, or where it cannot tell."""
    if same_cpu(lut_machine, here) is not False:
        return ""
    return (f"; the LUT was profiled on another CPU ({lut_machine['cpu_identity']}; this machine: {here['cpu_identity']}), "
            "so its prediction and the run's budget describe that CPU: profile a table on this machine to aim at it")


def lut_meta(info: RunInfo) -> LutMeta | None:
    """The metadata of the run's LUT (None: the run names no LUT, or it is not there)."""
    return read_meta(info.lut) if info.lut and Path(info.lut).is_file() else None


def lut_precision(info: RunInfo) -> str | None:
    """The precision of the run's LUT, which its budget and predicted latency are in (None: no readable LUT)."""
    return meta.precision if (meta := lut_meta(info)) else None


def check_budget_precision(info: RunInfo, precision: str, latency_ms: float | None) -> str | None:
    """The precision of the run's budget; a UserError when an engine of another precision would be held to it.

    An int8 LUT's budget is an int8 budget: an fp32 engine checked against it (or an int8 engine against
    an fp32 budget) compares two precisions. A given `latency_ms` is the user's own budget and passes.
    """
    have = lut_precision(info)
    if latency_ms is None and have is not None and have != precision and info.budget_ms is not None:
        raise UserError(f"the run's latency budget is an {have} budget (its LUT '{info.lut}' is {have}), "
                        f"but this engine is {precision}",
                        f"build the engine at {have} precision, or give `latency_ms` as the {precision} engine's budget",
                        fields=("latency_ms",))
    return have


def check_lut_comparable(info: RunInfo, precision: str, lut_precision: str | None, lut_tolerance: float | None) -> None:
    """Refuse a `lut_tolerance` that no check would use: the run records no LUT prediction, or one of another precision.

    Otherwise the latency-vs-LUT check is only informational and validation would pass a limit it never applied.
    """
    if lut_tolerance is None:
        return
    if not info.predicted_latency_ms:
        raise UserError("`lut_tolerance` is given, but the run records no LUT-predicted latency (run.json "
                        "`predicted_latency_ms`) to hold the engine to",
                        "leave `lut_tolerance` out, or validate a run trained with a LUT (a latency budget)",
                        fields=("lut_tolerance",))
    if lut_precision not in (None, precision):
        raise UserError(f"`lut_tolerance` is given, but the run's LUT predicts {lut_precision} latency and this engine is "
                        f"{precision}", f"build the engine at {lut_precision} precision, or leave `lut_tolerance` out",
                        fields=("lut_tolerance",))


def dense_start(run_dir: str | Path, info: RunInfo) -> torch.nn.Module | None:
    """The dense model training started from (config.json's `init_checkpoint`), or None if unknown.

    None for a run trained from scratch (no dense model was ever trained) or whose starting checkpoint
    is no longer where training read it. Its accuracy is the dense reference of the report's Pareto plot.
    """
    path = (RunFolder(run_dir).read_config() or {}).get("init_checkpoint")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return build_model(info.model, info.num_classes, info.resolution, path).eval()


def _validated_engine(path: Path) -> str | None:
    """The engine folder a validation.json at `path` validated (None: no such file, or one that names none)."""
    if not path.is_file():
        return None
    try:
        engine = json.loads(path.read_text()).get("engine_dir")
    except (ValueError, AttributeError):
        return None
    return engine if isinstance(engine, str) else None


def check_same_classes(data: tuple[str, ...] | None, run: list[str] | None, dataset: str) -> None:
    """Refuse data whose class names (in label order) differ from those the run was trained on; either unnamed
    (a built-in dataset, a run from before runs recorded them): nothing to compare."""
    if not data or not run or list(data) == run:
        return
    differ = next((i for i, (a, b) in enumerate(zip(data, run)) if a != b), min(len(data), len(run)) - 1)
    raise UserError(f"dataset '{dataset}' names its label {differ} '{data[differ]}' where the run was trained on "
                    f"'{run[differ]}': the same count of other classes would be scored as the run's",
                    "validate on the data the run was trained on, or data with its classes", fields=("data_dir",))

def validate_engine(engine_dir: str | Path, *, dataset: str | None = None, data_dir: str | Path | None = None,
                    subset: int | None = None, latency_ms: float | None = None, lut_tolerance: float | None = None,
                    max_accuracy_drop: float = 1.0, budget_tolerance: float = 0.0, timing: TimingConfig = TimingConfig(),
                    out: str | Path | None = None, budget_stage: str = "engine") -> ValidationReport:
    """Run every check on the engine in `engine_dir`; write validation.json/.md to `out` (default: engine_dir).

    Limits are checked before any work. `dataset` None (or the run's) validates on the run's data,
    with the run's `subset` unless one is given. `budget_tolerance` (a fraction in [0, 1]) lets the measured latency exceed the budget by that share: a
    latency knapsack fills the budget almost exactly, so on a noisy machine a strict check passes
    or fails by timing noise alone. `budget_stage` "end-to-end" holds the engine plus its post-processing stage
    (detectors) to the budget; "engine" (the default) the engine alone, as the latency table predicts it.
    """
    check_limits(latency_ms, lut_tolerance, max_accuracy_drop, budget_tolerance, budget_stage)
    report = read_engine_report(engine_dir)
    check_engine_run(engine_dir, report)
    run_info = read_run_info(report.run_dir)
    budget_precision = check_budget_precision(run_info, report.spec.precision, latency_ms)
    check_lut_comparable(run_info, report.spec.precision, budget_precision, lut_tolerance)
    if budget_stage == "end-to-end" and latency_ms is None and run_info.budget_ms is None:
        raise UserError("`budget_stage` end-to-end says what a latency budget holds, but none is given or recorded in "
                        "the run", "pass the budget (`latency_ms`), or leave `budget_stage` at engine",
                        fields=("budget_stage", "latency_ms"))
    folder = check_writable(out if out is not None else engine_dir, "out" if out is not None else "engine_dir", folder=True)
    if (folder / ENGINE_REPORT).is_file() and folder.resolve() != Path(engine_dir).resolve():
        # its validation.json would then be this engine's, and `report` would score that engine by it
        raise UserError(f"`out` '{out}' holds another engine: its {VALIDATION_REPORT} would be replaced by this one's",
                        "choose another `out`, or leave it out to write beside the engine", fields=("out",))
    validated = _validated_engine(folder / VALIDATION_REPORT) if out is not None else None  # beside the engine: its own
    if validated is not None and Path(validated).resolve() != Path(engine_dir).resolve():
        raise UserError(f"`out` '{out}' holds the validation of another engine ('{validated}'): this one's would replace it",
                        "choose another `out`, or leave it out to write beside the engine", fields=("out",))
    with output_lock(folder):  # before the engine is checked: validate beside a build or another validate is refused
        engine = load_engine(engine_dir, report)
        models = load_run_models(report.run_dir)
        info = models.info
        task = run_task(report.run_dir)
        if dataset is not None and dataset != info.dataset:
            raise UserError(f"the dataset '{dataset}' is not the run's dataset '{info.dataset}'",
                            f"validate on '{info.dataset}' (the default), the data the model was trained on")
        name = info.dataset
        batch = report.spec.batch
        # a given subset: its N/5 validation images; else the run's own validation images
        data = run_data(report.run_dir, info, data_dir, subset, batch * -(-IMAGES_PER_STEP // batch))
        bundle = task.datasets(data)
        if bundle.num_classes > info.num_classes:  # more outputs than classes is a run `train` accepts (`num_classes`)
            raise UserError(f"dataset '{name}' has {bundle.num_classes} classes but the run's model has {info.num_classes} "
                            "outputs", "use the dataset the run was trained on")
        check_same_classes(bundle.classes, info.classes, name)
        loader = task.val_batches(bundle.val, data, 0, 1)
        dense = dense_start(report.run_dir, info)
        references = {"pruned": models.pruned, "masked": models.masked, **({"dense": dense} if dense is not None else {})}
        deployments = {key: task.deployment(model, info.resolution) for key, model in references.items()}
        precision = report.spec.precision
        errors, scores, images = _evaluate(engine.run, task, deployments, loader, precision)
        with progress(total=rounds_of(timing), desc="validate: latency", unit="round") as bar:
            latency = measure({"pruned": engine.runner(timing_input(report.spec))}, batch, timing, bar.update)["pruned"]

        tol = TOLERANCES.get(precision)
        ref = errors["engine_vs_pruned"]
        checks = [
            threshold_check("engine-vs-pytorch", ref.max_abs, None if tol is None else tol.limit(ref.scale),
                            f"max abs error of {precision} engine outputs vs PyTorch pruned model "
                            + (f"(tolerance {tol.atol:g} + {tol.rtol:g} x max|output|)" if tol is not None else
                               f"(reported only: {precision} engines are checked by {task.score_label})")),
        ]
        checked = task.agreement_limit is not None and tol is not None
        checks.append(threshold_check("predictions-agree", 100.0 - ref.agreement, task.agreement_limit if checked else None,
                                      f"% of PyTorch's predictions the engine's miss ({task.agreement_label} "
                                      f"{ref.agreement:.2f}% of {ref.compared})" + ("" if checked else ", reported only")))
        own = errors["pruned_vs_masked"]
        fp32 = TOLERANCES["fp32"]
        checks.append(threshold_check("pruned-vs-masked", own.max_abs, fp32.limit(own.scale),
                                      "max abs error of PyTorch pruned vs masked training model (fp32 tolerance)"))
        checks.append(threshold_check("accuracy", scores["pruned"] - scores["engine"], max_accuracy_drop,
                                      f"{task.score_label} drop in percentage points: {precision} engine "
                                      f"{scores['engine']:.2f}% vs fp32 PyTorch {scores['pruned']:.2f}% on {images} images"))
        budget, source = (latency_ms, "latency_ms") if latency_ms is not None else (info.budget_ms, "run.json budget_ms")
        statistic = report.statistic
        words = describe(statistic)
        measured = latency.value(statistic)
        post = report.postprocess.value(statistic) if report.postprocess is not None else None
        end_to_end = budget_stage == "end-to-end" and post is not None
        held = measured + post if end_to_end and post is not None else measured
        limit = None if budget is None else budget * (1 + budget_tolerance)
        stage = f" plus post-processing {post:.4g} ms (build-engine's timing)" if end_to_end else ""
        checks.append(threshold_check("latency-budget", held, limit,
                                      f"measured {words} ms/batch at batch {batch}{stage} (the target's statistic) vs budget "
                                      f"{budget:.4g} ms from {source} x (1 + tolerance {budget_tolerance:g})"
                                      if budget is not None else "no latency budget given (latency_ms) or recorded in run.json"))
        predicted = info.predicted_latency_ms
        here = machine_info(report.spec.threads)
        if predicted and budget_precision not in (None, precision):
            checks.append(Check("latency-vs-lut", "info", None, None,
                                f"the run's LUT predicts {budget_precision} latency, not {precision}: not compared"))
        elif predicted:
            elsewhere = lut_elsewhere(meta.machine, here) if (meta := lut_meta(info)) else ""
            checks.append(threshold_check("latency-vs-lut", abs(measured / predicted - 1), lut_tolerance,
                                          f"|measured / LUT-predicted - 1| for {words} {measured:.3f} vs {predicted:.3f} ms/batch"
                                          f"{elsewhere}"))
        else:
            checks.append(Check("latency-vs-lut", "info", None, None, "run.json has no predicted_latency_ms"))

        result = ValidationReport(
            engine_dir=str(Path(engine_dir).resolve()), run_dir=report.run_dir, backend=report.backend,
            precision=report.spec.precision, batch=batch, dataset=name, images=images, errors=errors, scores=scores,
            latency=latency, statistic=statistic, latency_ms=measured, budget_ms=budget,
            budget_source=source if budget is not None else None, predicted_latency_ms=predicted, checks=checks,
            environment=here, task=task.name, score_label=task.score_label,
            agreement_label=task.agreement_label, budget_stage=budget_stage, postprocess_ms=post,
        )
        data_out: dict[str, Any] = {**asdict(result), "passed": not result.failed, "failed": [c.name for c in result.failed]}
        write_json(folder / VALIDATION_REPORT, data_out)
        write_text(folder / VALIDATION_MARKDOWN, result.markdown())
        return result
