"""Structured IEE vs HALP under two CPU latency budgets on CIFAR-10 (JPEG copy): accuracy vs measured latency.

    PYTHONPATH=. python -m benchmarks.structured            # full mode (sized for ~90 min on 2 cores)
    PYTHONPATH=. python -m benchmarks.structured --quick    # minutes: small subset, 2 epochs, 1 seed

One `iee-deploy profile` of the model on the `cpu` target (ONNX Runtime; cached under
benchmarks/.cache/luts), then for every (budget, method, seed) an ordinary
`iee-deploy train --latency-ratio R --target cpu --lut ... --method {iee,halp}` (printed and
recorded) in its own run folder, and `build_engine` (ONNX Runtime) of the physically pruned model
beside the dense one. Finished runs (summary.json) and engines (engine.json) are skipped when the
script runs again; an interrupted run continues from its checkpoint. Both methods get the same
model, data (the class-balanced subset of benchmarks.unstructured), augmentation, optimizer,
epochs, budget and update period (IEE H = J = Q = h, HALP prune interval 3h).

On the cpu target ONNX Runtime's convolutions work in 16-channel blocks, so resnet20's smallest
sub-network is about 0.6 of the dense latency: the default budgets are 0.7 and 0.85 of the dense
model's predicted latency (`iee-deploy train` refuses an infeasible budget in one line, naming the
smallest achievable latency).

Writes benchmarks/results/structured[_quick].md, .json and .png (top-1 vs measured latency).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import (
    CACHE,
    RESULTS,
    ROOT,
    header,
    header_markdown,
    markdown_table,
    mean_std,
    measured_sizing,
    run_parallel,
    shown_command,
    single_thread_env,
    train_run,
    write_results,
)
from benchmarks.structured_fashion_mnist import TOLERANCE
from benchmarks.unstructured import Mode, add_run_options, prepare_data
from iee_deploy.deploy.build import build_engine
from runtime.timing import TimingConfig

METHODS = ("iee", "halp")
# h: IEE H = J = Q; HALP prune interval 3h (the same structure-update period)
QUICK = Mode("quick", train_per_class=200, val_per_class=50, epochs=2, h=5, seeds=1, ablation_seeds=0)
FULL = Mode("full", train_per_class=1000, val_per_class=200, epochs=10, h=20, seeds=3, ablation_seeds=0)


@dataclass(frozen=True)
class Run:
    method: str
    ratio: float  # latency budget Psi as a fraction of the dense model's predicted latency
    seed: int

    @property
    def folder(self) -> str:
        return f"r{round(100 * self.ratio)}/{self.method}/seed{self.seed}"


def profile_lut(model: str, log: list[str]) -> Path:
    """The cpu-target LUT of `model` at 32 px (profiled once into benchmarks/.cache/luts)."""
    lut = CACHE / "luts" / f"cpu-{model}-32.csv"
    cmd = ["python", "-m", "iee_deploy", "profile", "--target", "cpu", "--model", model, "--num-classes", "10",
           "--resolution", "32", "--out", str(lut.relative_to(ROOT))]
    log.append(shown_command(cmd))
    if not lut.with_suffix(".json").is_file():
        lut.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, *cmd[1:]], env=single_thread_env(), cwd=ROOT, check=True)
    return lut


def execute(run: Run, mode: Mode, data: Path, lut: Path, args: argparse.Namespace) -> str:
    """Train (or resume, or skip) one run; return its command line."""
    out = Path(args.runs) / mode.name / run.folder
    period = ["--hjq", f"{mode.h},{mode.h},{mode.h}"] if run.method == "iee" else ["--delta-t", str(3 * mode.h)]
    cmd = ["python", "-m", "iee_deploy", "train", "--method", run.method, "--model", args.model, "--dataset", "cifar10",
           "--data-dir", str(data.relative_to(ROOT)), "--target", "cpu", "--lut", str(lut.relative_to(ROOT)),
           "--latency-ratio", f"{run.ratio:g}", "--epochs", str(mode.epochs), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--seed", str(run.seed), *period, "--out", str(out), "--no-progress"]
    return train_run(cmd, out)


def measure(run: Run, mode: Mode, shown: str, lut_meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the ONNX Runtime engines of one finished run; return its row."""
    out = Path(args.runs) / mode.name / run.folder
    engine_dir = out.parent / f"{out.name}-engine"
    if not (engine_dir / "engine.json").is_file():
        build_engine(out, engine_dir, backend="onnxruntime", batch=lut_meta["batch"],
                     timing=TimingConfig(min_seconds=args.min_seconds))
    s = json.loads((out / "summary.json").read_text())
    e = json.loads((engine_dir / "engine.json").read_text())
    lat, pruned, dense = s["latency"], e["pruned"]["timing"], e["dense"]["timing"]
    return {**asdict(run), "command": shown, "folder": str(out), "val_acc": s["val_acc"],
            "best_val_acc": s["best_val_acc"], "budget_ms": lat["budget_ms"], "predicted_ms": lat["predicted_ms"],
            "dense_predicted_ms": lat["dense_ms"], "measured_min_ms": pruned["min_ms"],
            "measured_median_ms": pruned["median_ms"], "dense_measured_min_ms": dense["min_ms"],
            "dense_measured_median_ms": dense["median_ms"],
            "error": (pruned["min_ms"] - lat["predicted_ms"]) / lat["predicted_ms"],
            "measured_ratio": pruned["min_ms"] / dense["min_ms"],
            "within_1p1_budget": pruned["min_ms"] <= (1 + TOLERANCE) * lat["budget_ms"],
            "params": e["pruned"]["params"], "dense_params": e["dense"]["params"],
            "train_flops_relative": s["flops"]["train_relative"], "seconds": s["seconds"], "steps": s["steps"],
            "prunes": s["structure"]["prunes"], "grows": s["structure"]["grows"], "settings": s["settings"]}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of every (budget, method)."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["ratio"], r["method"])].append(r)
    table = []
    for (ratio, method), rs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        stats = {key: mean_std([r[key] for r in rs]) for key in
                 ("val_acc", "measured_min_ms", "measured_median_ms", "predicted_ms", "train_flops_relative", "params",
                  "seconds", "dense_measured_min_ms", "measured_ratio", "error")}
        table.append({"ratio": ratio, "method": method, "seeds": len(rs), "budget_ms": rs[0]["budget_ms"],
                      **{k: m for k, (m, _) in stats.items()}, **{f"{k}_std": sd for k, (_, sd) in stats.items()},
                      "within_1p1_budget": all(r["within_1p1_budget"] for r in rs)})
    return table


def plot(rows: list[dict[str, Any]], table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"iee": "C2", "halp": "C1"}
    for method in METHODS:
        picked = [r for r in rows if r["method"] == method]
        ax.scatter([r["measured_ratio"] for r in picked], [100 * r["val_acc"] for r in picked], color=colors[method],
                   alpha=0.35, s=18)
        cells = [t for t in table if t["method"] == method]
        ax.errorbar([t["measured_ratio"] for t in cells], [100 * t["val_acc"] for t in cells],
                    xerr=[t["measured_ratio_std"] for t in cells], yerr=[100 * t["val_acc_std"] for t in cells],
                    color=colors[method], marker="o", capsize=3, label=f"{method} (mean +- std over seeds)")
    for t in table:
        if t["method"] == METHODS[0]:
            ax.axvline(t["ratio"], color="grey", ls="--", lw=0.8)
            ax.annotate(f"Psi = {t['ratio']:g} x dense", (t["ratio"], ax.get_ylim()[0]), fontsize=7, rotation=90,
                        va="bottom", ha="right", color="grey")
    ax.set(xlabel="measured latency / dense latency (ONNX Runtime, fastest batch, timed side by side)",
           ylabel="top-1 (%)", title="top-1 vs measured latency of the physically pruned model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(record: dict[str, Any], png: str) -> str:
    mode, args, meta, lut = record["mode"], record["args"], record["meta"], record["lut"]
    m = record["mode_settings"]
    steps = record["rows"][0]["steps"]
    table = markdown_table(
        ["budget Psi", "method", "seeds", "top-1 final (mean +- std)", "predicted ms", "measured ms min (mean +- std)",
         "measured ms median", "measured min <= 1.1 Psi", "measured / dense (min, side by side)",
         "measured vs predicted", "params", "train FLOPs x dense", "wall s / run"],
        [[f"{t['ratio']:g} x dense = {t['budget_ms']:.3f} ms", t["method"], t["seeds"],
          f"{100 * t['val_acc']:.2f} +- {100 * t['val_acc_std']:.2f}", f"{t['predicted_ms']:.3f}",
          f"{t['measured_min_ms']:.3f} +- {t['measured_min_ms_std']:.3f}", f"{t['measured_median_ms']:.3f}",
          "yes" if t["within_1p1_budget"] else "no", f"{t['measured_ratio']:.3f} +- {t['measured_ratio_std']:.3f}",
          f"{100 * t['error']:+.1f}%", f"{t['params']:,.0f}", f"{t['train_flops_relative']:.3f}",
          f"{t['seconds']:.0f}"] for t in record["table"]])
    dense_min, dense_std = mean_std([r["dense_measured_min_ms"] for r in record["rows"]])
    dense_pred = record["rows"][0]["dense_predicted_ms"]
    ratios = sorted({t["ratio"] for t in record["table"]}, reverse=True)
    lines = [
        f"# Structured IEE vs HALP under CPU latency budgets on CIFAR-10 (JPEG copy) ({mode['name']} mode)", "",
        *header_markdown(meta, mode["name"] + (" (the sizes below; not the full benchmark)" if mode["name"] == "quick"
                                                else "")), "",
        "**Data caveat.** The images come from `cifar10-jpeg.tar.gz`: labels and class order are exact, pixels are JPEG "
        "(quality ~75) copies of the originals. These numbers compare methods side by side on the same data; never "
        "compare them with published CIFAR-10 results.", "",
        f"Setup: {args['model']} at 32 px; a class-balanced subset of {10 * m['train_per_class']:,} training images "
        f"({m['train_per_class']} per class) and {10 * m['val_per_class']:,} test images for validation; {m['epochs']} "
        f"epochs ({steps} steps) of batch {args['batch_size']}, SGD lr {args['lr']} (momentum 0.9, wd 5e-4, cosine), "
        "random crop (4 px padding) + flip for both methods. Budgets Psi = "
        f"{' and '.join(f'{r:g}' for r in ratios)} x the dense model's predicted latency ({dense_pred:.3f} ms) on the "
        f"`cpu` target LUT (ONNX Runtime, batch {lut['batch']}, {lut['precision']}, {lut['threads']} thread, LUT "
        f"statistic `{lut['statistic']}`, channel block {lut['grid_align']}). IEE starts from a random Theta_K at Psi "
        f"with H = J = Q = {m['h']}; HALP prunes the dense model down to Psi with its exponential schedule, one prune "
        f"every {3 * m['h']} steps; both stop changing the structure at 3/4 of training. Seeds 0..{m['seeds'] - 1}; "
        f"each run used 1 torch thread, {args['jobs']} runs at a time.", "",
        "Measured = `build_engine` (ONNX Runtime session of the physically pruned model, >= "
        f"{args['min_seconds']:g} s of timing, dense model timed alternately beside it); `min` is the fastest batch "
        "(the statistic the cpu LUT predicts), `median` the typical one. Engines were built after all training had "
        f"finished, one at a time, on a machine shared with other jobs. Dense model measured: {dense_min:.3f} +- "
        f"{dense_std:.3f} ms (min). Train FLOPs: the trainer's count per step over 3 x dense forward per sample "
        "(from each run's summary.json). "
        f"The LUT predicts the dense model at {dense_pred:.3f} ms; its measurement differs by "
        f"{100 * (dense_min / dense_pred - 1):+.1f}% (the LUT is profiled in about a second, so a busy moment of the shared machine shifts it as a "
        "whole): `measured / dense`, timed side by side, is the figure to compare with the budget ratio, as it does "
        "not depend on the LUT's absolute level.", "",
        *table, "",
        f"![top-1 vs measured latency relative to dense]({png})", "",
        "Commands (run from the repository root); every run folder under "
        f"`{args['runs']}/{mode['name']}/` holds config.json, metrics.jsonl, summary.json and, beside it, "
        "`seedN-engine/engine.json` (the ONNX models and timings):", "",
        *[f"    {c}" for c in record["commands"]],
        *[f"    {r['command']}" for r in record["rows"] if r["seed"] == 0], "",
        "## Sizing of the full mode", "",
        f"Full mode: {10 * FULL.train_per_class:,} training images, {10 * FULL.val_per_class:,} validation images, "
        f"{FULL.epochs} epochs ({FULL.epochs * (FULL.train_per_class * 10 // 64)} steps of 64), h = {FULL.h} (structure "
        f"update every {3 * FULL.h} steps), {FULL.seeds} seeds: 2 budgets x 2 methods x 3 seeds = 12 runs. Why: "
        "resnet20 takes about 0.2 s per batch-64 step on one idle core of this machine, so 12 runs x ~1,560 steps, "
        "two at a time, is about 35 min of training on a quiet machine (plus evaluation, JPEG decoding and 12 x 2 "
        "engine timings), leaving room for a shared machine inside 90 minutes. resnet20 rather than resnet56: the "
        "budgets cut channels, not depth, and resnet56 would take ~3x as long per step, leaving ~3 epochs. "
        f"{measured_sizing(record['rows'], args['jobs'], 10 * m['val_per_class'])} Budgets 0.7 and 0.85: "
        "resnet20's smallest sub-network on this target is ~0.6 of dense (16-channel blocks), so lower ratios are infeasible; a wider model (wrn22_2) would allow lower ratios at ~4x the cost.", "",
    ]
    if mode["name"] == "quick":
        lines += ["**This file is from the quick mode**: 2,000 training images and 2 epochs (one seed) are far too "
                  "little for the methods to separate. It shows the pipeline and the table's shape, not which method "
                  "is better.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_run_options(parser, QUICK, "runs/bench_structured")
    parser.add_argument("--ratios", default="0.85,0.7",
                        help="latency budgets, comma-separated fractions of the dense model's predicted latency")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="engine timing: seconds per model (s)")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    meta = header(1, "torchvision", "onnxruntime", "matplotlib")
    data = prepare_data(mode)
    commands: list[str] = []
    lut = profile_lut(args.model, commands)
    lut_meta = json.loads(lut.with_suffix(".json").read_text())
    runs = [Run(method, float(r), seed) for seed in range(mode.seeds) for r in args.ratios.split(",") for method in METHODS]
    shown = run_parallel(lambda run: execute(run, mode, data, lut, args), runs, args.jobs, "training runs")
    rows = [measure(run, mode, cmd, lut_meta, args) for run, cmd in zip(tqdm(runs, desc="engines"), shown)]
    table = aggregate(rows)
    name = "structured_quick" if args.quick else "structured"
    record = {"meta": meta, "mode": {"name": mode.name}, "mode_settings": asdict(mode), "args": vars(args),
              "data": str(data.relative_to(ROOT)), "commands": commands,
              "lut": {k: lut_meta[k] for k in ("model", "resolution", "batch", "precision", "target", "backend", "threads",
                                               "statistic", "grid_step", "grid_align", "calibration")},
              "table": table, "rows": rows}
    plot(rows, table, RESULTS / f"{name}.png")
    text = markdown(record, f"{name}.png")
    print(text)
    write_results(name, record, text)


if __name__ == "__main__":
    main()
