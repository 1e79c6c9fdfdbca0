"""`write_report`: markdown + HTML report with PNG plots across training runs and their engines.

Inputs are run folders and/or engine folders (the output folders of `build_engine`). Engines are found in each
run folder (any `engine.json` up to two levels down) and linked back to their run through
`engine.json`'s `run_dir`. What each figure shows and where its numbers come from:

| figure | x | y | source |
|---|---|---|---|
| `pareto.png` | measured latency (ms/batch) of the pruned engines and of their dense models | the task's score % (top-1, mAP@0.5); one Pareto front per score and dataset, never one across them | `engine.json`; accuracy from `validation.json` beside it, else the run's `summary.json`; the dense model's from `validation.json` (the checkpoint training started from), else drawn as a latency line |
| `exploration.png` | training step | IoU after prune, after grow, and survival | each run's update records (`RunFolder.updates`: `step`, `event`, `iou`, `survival`) |
| `latency.png` | LUT-predicted latency (ms) | measured latency (ms) | run.json `predicted_latency_ms` vs `engine.json` |

Missing files or keys are tolerated: a run without them is listed, and a figure with no data is
left out with a note. Numbers are never invented.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iee_deploy.deploy.build import (
    ENGINE_REPORT,
    EngineReport,
    check_engine_run,
    output_lock,
    read_engine_report,
)
from iee_deploy.deploy.render import environment, html_table, markdown_table
from iee_deploy.deploy.run_models import run_task
from iee_deploy.deploy.validate import VALIDATION_REPORT
from iee_deploy.errors import UserError
from iee_deploy.io import atomic_path, write_json, write_text
from iee_deploy.runs import RUN_INFO, RunFolder, RunInfo
from iee_deploy.tasks import task_named
from iee_deploy.train.summary import plural
from runtime.timing import describe
from solvers.relaxation import pareto_front

ACCURACY_KEYS = ("top1", "val_top1", "top1_accuracy", "accuracy", "val_accuracy", "val_acc", "acc")
CURVES = (("prune", "iou", "IoU after prune"), ("grow", "iou", "IoU after grow"), ("prune", "survival", "survival"))
"""(update event, key, label) of the exploration panels: the trainer's update records."""


@dataclass
class RunData:
    """One run folder: its facts, accuracy recorded by training, and exploration metrics."""

    name: str
    run_dir: str
    info: RunInfo
    summary_score: float | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    score_label: str = "top-1"  # what `summary_score` is: the run's task's score


@dataclass
class EnginePoint:
    """One built engine of a run: measured and predicted latency, accuracy and where it came from."""

    label: str
    run: str
    engine_dir: str
    backend: str
    batch: int
    precision: str
    measured_ms: float
    dense_ms: float
    speedup: float
    predicted_ms: float | None
    score: float | None  # the task's score in % (top-1, mAP@0.5)
    score_source: str | None
    statistic: str = "median"  # the latency statistic of measured_ms and dense_ms (the engine's target's)
    dense_score: float | None = None  # the dense model's score % (validation.json), None if unknown
    score_label: str = "top-1"  # what `score` is: the run's task's score
    dataset: str = ""  # the run's dataset: scores on different data are not compared

    @property
    def score_name(self) -> str:
        """The score and the data it is measured on ('top-1 on digits'): engines share a Pareto front only if equal."""
        return f"{self.score_label} on {self.dataset}" if self.dataset else self.score_label


@dataclass(frozen=True)
class ParetoSeries:
    """What `pareto.png` plots, in (latency ms, score %) pairs: kept apart from drawing so it can be tested."""

    engines: list[tuple[str, float, float]]  # (label, latency, score) of every engine with a score
    fronts: list[tuple[str, list[tuple[float, float]]]]  # (score name, its engines' front by increasing latency)
    dense: list[tuple[str, float, float]]  # (label, latency, score) of dense models whose score is known
    dense_latency_only: list[tuple[str, float]]  # (label, latency) of dense models whose accuracy is unknown
    y_range: tuple[float, float]  # never above 100 %
    score_label: str = "top-1"  # the engines' score (top-1, mAP@0.5; both, joined by "or", when tasks are mixed)


def as_percent(value: float) -> float:
    """Accuracy as a percentage: fractions (<= 1) are scaled by 100."""
    return 100.0 * value if value <= 1.0 else value


def find_accuracy(summary: dict[str, Any]) -> float | None:
    """The score of a training summary: the entry its `score` names (a detector's `val_map_50`), else the first
    numeric top-1 entry (top level, or under 'final'/'val'/'metrics')."""
    named = summary.get("score")
    keys = (named,) if isinstance(named, str) else ACCURACY_KEYS
    for scope in (summary, *(summary.get(k) for k in ("final", "val", "metrics"))):
        if isinstance(scope, dict):
            for key in keys:
                value = scope.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    return as_percent(float(value))
    return None


def curve(records: Sequence[dict[str, Any]], event: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the `event` update records that have a numeric `key`; the step defaults to the index."""
    xs, ys = [], []
    for i, record in enumerate(records):
        if record.get("event") != event:
            continue
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            step = record.get("step", i)
            xs.append(float(step) if isinstance(step, int | float) else float(i))
            ys.append(float(value))
    return xs, ys


def front_of(points: Sequence[EnginePoint]) -> list[EnginePoint]:
    """The engines with an accuracy that no other beats on both latency and accuracy, by increasing latency."""
    rated = [p for p in points if p.score is not None]
    latency = np.array([p.measured_ms for p in rated], dtype=float)
    accuracy = np.array([p.score for p in rated], dtype=float)
    return [rated[i] for i in pareto_front(latency, accuracy)]


def fronts_of(points: Sequence[EnginePoint]) -> dict[str, list[EnginePoint]]:
    """One Pareto front per score name (`EnginePoint.score_name`), by name: a classifier's top-1 and a detector's
    mAP@0.5 (or top-1 on two datasets) are different scales, and one front over both would let one 'dominate' the other."""
    names = sorted({p.score_name for p in points if p.score is not None})
    return {name: front_of([p for p in points if p.score_name == name]) for name in names}


def pareto_series(points: Sequence[EnginePoint]) -> ParetoSeries | None:
    """The engines, their front and their dense models (one per distinct latency and accuracy); None if no accuracy."""
    usable = [p for p in points if p.score is not None]
    if not usable:
        return None
    engines = [(p.label, p.measured_ms, float(p.score)) for p in usable if p.score is not None]
    fronts = [(name, [(p.measured_ms, float(p.score)) for p in front if p.score is not None])
              for name, front in fronts_of(usable).items()]
    dense: dict[tuple[float, float], str] = {}
    for p in usable:
        if p.dense_score is not None:
            dense.setdefault((p.dense_ms, p.dense_score), f"dense ({p.run})")
    unknown: dict[float, str] = {}
    for p in usable:
        if p.dense_score is None:
            unknown.setdefault(p.dense_ms, f"dense ({p.run}), accuracy unknown")
    latency_only = sorted(((label, ms) for ms, label in unknown.items()), key=lambda item: item[1])
    ys = [y for _, _, y in engines] + [y for _, y in dense]
    y_range = (max(0.0, min(ys) - 5.0), min(100.0, max(ys) + 2.0))
    score_label = " or ".join(sorted({p.score_label for p in usable}))
    return ParetoSeries(engines, fronts, [(label, x, y) for (x, y), label in dense.items()], latency_only, y_range,
                        score_label)


def _load_run(run_dir: Path) -> RunData:
    run = RunFolder(run_dir)
    summary = run.read_json(run.SUMMARY, strict=True) or {}  # damaged: "corrupt", not a score silently left out
    return RunData(run_dir.name, str(run_dir.resolve()), run.read_info(), find_accuracy(summary), run.updates(),
                   run_task(run_dir).score_label)


def _point(engine_dir: Path, engine: EngineReport, run: RunData) -> EnginePoint:
    try:  # damaged: "corrupt", not silently replaced by the training score of summary.json
        validation = RunFolder(engine_dir).read_json(VALIDATION_REPORT, strict=True)
    except UserError as exc:
        raise UserError(exc.problem, "run `iee-deploy validate` on the engine again, or delete the file") from None
    # validation.json's `scores` (`top1` in files written before detectors were deployed)
    scores = (validation.get("scores") or validation.get("top1") or {}) if validation else {}
    score, dense_score = scores.get("engine"), scores.get("dense")
    source = "validation.json" if score is not None else ("summary.json" if run.summary_score is not None else None)
    return EnginePoint(
        label=f"{run.name}/{engine.backend}-b{engine.spec.batch}-{engine.spec.precision}", run=run.name,
        engine_dir=str(engine_dir), backend=engine.backend, batch=engine.spec.batch, precision=engine.spec.precision,
        measured_ms=engine.latency(engine.pruned), dense_ms=engine.latency(engine.dense), speedup=engine.speedup,
        predicted_ms=run.info.predicted_latency_ms, score=score if score is not None else run.summary_score,
        score_source=source, score_label=task_named(engine.task).score_label,
        statistic=engine.statistic, dense_score=dense_score, dataset=run.info.dataset,
    )


def latency_words(points: Sequence[EnginePoint]) -> str:
    """The statistic of plotted latencies, for an axis label: one statistic, or each engine's target's."""
    found = {p.statistic for p in points}
    return describe(found.pop()) if len(found) == 1 else "each target's statistic"


def collect(paths: Sequence[str | Path]) -> tuple[list[RunData], list[EnginePoint]]:
    """Runs and engine points from run folders and/or engine folders (each engine counted once)."""
    runs: dict[str, RunData] = {}
    engines: dict[str, Path] = {}
    for given in map(Path, paths):
        if (given / ENGINE_REPORT).is_file():
            engines[str(given.resolve())] = given
        elif (given / RUN_INFO).is_file():
            run = _load_run(given)
            runs[run.run_dir] = run
            for found in sorted([*given.glob(f"*/{ENGINE_REPORT}"), *given.glob(f"*/*/{ENGINE_REPORT}")]):
                engines[str(found.parent.resolve())] = found.parent
        elif not given.exists():
            raise UserError(f"'{given}' does not exist", "pass folders written by `iee-deploy train` or `iee-deploy build-engine`")
        elif (given / RunFolder.CONFIG).is_file():
            raise RunFolder(given).missing_info()
        else:
            raise UserError(f"'{given}' is neither a run folder ({RUN_INFO}) nor an engine folder ({ENGINE_REPORT})",
                            "pass folders written by `iee-deploy train` or `iee-deploy build-engine`")
    points = []
    for engine_dir in engines.values():
        engine = read_engine_report(engine_dir)
        if engine.run_dir not in runs:
            check_engine_run(engine_dir, engine)
            runs[engine.run_dir] = _load_run(Path(engine.run_dir))
        points.append(_point(engine_dir, engine, runs[engine.run_dir]))
    return list(runs.values()), points


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_pareto(points: Sequence[EnginePoint], path: Path) -> bool:
    """Top-1 against measured latency: the engines, their Pareto front as a line, and the dense models."""
    import matplotlib.pyplot as plt

    series = pareto_series(points)
    if series is None:
        return False
    fig = pareto_figure(series, latency_words(points))
    _save(fig, path)
    plt.close(fig)
    return True


def pareto_figure(series: ParetoSeries, words: str) -> Any:
    """The pareto.png figure: every line and marker has its own legend entry (each dense model names its run)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([x for _, x, _ in series.engines], [y for _, _, y in series.engines], zorder=3, label="pruned engines")
    for label, x, y in series.engines:
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for i, (name, front) in enumerate(series.fronts):  # one line per score, the legend naming it when there are several
        label = "Pareto front" if len(series.fronts) == 1 else f"Pareto front: {name}"
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color=f"C{(3 + i) % 10}", marker="o",
                markersize=9, markerfacecolor="none", zorder=2, label=label if len(front) > 1 else f"{label} (one engine)")
    if series.dense:
        ax.scatter([x for _, x, _ in series.dense], [y for _, _, y in series.dense], marker="*", s=140, color="black",
                   zorder=4, label="dense model (measured latency and accuracy)")
        for label, x, y in series.dense:
            ax.annotate(label, (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
    for i, (label, dense_ms) in enumerate(series.dense_latency_only):
        ax.axvline(dense_ms, color=f"C{(3 + len(series.fronts) + i) % 10}", linestyle="--", label=f"{label}: measured latency")
    ax.margins(x=0.1)
    ax.set_ylim(*series.y_range)
    ax.set(xlabel=f"measured latency (ms per batch, {words})", ylabel=f"{series.score_label} (%)",
           title=f"{series.score_label} vs measured latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_exploration(runs: Sequence[RunData], path: Path) -> bool:
    import matplotlib.pyplot as plt

    curves = {run.name: [curve(run.metrics, event, key) for event, key, _ in CURVES] for run in runs}
    if not any(xs for per_run in curves.values() for xs, _ in per_run):
        return False
    fig, (iou_ax, surv_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for colour, (name, per_run) in enumerate(curves.items()):
        for (_, key, label), (xs, ys), style in zip(CURVES, per_run, ("o-", "s--", "o-")):
            if xs:
                ax = surv_ax if key == "survival" else iou_ax
                ax.plot(xs, ys, style, color=f"C{colour % 10}", label=f"{name}: {label}", markersize=3)
    iou_ax.set(xlabel="training step", ylabel="IoU (after prune / after grow)", ylim=(0, 1.02),
               title="IoU of the active set between consecutive updates")
    surv_ax.set(xlabel="training step", ylabel="survival rate", ylim=(0, 1.02), title="Survival of newly grown parameters")
    for ax in (iou_ax, surv_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_latency(points: Sequence[EnginePoint], path: Path) -> bool:
    import matplotlib.pyplot as plt

    usable = [(p, p.predicted_ms) for p in points if p.predicted_ms is not None]
    if not usable:
        return False
    fig, ax = plt.subplots(figsize=(5, 5))
    xs, ys = [float(pred) for _, pred in usable], [p.measured_ms for p, _ in usable]
    ax.scatter(xs, ys, zorder=3)
    for (p, _), x, y in zip(usable, xs, ys):
        ax.annotate(p.label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    top = max(xs + ys) * 1.1
    ax.plot([0, top], [0, top], "--", color="grey", label="measured = predicted")
    words = latency_words([p for p, _ in usable])
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"LUT-predicted latency (ms, {words})",
           ylabel=f"measured latency (ms per batch, {words})", title="Predicted vs measured latency")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return True


FIGURES = (("pareto.png", "Accuracy vs measured latency", "no engine has an accuracy (validate it, or training's summary.json)"),
           ("exploration.png", "IoU and survival during training", "no run has IoU or survival records in metrics.jsonl"),
           ("latency.png", "Predicted vs measured latency", "no run with an engine has a LUT prediction in run.json"))


def counts_line(runs: Sequence[RunData], points: Sequence[EnginePoint]) -> str:
    """'1 run, 2 engines.', with how many runs have not finished training (their figures are a part-way state)."""
    unfinished = sum(not r.info.finished for r in runs)
    note = f" ({unfinished} unfinished: to finish, run the same `iee-deploy train` again with `resume`)" if unfinished \
        else ""
    return f"{plural(len(runs), 'run')}{note}, {plural(len(points), 'engine')}."


def front_line(fronts: dict[str, list[EnginePoint]]) -> str:
    """'Pareto-optimal engines: a, b.' for one score; one front per score, each named, when the engines' scores differ."""
    if len(fronts) <= 1:
        return "Pareto-optimal engines: " + (", ".join(sorted(p.label for f in fronts.values() for p in f)) or "none")
    return ("Pareto-optimal engines, one front per score (engines scored on different tasks or data are not compared): "
            + "; ".join(f"{name}: {', '.join(sorted(p.label for p in front))}" for name, front in fronts.items()))


def write_report(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Write report.md, report.html, report.json and the PNG figures into `out`; return report.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    with output_lock(out):  # made here; a report or build writing the same folder is refused
        runs, points = collect(paths)
        drawn = [plot_pareto(points, out / FIGURES[0][0]), plot_exploration(runs, out / FIGURES[1][0]),
                 plot_latency(points, out / FIGURES[2][0])]
        run_headers = ["run", "model", "method", "kind", "budget ms", "predicted ms", "score", "summary score %",
                       "metric records"]
        run_rows = [[r.name if r.info.finished else f"{r.name} (unfinished)", r.info.model, r.info.method, r.info.kind,
                     r.info.budget_ms, r.info.predicted_latency_ms, r.score_label, r.summary_score, len(r.metrics)] for r in runs]
        engine_headers = ["engine", "measured ms/batch", "dense ms/batch", "speed-up", "predicted ms", "score", "score %",
                          "score from", "dense score %"]
        engine_rows = [[p.label, p.measured_ms, p.dense_ms, p.speedup, p.predicted_ms, p.score_label, p.score,
                        p.score_source, p.dense_score] for p in points]
        fronts = fronts_of(points)
        optimal = f"{counts_line(runs, points)} {front_line(fronts)}"
        md = ["# Deployment report", "", optimal, "", "## Runs", "", markdown_table(run_headers, run_rows), "",
              "## Engines", "", markdown_table(engine_headers, engine_rows), ""]
        body = ["<h1>Deployment report</h1>", f"<p>{html.escape(optimal)}</p>", "<h2>Runs</h2>",
                html_table(run_headers, run_rows), "<h2>Engines</h2>", html_table(engine_headers, engine_rows)]
        for (file, title, missing), ok in zip(FIGURES, drawn):
            md += [f"## {title}", "", f"![{title}]({file})" if ok else f"Not drawn: {missing}.", ""]
            body += [f"<h2>{html.escape(title)}</h2>",
                     f'<img src="{file}" alt="{html.escape(title)}">' if ok else f"<p>Not drawn: {html.escape(missing)}.</p>"]
        env = environment()
        md += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
        style = "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        write_text(out / "report.html", f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Deployment report</title>"
                                        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
        write_json(out / "report.json", {"runs": [{**asdict(r), "metrics": len(r.metrics)} for r in runs],
                                          "engines": [asdict(p) for p in points],
                                          "pareto_fronts": {name: [p.label for p in front] for name, front in fronts.items()},
                                          "figures": [f for (f, _, _), ok in zip(FIGURES, drawn) if ok],
                                          "environment": env})
        return write_text(out / "report.md", "\n".join(md))
