"""Detectors under a latency budget: HALP and IEE prune a trained detector to half its measured latency.

    PYTHONPATH=. python -m benchmarks.detection            # full mode (sizing below)
    PYTHONPATH=. python -m benchmarks.detection --quick    # the suite's pipeline check (one tiny SSDlite, 1 seed)

The paper's third experiment (Fig. 4) prunes SSD512-ResNet50 on Pascal VOC and reports a pruned detector above
the dense model's mAP at twice its FPS. Nothing can be downloaded here, so this runs on the offline digit scenes
(real handwritten digits placed on a canvas: a synthetic layout, fine for comparing arms side by side, never
against published numbers), with SSDlite320-MobileNetV3 and a ResNet-18 FPN detector built from random weights.

Per model, on the `cpu` target (ONNX Runtime, batch 1, one thread, fastest run):

- `dense`: trained from scratch for `dense_epochs` (seed 0); the plateau check trains every seed for 0.75 of the
  epochs and the seeds after 0 for all of them, and pairs the two by seed;
- `halp` and `iee`: the dense checkpoint pruned to `ratio` (0.5) of the dense network part's latency against the
  model's measured LUT (`iee-deploy profile`), with the same fine-tuning (data, optimizer, schedule, epochs) and
  seeds 0..n-1 paired across the two (same data order per seed).

mAP@0.5 and mAP@[.5:.95] are the runs' own validation figures (torchmetrics, COCO's evaluation). Every engine
(`iee-deploy build-engine`: the network part, its post-processing timed beside it) is timed again side by side in
alternating rounds, in TIMING_PASSES passes with fresh sessions, as its recorded structure with re-drawn weights
(latency does not depend on the values); that timing is a record too (`time_engines`: `timing.json`, with the
machine it ran on), so a fresh clone's report reads as measured; `--retime` times it again. Training FLOPs are the
trainer's count.

Resumable: every finished run leaves a small JSON record under
benchmarks/results/detection[_quick]_runs/<model>-d<dense epochs>/, from which a fresh clone rebuilds the report
(a longer dense setting gets folders of its own, so no record or checkpoint of another setting is reused); run
folders (checkpoints) stay under --runs. Writes
benchmarks/results/detection[_quick].md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    format_difference,
    header,
    header_markdown,
    markdown_table,
    onnx_from_structure,
    onnx_structure,
    paired_difference,
    plateaued,
    run_parallel,
    shown_command,
    train_command,
    write_json,
    write_results,
)
from benchmarks.head_to_head import TIMING_PASSES, read_record, shown_path, structure_digest, timing_record
from runtime.machine import same_machine
from runtime.timing import TimingConfig

METHODS = ("halp", "iee")
WINDOWS = {"halp": ["--update-end", "0.25"], "iee": ["--update-end", "0.5", "--descent", "0.5"]}
"""Each method's update window, as the head-to-head benchmark sets it (HALP prunes early; IEE explores longer)."""
PAPER = ("Paper (Fig. 4): SSD512-ResNet50 on Pascal VOC, pruned with IEE, above the dense model's mAP at twice its "
         "FPS on a GPU.")


FIRST_VAL_SCENES = 200
"""The first settings' validation scenes: their folders' names leave the count out (`Sizing.folder`)."""


@dataclass(frozen=True)
class Sizing:
    """One detector's share of a mode: its training scenes and epochs (a ResNet-18 FPN step costs about eight
    SSDlite steps at 128 px, so it trains on fewer scenes), its validation scenes, evaluated every `eval_every`
    epochs and after the last (each evaluation costs their inference), and whether the pruned runs meet the budget
    as measured here rather than as the LUT predicts it (`--measure-budget`; those runs train one at a time, since a
    training neighbour on the other core slows the dense network's timing for as long as it runs)."""

    model: str
    train_scenes: int
    dense_epochs: int
    epochs: int  # the fine-tuning of every pruned arm
    val_scenes: int = FIRST_VAL_SCENES
    eval_every: int = 1
    measure_budget: bool = False

    @property
    def folder(self) -> str:
        """This setting's folder of records (and of run folders): <model>-d<dense epochs>, then -v<validation scenes>
        unless they are the first settings' FIRST_VAL_SCENES, so that no setting reuses another's records or
        checkpoints."""
        val = "" if self.val_scenes == FIRST_VAL_SCENES else f"-v{self.val_scenes}"
        return f"{self.model}-d{self.dense_epochs}{val}"


@dataclass(frozen=True)
class Mode:
    """How big the benchmark is."""

    name: str
    models: tuple[Sizing, ...]
    resolution: int
    seeds: int
    batch_size: int
    delta_t: int  # steps between HALP's prunes (and IEE's descent's)
    profile: tuple[str, ...]  # extra `iee-deploy profile` options (the quick mode's coarse grid)
    iee: tuple[str, ...]  # extra options of the IEE runs (the quick mode's shortest H, J, Q)
    timing_seconds: float  # per engine in the side-by-side timing
    ratio: float = 0.5  # the budget: this fraction of the dense network's measured latency
    jobs: int = 1  # training runs at a time (one thread each)
    in_process: bool = False
    lr: float = 0.01
    finetune_lr: float = 0.005


QUICK = Mode("quick", (Sizing("ssdlite", 8, 2, 4, val_scenes=4),), 64, 1, 2, 1, ("--step", "64", "--repeats", "3",
             "--network-repeats", "3", "--calibration-networks", "2"), ("--hjq", "1,1,1"), 0.05, ratio=0.8,
             in_process=True)
"""A pipeline check: a coarse LUT (64-channel steps, two calibration networks) whose floor can lie above 0.5 x dense."""
FULL = Mode("full", (Sizing("ssdlite", 1000, 80, 10, measure_budget=True), Sizing("fcos_resnet18", 300, 60, 8)), 128,
            3, 16, 10, (), (), 2.0, jobs=2)
"""Sized for about six hours of two idle cores (see `SCENE_SECONDS`); each run's time is in its record. The dense
models train twice as long as the first setting's (40 and 30 epochs), whose plateau check failed on both: 0.75 D
minus D was -2.09 (SSDlite) and -3.11 (FCOS) mAP@0.5 points on one seed. 200 validation scenes leave one SSDlite
model's mAP@0.5 uncertain by +-2.02 points (a bootstrap over the scenes of the dense model; +-0.81 on 1,000 scenes,
which a later setting's `val_scenes` and `eval_every` allow). SSDlite's pruned runs measure their budget: aimed by
a LUT profiled on the timing machine, their engines landed at 1.06 and 1.07 of it (FCOS's at 1.00 and 1.01)."""
SCENE_SECONDS = {"ssdlite": 0.03, "fcos_resnet18": 0.25}
"""One training scene at 128 px, forward and backward, on one thread of an idle core (s): measured from one epoch of
160 scenes (7 s and 57 s at load 2.8 on 2 cores, about 0.7 of a core each)."""


def result_name(mode: Mode) -> str:
    return "detection" if mode is FULL else f"detection_{mode.name}"


def plateau_pairs(seeds: int) -> tuple[list[str], list[str]]:
    """The dense runs the plateau check pairs, by seed: 0.75 D and D (seed 0's D is the dense model)."""
    suffix = lambda seed: "" if seed == 0 else f"-seed{seed}"  # noqa: E731
    return [f"dense-0.75D{suffix(s)}" for s in range(seeds)], [f"dense{suffix(s)}" for s in range(seeds)]


def plateau_runs(size: Sizing, seeds: int) -> list[tuple[str, float, int]]:
    """Every dense run of a detector (name, epochs, seed): the full-length runs first (the dense model is seed 0's),
    then the 0.75 D ones, so that the dense model trains beside a run of its own length (`architecture`)."""
    shorts, fulls = plateau_pairs(seeds)
    return ([(n, float(size.dense_epochs), s) for s, n in enumerate(fulls)]
            + [(n, 0.75 * size.dense_epochs, s) for s, n in enumerate(shorts)])


def base_train(mode: Mode, size: Sizing, epochs: float, seed: int, lr: float) -> list[str]:
    return ["python", "-m", "iee_deploy", "train", "--task", "detection", "--model", size.model, "--resolution",
            str(mode.resolution), "--subset", str(size.train_scenes), "--val-subset", str(size.val_scenes),
            *(["--eval-every", str(size.eval_every)] if size.eval_every != 1 else []),
            "--epochs", f"{epochs:g}", "--batch-size", str(mode.batch_size), "--lr", str(lr), "--seed", str(seed),
            "--no-progress"]


def engine_of(run: Path) -> Path:
    """The run's engine folder, built once (`build_engine`: the network part, its post-processing timed)."""
    from iee_deploy.deploy.build import build_engine

    folder = run / "engine"
    if not (folder / "engine.json").is_file():
        build_engine(run, folder, timing=TimingConfig(warmup_s=0.05, min_iterations=5, min_seconds=0.2))
    return folder


@dataclass(frozen=True)
class Run:
    """One training run of the benchmark: its command, its run folder and its committed record."""

    name: str  # dense, dense-0.75D, <method>/seed<n>
    cmd: list[str]
    out: Path
    record: Path

    @property
    def how(self) -> str:
        return shown_command(self.cmd)


def train_all(runs: list[Run], mode: Mode, desc: str) -> dict[str, dict[str, Any]]:
    """Every run's record (name -> record): the runs that have none are trained, `mode.jobs` at a time (one at a
    time in this process when 1), and each is recorded as soon as it finishes (its engine built one at a time), so
    a stopped benchmark keeps every run that finished."""
    building = threading.Lock()

    def recorded(run: Run) -> dict[str, Any]:
        record = read_record(run.record, run.how)
        if record is None:
            train_command(run.cmd, run.out, mode.in_process)
            with building:
                record = record_run(run)
        return record

    if mode.jobs == 1:
        return {r.name: recorded(r) for r in runs}
    return dict(zip((r.name for r in runs), run_parallel(recorded, runs, mode.jobs, desc)))


def record_run(run: Run) -> dict[str, Any]:
    """Write the committed record of a trained run (its engine built here): mAPs, FLOPs, seconds, engine."""
    summary = json.loads((run.out / "summary.json").read_text())
    engine = json.loads((engine_of(run.out) / "engine.json").read_text())
    record = {"how": run.how, "val_map_50": summary["val_map_50"], "val_map": summary["val_map"],
              "flops": summary["flops"], "seconds": summary["seconds"],
              "engine": onnx_structure(run.out / "engine" / "pruned.onnx"),
              "postprocess_ms": engine["postprocess"]["min_ms"] if engine.get("postprocess") else None}
    run.record.parent.mkdir(parents=True, exist_ok=True)
    write_json(run.record, record)
    return record


def architecture(size: Sizing, mode: Mode, runs: Path, results: Path, commands: list[str],
                 retime: bool = False) -> dict[str, Any]:
    """Every run of one detector, recorded; their engines timed side by side (a record too, `time_engines`); the
    model's rows."""
    model = size.model
    folder = size.folder
    root, rec = runs / mode.name / folder, results / f"{result_name(mode)}_runs" / folder
    lut = rec / "lut.csv"
    profile = ["python", "-m", "iee_deploy", "profile", "--target", "cpu", "--model", model, "--resolution",
               str(mode.resolution), *mode.profile, "--out", shown_path(lut)]
    commands.append(shown_command(profile))
    if not lut.with_suffix(".json").is_file():
        from iee_deploy.cli import main as cli

        lut.parent.mkdir(parents=True, exist_ok=True)
        if cli.main(args=profile[3:], prog_name="iee-deploy", standalone_mode=False):
            raise SystemExit(f"profiling failed: {shown_command(profile)}")
    static = ["--method", "static", "--sparsity", "0"]
    dense = [Run(name, [*base_train(mode, size, epochs, seed, mode.lr), *static, "--out", str(root / name)],
                 root / name, rec / f"{name}.json") for name, epochs, seed in plateau_runs(size, mode.seeds)]
    checkpoint = root / "dense" / "final_model.pt"
    pruned = [Run(f"{method}/seed{seed}",
                  [*base_train(mode, size, size.epochs, seed, mode.finetune_lr), "--method", method, "--target", "cpu",
                   "--lut", shown_path(lut), "--latency-ratio", str(mode.ratio), *WINDOWS[method],
                   *(mode.iee if method == "iee" else ()), *(["--measure-budget"] if size.measure_budget else []),
                   "--delta-t", str(mode.delta_t), "--checkpoint", str(checkpoint), "--out", str(root / method / f"seed{seed}")],
                  root / method / f"seed{seed}", rec / method / f"seed{seed}.json")
              for method in METHODS for seed in range(mode.seeds)]
    commands += [r.how for r in dense] + [r.how for r in pruned if r.name.endswith("seed0")]
    pending = [r for r in pruned if read_record(r.record, r.how) is None]
    if pending and not checkpoint.is_file() and read_record(dense[0].record, dense[0].how) is not None:
        # a fresh clone has the dense model's record, not its weights: say so before any training starts
        raise SystemExit(f"{model}: {len(pending)} pruned run(s) start from the dense checkpoint {checkpoint}, which is "
                         f"not here (only its record is): delete {shown_path(dense[0].record)} to train the dense model "
                         "again, or pass --runs where its run folder is")
    # the dense model trains beside the plateau check's next full-length run (they end together); then the pruned
    # runs go first, so the benchmark's answer is recorded before the plateau check's remaining runs
    records = train_all(dense[:mode.jobs], mode, f"{model}: the dense model")
    if size.measure_budget:  # nothing trains beside a run that times its structures
        records.update(train_all(pruned, replace(mode, jobs=1), f"{model}: pruned runs, one at a time"))
        records.update(train_all(dense[mode.jobs:], mode, f"{model}: plateau runs"))
    else:
        records.update(train_all([*pruned, *dense[mode.jobs:]], mode, f"{model}: pruned and plateau runs"))
    checks = {name for name, *_ in plateau_runs(size, mode.seeds)} - {"dense"}  # trained for the plateau check only
    timing = time_engines({name: r["engine"] for name, r in records.items() if name not in checks}, mode,
                          rec / "timing.json", retime, f"{model}: timing every engine side by side")
    return {**rows_of(size, records, timing["ms"], mode), "timing_passes": [p["ms"] for p in timing["passes"]],
            "timing_machine": timing["passes"][0]["meta"]["machine_info"],
            "lut_machine": json.loads(lut.with_suffix(".json").read_text())["machine"]}


def table_machine(lut_machine: dict[str, str], timed: dict[str, str]) -> str:
    """Where a detector's latency table was profiled, against the machine that timed its engines (`machine_info`
    dicts). The knapsack aims at the table's machine: on a CPU that times layers otherwise, the pruned engines land
    elsewhere against the budget. Two machines differ as `same_machine` says (CPU identities where both are recorded,
    else platforms: kernel builds, another virtual host)."""
    where = f"{lut_machine['platform']}, {lut_machine.get('cpu_identity', 'CPU identity not recorded')}"
    if same_machine(lut_machine, timed):
        return f"profiled {lut_machine['date']} on the machine that timed the engines ({where})"
    return (f"profiled {lut_machine['date']} on **another machine** than the engines' timing ({where}; timed on "
            f"{timed['platform']}, {timed.get('cpu_identity', 'CPU identity not known')}): the knapsack aimed at that "
            "machine's layer costs")


def time_engines(structures: dict[str, str], mode: Mode, path: Path, retime: bool, desc: str) -> dict[str, Any]:
    """The side-by-side timing of every recorded engine, re-drawn from its structure: `timing_record` at `path`, in
    TIMING_PASSES passes with sessions of their own, each engine at its lowest reading over them (`runtime.timing.
    lowest`): on a shared host the dense engine's time moves with the other jobs' load by up to half again while the
    pruned ones hold, and one disturbed pass would carry that into every speed-up. The record is reused
    while it timed these engines, so that a fresh clone's report reads as measured, on the machine that measured it
    (`retime` times them again here)."""
    with tempfile.TemporaryDirectory() as folder:
        engines = {name: (structure_digest(text),
                          partial(onnx_from_structure, text, Path(folder) / f"{name.replace('/', '-')}.onnx"))
                   for name, text in structures.items()}
        return timing_record(path, engines, mode.timing_seconds, TIMING_PASSES, retime, desc, mode.resolution)


def rows_of(size: Sizing, records: dict[str, Any], latency: dict[str, float], mode: Mode) -> dict[str, Any]:
    """The model's table: dense and each method (means over seeds), paired differences, the plateau check."""
    dense = records["dense"]
    arms = {}
    for method in METHODS:
        seeds = [records[f"{method}/seed{s}"] for s in range(mode.seeds)]
        ms = [latency[f"{method}/seed{s}"] for s in range(mode.seeds)]
        arms[method] = {
            "map_50": statistics.fmean(r["val_map_50"] for r in seeds), "map": statistics.fmean(r["val_map"] for r in seeds),
            "ms": statistics.fmean(ms), "speedup": latency["dense"] / statistics.fmean(ms),
            "over_budget": max(ms) / (mode.ratio * latency["dense"]),
            "postprocess_ms": statistics.fmean(r["postprocess_ms"] for r in seeds),
            "flops": statistics.fmean(r["flops"]["train_total"] for r in seeds) / dense["flops"]["train_total"],
            "vs_dense": paired_difference([r["val_map_50"] for r in seeds], [dense["val_map_50"]] * mode.seeds),
            "per_seed": [{"map_50": r["val_map_50"], "ms": m} for r, m in zip(seeds, ms)],
        }
    iee_vs_halp = paired_difference([r["val_map_50"] for r in (records[f"iee/seed{s}"] for s in range(mode.seeds))],
                                    [r["val_map_50"] for r in (records[f"halp/seed{s}"] for s in range(mode.seeds))])
    shorts, fulls = plateau_pairs(mode.seeds)
    plateau = paired_difference([records[n]["val_map_50"] for n in shorts], [records[n]["val_map_50"] for n in fulls])
    return {"model": size.model, "sizing": asdict(size),
            "dense": {"map_50": dense["val_map_50"], "map": dense["val_map"], "ms": latency["dense"],
                      "postprocess_ms": dense["postprocess_ms"],
                      "seeds_map_50": [records[n]["val_map_50"] for n in fulls]},
            "arms": arms, "iee_vs_halp": iee_vs_halp, "plateau": plateau, "plateaued": plateaued(plateau),
            "training_seconds": sum(r.get("seconds", math.nan) for r in records.values())}


def against_paper(vs_dense: dict[str, float], speedup: float) -> str:
    """One pruned arm against the paper's Fig. 4 claim (above the dense model's mAP at twice its speed): its speed-up,
    and which side of the dense mAP it lands on, resolved only when the paired 95% interval leaves out zero."""
    resolved = vs_dense["n"] >= 2 and (vs_dense["low"] > 0 or vs_dense["high"] < 0)
    side = "above" if vs_dense["mean"] > 0 else "below"
    return f"{speedup:.2f}x, {side} dense ({'resolved' if resolved else 'unresolved'})"


def evaluated(every: int) -> str:
    """How often a detector's runs evaluated their validation scenes, as the report says it ("" for every epoch)."""
    return "" if every == 1 else f" (evaluated every {every} epochs and after the last)"


def estimated_hours(mode: Mode) -> float:
    """The mode's training time on `mode.jobs` idle cores (h): scenes x epochs x `SCENE_SECONDS`, dense and plateau
    runs included, evaluation and engines left out."""
    scene_epochs = {s.model: s.train_scenes * (1.75 * mode.seeds * s.dense_epochs + len(METHODS) * mode.seeds * s.epochs)
                    for s in mode.models}
    return sum(n * SCENE_SECONDS[m] for m, n in scene_epochs.items()) / 3600 / mode.jobs


def plot(result: dict[str, Any], path: Path) -> None:
    """mAP@0.5 against the measured network latency, one panel per detector: dense, and each method's seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4.2), squeeze=False)
    for ax, row in zip(axes[0], rows):
        ax.scatter([row["dense"]["ms"]], [100 * row["dense"]["map_50"]], color="k", marker="*", s=110, label="dense")
        for i, (method, arm) in enumerate(row["arms"].items()):
            ax.scatter([s["ms"] for s in arm["per_seed"]], [100 * s["map_50"] for s in arm["per_seed"]], color=f"C{i}",
                       alpha=0.5, s=18)
            ax.scatter([arm["ms"]], [100 * arm["map_50"]], color=f"C{i}", marker="o", s=60, label=f"{method} (mean)")
        budget = result["mode"]["ratio"] * row["dense"]["ms"]
        ax.axvline(budget, color="grey", linestyle="--", linewidth=1, label=f"budget ({result['mode']['ratio']:g} x dense)")
        ax.set(xlabel="network latency, ms (cpu target, batch 1, side by side)", ylabel="mAP@0.5 (%)",
               title=row["model"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], meta: dict[str, Any], mode: Mode) -> str:
    lines = [f"# Detectors under a latency budget ({mode.name} mode)", "", *header_markdown(meta, mode.name), "",
             "**Data caveat.** Digit scenes: real handwritten digits placed on a canvas by seed, a synthetic layout; "
             "compare arms side by side, never with published numbers.", "", PAPER, "",
             f"Setting: {mode.resolution} px; per detector, its training and validation scenes "
             f"and a dense model trained from scratch (lr {mode.lr}), then HALP and IEE to {mode.ratio} of the dense "
             f"network's measured latency with the same fine-tuning (lr {mode.finetune_lr}), seeds 0..{mode.seeds - 1} "
             "paired (the same initial weights and data order per seed). Latency: the network part on the cpu target "
             f"(batch 1, one thread, fastest run), all engines timed side by side in {TIMING_PASSES} passes with sessions of "
             "their own (each engine at its lowest reading over them), a record reused while it "
             "timed the same engines (`--retime` times them again); post-processing (decoding, NMS) as build-engine "
             "timed it beside each engine.", "",
             *[f"- {r['model']}: {r['sizing']['train_scenes']:,} training and {r['sizing']['val_scenes']:,} validation "
               f"scenes{evaluated(r['sizing']['eval_every'])}, dense {r['sizing']['dense_epochs']} "
               f"epochs (the plateau check: 0.75 of them and all of them for every seed, paired), fine-tuning "
               f"{r['sizing']['epochs']} epochs"
               + (", each pruned run meeting the budget as measured on this CPU (`--measure-budget`), one at a time"
                  if r["sizing"].get("measure_budget") else "")
               + f"; its runs took {r['training_seconds'] / 3600:.1f} h of training, {mode.jobs} at a time; its dense "
               "engine read "
               f"{', '.join(format(t['dense'], '.3f') for t in r['timing_passes'])} ms over the timing passes (from "
               f"{r['timing_machine']['date']}); its latency table {table_machine(r['lut_machine'], r['timing_machine'])}."
               for r in result["rows"]],
             "", f"Sizing: about {estimated_hours(mode):.1f} h of training on {mode.jobs} idle cores (a training scene at "
             f"128 px costs {', '.join(f'{m} {t} s' for m, t in SCENE_SECONDS.items())} on one thread); several times "
             "that on a shared machine. Resumable: run the same command again.", "",
             f"![mAP@0.5 against measured latency]({result_name(mode)}.png)", "", "## The answer", ""]
    for row in result["rows"]:
        d = row["dense"]
        seeds = ", ".join(f"{100 * m:.2f}" for m in d["seeds_map_50"])
        claim = "; ".join(f"{method.upper()} {against_paper(a['vs_dense'], a['speedup'])}"
                          for method, a in row["arms"].items())
        lines.append(f"- {row['model']}: dense mAP@0.5 {100 * d['map_50']:.2f}% at {d['ms']:.3f} ms (D over seeds "
                     f"0..{len(d['seeds_map_50']) - 1}: {seeds}); against the paper's claim: {claim}; IEE - HALP "
                     f"{format_difference(row['iee_vs_halp'])} points; dense plateau (0.75 D - D) "
                     f"{format_difference(row['plateau'])}: {'plateaued' if row['plateaued'] else '**not plateaued**'}.")
    lines += ["", *markdown_table(
        ["model", "arm", "mAP@0.5 %", "mAP@[.5:.95] %", "minus dense (paired)", "network ms", "speed-up",
         "slowest seed / budget", "post-processing ms", "training FLOPs (x the dense run's)"],
        [[row["model"], "dense", f"{100 * row['dense']['map_50']:.2f}", f"{100 * row['dense']['map']:.2f}", "-",
          f"{row['dense']['ms']:.3f}", "1.00x", "-", f"{row['dense']['postprocess_ms']:.3f}", "-"] for row in result["rows"]]
        + [[row["model"], method, f"{100 * a['map_50']:.2f}", f"{100 * a['map']:.2f}", format_difference(a["vs_dense"]),
            f"{a['ms']:.3f}", f"{a['speedup']:.2f}x", f"{a['over_budget']:.2f}", f"{a['postprocess_ms']:.3f}",
            f"{a['flops']:.3f}"]
           for row in result["rows"] for method, a in row["arms"].items()]), "",
        "Commands (from the repository root):", "", *[f"    {c}" for c in result["commands"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny SSDlite, 1 seed: a pipeline check (a minute)")
    parser.add_argument("--runs", default="runs/bench_detection", help="folder of the run folders (checkpoints)")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the results files and run records")
    parser.add_argument("--models", default=None, help="comma-separated detectors of the mode to run (default: all); "
                        "the report covers the ones run")
    parser.add_argument("--retime", action="store_true", help="time every engine again side by side (default: the "
                        "recorded timing while it timed the same engines)")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    meta = header(1, "torchvision", "onnxruntime", "torchmetrics")
    commands: list[str] = []
    results = Path(args.results)
    names = [s.model for s in mode.models]
    chosen = args.models.split(",") if args.models else names
    if unknown := sorted(set(chosen) - set(names)):
        parser.error(f"unknown model(s) {', '.join(unknown)}: this mode has {', '.join(names)}")
    rows = [architecture(size, mode, Path(args.runs), results, commands, args.retime) for size in mode.models
            if size.model in chosen]
    result = {**meta, "mode": asdict(mode), "rows": rows, "commands": commands}
    results.mkdir(parents=True, exist_ok=True)
    plot(result, results / f"{result_name(mode)}.png")
    write_results(result_name(mode), result, markdown(result, meta, mode), results)


if __name__ == "__main__":
    main()
