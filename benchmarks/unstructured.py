"""IEE vs RigL, SET, static and GMP at 80% and 90% ERK unstructured sparsity on CIFAR-10 (JPEG copy).

    PYTHONPATH=. python -m benchmarks.unstructured            # full mode (sized for ~90 min on 2 cores)
    PYTHONPATH=. python -m benchmarks.unstructured --quick    # minutes: tiny subset, 1 seed, same table shape

Every run is an ordinary `iee-deploy train` command (printed and recorded) with its own run folder
under `--runs`; a finished run (summary.json present) is skipped when the script is run again, an
interrupted one continues from its checkpoint (`--resume`), so a long benchmark never loses finished
work. All methods get the same model, data (a class-balanced subset), augmentation (random crop
with 4 px padding and horizontal flip), optimizer, epochs and update period (IEE H = J = Q = h,
RigL / SET / GMP dT = 3h), the same budget schedule (Omega_0 = 0.3, cosine, updates end at 3/4).
IEE's ablations (paper Table 4) run at 90%: no freeze (Theta_K trains during Reactivate &
Explore), J = 0 (H = 2h, J = 0, Q = h: the same period), zero init (grown weights start at zero).

Data: `../shared/data/cifar10-jpeg.tar.gz` (beside the repository) is unpacked once into
benchmarks/.cache/ (ignored by git); the subset is a tree of hard links to the first N images of
every class, so every method and seed sees the same class-balanced images.

Writes benchmarks/results/unstructured[_quick].md, .json and .png (accuracy per method; grown-weight
survival and IoU of Theta_K per update for IEE vs RigL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    train_run,
    write_results,
)
from iee_deploy.runs import RunFolder

ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES_PER_SET = 10
METHODS = ("iee", "rigl", "set", "static", "gmp")


@dataclass(frozen=True)
class Mode:
    """How big a benchmark is: data, schedule and seeds."""

    name: str
    train_per_class: int  # training images per class (of 5,000)
    val_per_class: int  # test images per class (of 1,000)
    epochs: int
    h: int  # IEE H = J = Q; RigL / SET / GMP dT = 3h
    seeds: int
    ablation_seeds: int


QUICK = Mode("quick", train_per_class=200, val_per_class=50, epochs=3, h=5, seeds=1, ablation_seeds=1)
FULL = Mode("full", train_per_class=1000, val_per_class=200, epochs=7, h=20, seeds=3, ablation_seeds=3)


def add_run_options(parser: argparse.ArgumentParser, quick: Mode, runs: str) -> None:
    """The options every CIFAR-10 training benchmark shares: mode, model, optimizer, parallelism, run folders."""
    parser.add_argument("--quick", action="store_true", help=f"{10 * quick.train_per_class:,} training images, "
                        f"{quick.epochs} epochs, {quick.seeds} seed (a few minutes)")
    parser.add_argument("--model", default="resnet20", help="zoo model (a CIFAR ResNet or wrn22_2)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time (each uses 1 torch thread)")
    parser.add_argument("--runs", default=runs, help="parent folder of the run folders")


@dataclass(frozen=True)
class Run:
    label: str  # the table's row name
    method: str
    sparsity: float
    seed: int
    extra: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return f"s{round(100 * self.sparsity)}/{self.label.replace(' ', '_').replace('=', '')}/seed{self.seed}"


def runs_of(mode: Mode, sparsities: tuple[float, ...]) -> list[Run]:
    """The benchmark's runs: every method at every sparsity, then IEE's ablations at 90%."""
    h = mode.h
    runs = [Run(m, m, s, seed) for seed in range(mode.seeds) for s in sparsities for m in METHODS]
    ablations = {"iee no freeze": ("--no-freeze",), "iee J=0": ("--hjq", f"{2 * h},0,{h}"),
                 "iee zero init": ("--grow-init", "zero")}
    runs += [Run(label, "iee", 0.9, seed, extra) for seed in range(mode.ablation_seeds) for label, extra in ablations.items()]
    return runs


def prepare_data(mode: Mode) -> Path:
    """The ImageFolder tree for `mode` under benchmarks/.cache (unpacked and linked once)."""
    full = CACHE / "cifar10-jpeg"
    if not (full / "test").is_dir():
        if not ARCHIVE.is_file():
            raise SystemExit(f"{ARCHIVE} is missing: the benchmark needs the shared CIFAR-10 JPEG archive")
        tmp = CACHE / "cifar10-jpeg.unpacking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"unpacking {ARCHIVE} into {CACHE}", file=sys.stderr, flush=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(full, ignore_errors=True)
        (tmp / "cifar10-jpeg").rename(full)
        tmp.rmdir()
    subset = CACHE / f"cifar10-jpeg-{mode.train_per_class}-{mode.val_per_class}"
    if subset.is_dir():
        return subset
    tmp = subset.with_name(subset.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, n in (("train", mode.train_per_class), ("test", mode.val_per_class)):
        for cls in sorted(p for p in (full / split).iterdir() if p.is_dir()):
            (tmp / split / cls.name).mkdir(parents=True)
            for image in sorted(cls.iterdir())[:n]:
                os.link(image, tmp / split / cls.name / image.name)
    tmp.rename(subset)
    return subset


def command(run: Run, mode: Mode, data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    h = mode.h
    period = {"iee": ["--hjq", f"{h},{h},{h}"], "static": []}.get(run.method, ["--delta-t", str(3 * h)])
    if "--hjq" in run.extra:
        period = []
    return ["python", "-m", "iee_deploy", "train", "--method", run.method, "--sparsity", f"{run.sparsity:g}",
            "--distribution", "erk", "--dataset", "cifar10", "--data-dir", str(data.relative_to(ROOT)), "--model",
            args.model, "--epochs", str(mode.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--seed", str(run.seed), *period, *run.extra, "--out", str(out), "--no-progress"]


def theta_k_share(settings: dict[str, Any], steps: int) -> float:
    """Share of the run's optimizer steps that train Theta_K.

    IEE's frozen Reactivate & Explore steps (Q of every H + J + Q, until the updates end) train
    only Theta_P; every other step of every method trains Theta_K.
    """
    if "q" not in settings or not settings["freeze"]:
        return 1.0
    return (steps - settings["updates"] * settings["q"]) / steps


def execute(run: Run, mode: Mode, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume, or skip) one training run; return its row."""
    out = Path(args.runs) / mode.name / run.folder
    shown = train_run(command(run, mode, data, out, args), out)
    s = json.loads((out / "summary.json").read_text())
    updates = RunFolder(out).updates()
    return {**asdict(run), "command": shown, "folder": str(out), "val_acc": s["val_acc"], "best_val_acc": s["best_val_acc"],
            "achieved_sparsity": s["sparsity"]["achieved"], "train_flops_relative": s["flops"]["train_relative"],
            "appendix_flops_relative": s["flops"]["appendix_relative"], "seconds": s["seconds"], "steps": s["steps"],
            "mean_survival": s["structure"]["mean_survival"], "settings": s["settings"],
            "theta_k_steps": theta_k_share(s["settings"], s["steps"]),
            "survival_curve": [(r["epoch"], r["survival"]) for r in updates
                               if r["event"] == "prune" and r.get("survival") is not None],
            "iou_curve": [(r["epoch"], r["iou"]) for r in updates if r["event"] == "grow" and r.get("iou") is not None]}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of every (sparsity, label)."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["sparsity"], r["label"])].append(r)
    table = []
    for (sparsity, label), rs in groups.items():
        acc, acc_std = mean_std([r["val_acc"] for r in rs])
        best, _ = mean_std([r["best_val_acc"] for r in rs])
        survival = [r["mean_survival"] for r in rs if r["mean_survival"] is not None]
        table.append({"sparsity": sparsity, "label": label, "seeds": len(rs), "val_acc": acc, "val_acc_std": acc_std,
                      "best_val_acc": best, "train_flops_relative": mean_std([r["train_flops_relative"] for r in rs])[0],
                      "mean_survival": mean_std(survival)[0] if survival else None,
                      "theta_k_steps": mean_std([r["theta_k_steps"] for r in rs])[0],
                      "seconds": mean_std([r["seconds"] for r in rs])[0]})
    return table


def mean_curve(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    """Per-update mean and std over seeds of a curve (x: epoch of the update)."""
    curves = [r[key] for r in rows if r[key]]
    n = min(len(c) for c in curves)
    xs = [curves[0][i][0] for i in range(n)]
    stats = [mean_std([c[i][1] for c in curves]) for i in range(n)]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def plot(rows: list[dict[str, Any]], table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, surv, iou) = plt.subplots(1, 3, figsize=(15, 4.2))
    sparsities = sorted({t["sparsity"] for t in table})
    labels = list(dict.fromkeys(t["label"] for t in table))
    width = 0.8 / len(sparsities)
    for k, s in enumerate(sparsities):
        cells = {t["label"]: t for t in table if t["sparsity"] == s}
        xs = [i + k * width for i, lab in enumerate(labels) if lab in cells]
        bars.bar(xs, [100 * cells[lab]["val_acc"] for lab in labels if lab in cells], width,
                 yerr=[100 * cells[lab]["val_acc_std"] for lab in labels if lab in cells], capsize=3,
                 label=f"{100 * s:.0f}% ERK")
    bars.set_xticks([i + width * (len(sparsities) - 1) / 2 for i in range(len(labels))], labels, rotation=30,
                    ha="right", fontsize=8)
    lows = [100 * t["val_acc"] for t in table]
    bars.set_ylim(max(0.0, min(lows) - 10), min(100.0, max(lows) + 5))
    bars.set(ylabel="top-1 (%)", title="final top-1, mean +- std over seeds")
    bars.legend(fontsize=8)
    for method, color in (("iee", "C2"), ("rigl", "C1")):
        picked = [r for r in rows if r["label"] == method and r["sparsity"] == 0.9]
        for axis, key in ((surv, "survival_curve"), (iou, "iou_curve")):
            if not any(r[key] for r in picked):
                continue
            xs, mean, std = mean_curve(picked, key)
            axis.errorbar(xs, [100 * m for m in mean], yerr=[100 * s for s in std], label=method, color=color,
                          marker="o", ms=3, capsize=2)
    surv.set(xlabel="epoch of the update", ylabel="%", title="90%: grown weights surviving the next update")
    iou.set(xlabel="epoch of the update", ylabel="%", title="90%: IoU of Theta_K with the previous update")
    surv.legend(fontsize=8)
    iou.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(record: dict[str, Any], png: str) -> str:
    mode, args, meta = record["mode"], record["args"], record["meta"]
    steps = record["rows"][0]["steps"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    table = markdown_table(
        ["sparsity", "method", "seeds", "top-1 final (mean +- std)", "top-1 best (mean)", "train FLOPs x dense",
         "grown-weight survival (mean)", "steps training Theta_K", "wall s / run"],
        [[f"{100 * t['sparsity']:.0f}%", t["label"], t["seeds"], f"{100 * t['val_acc']:.2f} +- {100 * t['val_acc_std']:.2f}",
          f"{100 * t['best_val_acc']:.2f}", f"{t['train_flops_relative']:.3f}", pct(t["mean_survival"]),
          pct(t["theta_k_steps"]), f"{t['seconds']:.0f}"] for t in record["table"]])
    curves = []
    for key, title in (("survival_curve", "grown-weight survival"), ("iou_curve", "IoU of Theta_K after grow")):
        for method in ("iee", "rigl"):
            picked = [r for r in record["rows"] if r["label"] == method and r["sparsity"] == 0.9 and r[key]]
            if picked:
                xs, mean, _ = mean_curve(picked, key)
                curves.append(f"- {method} {title} per update (epoch: %): "
                              + ", ".join(f"{x:.2f}: {100 * m:.1f}" for x, m in zip(xs, mean)))
    m = record["mode_settings"]
    lines = [
        f"# Unstructured sparsity on CIFAR-10 (JPEG copy): IEE vs RigL, SET, static, GMP ({mode['name']} mode)", "",
        *header_markdown(meta, mode["name"] + (" (the sizes below; not the full benchmark)" if mode["name"] == "quick"
                                                else "")), "",
        "**Data caveat.** The images come from `cifar10-jpeg.tar.gz`: labels and class order are exact, pixels are JPEG "
        "(quality ~75) copies of the originals (mean absolute error ~5.8/255). These numbers compare methods side by "
        "side on the same data; never compare them with published CIFAR-10 results.", "",
        f"Setup: {args['model']} at 32 px; a class-balanced subset of {10 * m['train_per_class']:,} training images "
        f"({m['train_per_class']} per class) and {10 * m['val_per_class']:,} test images for validation; {m['epochs']} epochs "
        f"({steps} steps) of batch {args['batch_size']}, SGD lr {args['lr']} (momentum 0.9, wd 5e-4, cosine), random crop "
        f"(4 px padding) + flip for every method; ERK layer densities; update period {3 * m['h']} steps for every "
        f"dynamic method (IEE H = J = Q = {m['h']}; RigL, SET, GMP dT = {3 * m['h']}); Omega_0 / alpha 0.3 with cosine "
        f"decay, no structure change after 3/4 of training. Seeds 0..{m['seeds'] - 1} (ablations: "
        f"0..{m['ablation_seeds'] - 1}); each run used 1 torch thread (OMP_NUM_THREADS=1), {args['jobs']} runs at a time. "
        "Train FLOPs: the trainer's count per step (sparse steps 3 x sparse forward; IEE explore steps dense forward "
        "+ backward; RigL's update steps a dense gradient) over 3 x dense forward per sample. Steps training "
        "Theta_K: IEE's frozen Reactivate & Explore steps train only Theta_P. Survival: share of the weights grown at "
        "an update still active after the next update's prune (paper Fig. 5b).", "",
        *table, "",
        f"![accuracy, survival and IoU]({png})", "",
        *curves, "",
        "Commands: every run is `iee-deploy train` with the options below and `--seed 0/1/2`; its folder under "
        f"`{args['runs']}/{mode['name']}/` holds config.json, metrics.jsonl and summary.json.", "",
        *[f"    {r['command']}" for r in record["rows"] if r["seed"] == 0], "",
        "## Sizing of the full mode", "",
        f"Full mode: {10 * FULL.train_per_class:,} training images, {10 * FULL.val_per_class:,} validation images, "
        f"{FULL.epochs} epochs ({FULL.epochs * (FULL.train_per_class * 10 // 64)} steps of 64), H = J = Q = {FULL.h} "
        f"(period {3 * FULL.h} steps, {int(0.75 * FULL.epochs * FULL.train_per_class * 10 // 64) // (3 * FULL.h)} "
        f"updates), {FULL.seeds} seeds: 2 sparsities x 5 methods + 3 ablations = 39 runs. Why: resnet20 (0.27 M "
        "weights, the CIFAR ResNet of the paper's tables) takes about 0.2 s per batch-64 step on one idle core of this "
        "machine, so 39 runs x ~1,100 steps, two at a time, is about 75-85 min of training plus evaluation and JPEG "
        "decoding, inside the 90-minute budget. A wider model (wrn22_2, ~1.1 M weights, ~4x the FLOPs) would leave "
        "~1 epoch per run, too few updates for the dynamic methods to differ. 10,000 training images x 7 epochs is the "
        "largest budget that fits and still gives 13 structure updates per run. "
        f"{measured_sizing(record['rows'], args['jobs'], 10 * m['val_per_class'])} The estimate assumes a quiet "
        "machine; with other jobs on the 2 cores it takes proportionally longer "
        "(interrupt and re-run: finished runs are kept).", "",
    ]
    if mode["name"] == "quick":
        lines += ["**This file is from the quick mode**: 2,000 training images and 3 epochs are far too little for "
                  "the methods to separate (accuracies of 25-40%, one seed). It shows the pipeline and the tables' "
                  "shape, not which method is better.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_run_options(parser, QUICK, "runs/bench_unstructured")
    parser.add_argument("--only", default=None,
                        help="comma-separated method labels to run now (e.g. iee,rigl); the table shows every finished run")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    meta = header(1, "torchvision", "matplotlib")
    data = prepare_data(mode)
    runs = runs_of(mode, (0.8, 0.9))
    if args.only:
        wanted = set(args.only.split(","))
        runs = [r for r in runs if r.label in wanted] + \
            [r for r in runs if r.label not in wanted and (Path(args.runs) / mode.name / r.folder / "summary.json").is_file()]
    rows = run_parallel(lambda run: execute(run, mode, data, args), runs, args.jobs, "runs")
    table = aggregate(rows)
    name = "unstructured_quick" if args.quick else "unstructured"
    record = {"meta": meta, "mode": {"name": mode.name}, "mode_settings": asdict(mode), "args": vars(args),
              "data": str(data.relative_to(ROOT)), "table": table, "rows": rows}
    plot(rows, table, RESULTS / f"{name}.png")
    text = markdown(record, f"{name}.png")
    print(text)
    write_results(name, record, text)


if __name__ == "__main__":
    main()
