"""Structured IEE vs HALP under CPU latency budgets on CIFAR-10 (JPEG copy), as the paper's Table 1.

    PYTHONPATH=. python -m benchmarks.structured            # full mode (sized for ~90 min on 2 cores)
    PYTHONPATH=. python -m benchmarks.structured --quick    # minutes: small subset, 1 seed, same table shape
    PYTHONPATH=. python -m benchmarks.structured --device cuda --train-only --jobs 10  # train every run on a GPU
    PYTHONPATH=. python -m benchmarks.structured --device cuda                        # then here: engines, results

Two comparisons, every run an ordinary `iee-deploy` command (printed and recorded):

- **Pretrained** (Table 1, upper half). One dense model is trained once (`train --sparsity 0`) and
  shared: HALP and IEE both start from its checkpoint, with the same epochs, data, budget Psi and
  seeds. HALP prunes it down to Psi with its exponential latency schedule (one prune every dT steps,
  the last at the end of its window `prune_end`). IEE descends on exactly that schedule (the same
  steps, the same latency goals; checked from the run folders) and then runs its own updates, with
  the paper's structured schedule: exponential Omega_t, updates ending early (`update_end` twice
  HALP's window, `descent` 0.5), H, J, Q from the library's short-run rule.
- **Plateau check**: HALP fine-tuned for 0.75 E epochs (its own schedule, scaled) beside HALP at E,
  pretrained, at the first budget, paired by seed: within 0.3 points, the fine-tuning has plateaued.
- **From scratch** (Table 1, lower half), at equal training FLOPs. HALP prunes a randomly
  initialised dense model; IEE starts from a random Theta_K at Psi and costs less per epoch, so
  besides IEE at HALP's epochs there is IEE given the epochs that match HALP's measured training
  FLOPs (the cheaper method gets the epochs that match, as the paper's train-cost columns do).

Every run is profiled against one `iee-deploy profile` LUT of the `cpu` target (ONNX Runtime;
cached under benchmarks/.cache/luts) and its physically pruned model is timed by `build_engine`
beside the dense one. Finished runs (summary.json) and engines (engine.json) are skipped when the
script runs again; an interrupted run continues from its checkpoint. Differences are paired by seed
(the same data order and random choices), with 95% t-intervals.

On the cpu target ONNX Runtime's convolutions work in 16-channel blocks, so resnet20's smallest
sub-network is about 0.6 of the dense latency: the default budgets are 0.7 and 0.85 of the dense
model's predicted latency.

`--dense-epochs D` and `--epochs E` lengthen the dense model's training and every pruning run's, and
`--train-per-class N` sets the training images (their run folders and results get a `-nN`/`-dD`/`-eE`
suffix). `--device cuda` trains every run on the
GPU (bf16 autocast; run folders and results get a `-cuda` suffix, never mixed with CPU runs). The
budgets come from this machine's `cpu` LUT and the engines are timed on this machine's CPU, so a
GPU machine only trains (`--train-only`); the finished run folders come back here, where the same
command without `--train-only` times the engines and writes the results (it needs no GPU once every
run has finished).

Writes benchmarks/results/structured[_quick][-nN][-dD][-eE][-cuda].md, .json and .png (top-1 vs measured latency).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE,
    PLATEAU_POINTS,
    RESULTS,
    ROOT,
    add_run_options,
    budget_folder,
    cifar10_subset,
    finished,
    format_difference,
    header,
    header_markdown,
    markdown_table,
    mean_std,
    measured_sizing,
    paired_difference,
    plateaued,
    run_parallel,
    setting_suffix,
    shown_command,
    single_thread_env,
    train_run,
    write_results,
)
from benchmarks.structured_fashion_mnist import TOLERANCE
from iee_deploy.deploy.build import build_engine
from iee_deploy.errors import UserError
from iee_deploy.io import check_writable
from iee_deploy.methods.schedule import STRUCTURED_UPDATE_END
from iee_deploy.runs import RunFolder
from runtime.progress import progress
from runtime.timing import TimingConfig


@dataclass(frozen=True)
class Mode:
    """How big the benchmark is: data, schedule and seeds."""

    name: str
    train_per_class: int  # training images per class (of 5,000)
    val_per_class: int  # test images per class (of 1,000)
    dense_epochs: int  # the shared dense model's training
    epochs: int  # every pruning run (pretrained: fine-tuning from the dense model)
    seeds: int
    prune_end: float  # HALP's pruning window (and IEE's descent), as a fraction of training
    delta_t: int  # HALP's prune interval (and IEE's descent's)


QUICK = Mode("quick", train_per_class=200, val_per_class=50, dense_epochs=2, epochs=2, seeds=1, prune_end=0.25,
             delta_t=3)
FULL = Mode("full", train_per_class=1000, val_per_class=200, dense_epochs=15, epochs=10, seeds=3,
            prune_end=STRUCTURED_UPDATE_END, delta_t=10)


@dataclass(frozen=True)
class Run:
    setting: str  # pretrained | scratch
    label: str  # halp | iee | iee equal FLOPs
    ratio: float  # latency budget Psi as a fraction of the dense model's predicted latency
    seed: int

    @property
    def method(self) -> str:
        return self.label.split()[0]

    @property
    def folder(self) -> str:
        return f"{self.setting}/{budget_folder(self.ratio)}/{self.label.replace(' ', '_')}/seed{self.seed}"


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


def carry(folder: Path, data: Path, lut: Path) -> None:
    """Copy the data subset and LUT a run of this mode reads into `folder`, laid out as CACHE is.

    A GPU machine copies `folder` into its CACHE (tools/gpu_structured.sh) and so trains on exactly
    these images against exactly this LUT's budgets, without the archive or a profile.
    """
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(data, folder / data.relative_to(CACHE))
    (folder / "luts").mkdir(parents=True)
    for part in (lut, lut.with_suffix(".json")):
        shutil.copy2(part, folder / "luts" / part.name)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {data.name} and {lut.name} ({size / 2**20:.1f} MiB)")


def base_command(data: Path, args: argparse.Namespace, epochs: float, seed: int) -> list[str]:
    """`iee-deploy train` with what every run shares: model, data, optimizer, device; the run's epochs and seed."""
    return ["python", "-m", "iee_deploy", "train", "--model", args.model, "--dataset", "cifar10", "--data-dir",
            str(data.relative_to(ROOT)), "--epochs", f"{epochs:g}", "--batch-size", str(args.batch_size), "--lr",
            str(args.lr), "--seed", str(seed), *(["--device", args.device] if args.device != "cpu" else [])]


def dense_model(mode: Mode, data: Path, args: argparse.Namespace) -> tuple[Path, str]:
    """Train (or reuse) the one dense model every pretrained run starts from; return its checkpoint and command."""
    out = Path(args.runs) / mode.name / "dense"
    cmd = [*base_command(data, args, mode.dense_epochs, 0), "--method", "static", "--sparsity", "0",
           "--out", str(out), "--no-progress"]
    if args.finished_only and not finished(out):
        raise SystemExit(f"--finished-only: the dense model {out} has not finished; run without --finished-only first")
    return out / "final_model.pt", train_run(cmd, out)


def execute(run: Run, mode: Mode, data: Path, lut: Path, checkpoint: Path, epochs: float,
            args: argparse.Namespace) -> str:
    """Train (or resume, or skip) one run; return its command line."""
    out = Path(args.runs) / mode.name / run.folder
    window = ["--update-end", f"{mode.prune_end:.6g}", "--delta-t", str(mode.delta_t)] if run.method == "halp" else \
        ["--update-end", f"{2 * mode.prune_end:.6g}", "--descent", "0.5", "--delta-t", str(mode.delta_t)] \
        if run.setting == "pretrained" else ["--update-end", f"{mode.prune_end:.6g}"]
    start = ["--checkpoint", str(checkpoint)] if run.setting == "pretrained" else []
    cmd = [*base_command(data, args, epochs, run.seed), "--method", run.method, "--target", "cpu",
           "--lut", str(lut.relative_to(ROOT)), "--latency-ratio", f"{run.ratio:g}", *window, *start, "--out", str(out),
           "--no-progress"]
    return train_run(cmd, out)


def trained(run: Run, mode: Mode, shown: str, args: argparse.Namespace) -> dict[str, Any]:
    """One finished run's row from its run folder: what training gave (no engine)."""
    out = RunFolder(Path(args.runs) / mode.name / run.folder)
    s = json.loads((out / RunFolder.SUMMARY).read_text())  # finished: the summary is there
    lat = s["latency"]
    return {**asdict(run), "command": shown, "folder": str(out.path), "val_acc": s["val_acc"], "epochs": s["epochs"],
            "best_val_acc": s["best_val_acc"], "budget_ms": lat["budget_ms"], "predicted_ms": lat["predicted_ms"],
            "dense_predicted_ms": lat["dense_ms"], "train_flops_relative": s["flops"]["train_relative"],
            "train_flops": s["flops"]["train_total"], "seconds": s["seconds"], "steps": s["steps"],
            "prune_steps": [r["step"] for r in out.updates() if r["event"] == "prune"],
            "grows": s["structure"]["grows"], "settings": s["settings"]}


def measure(row: dict[str, Any], lut_meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the ONNX Runtime engines of one finished run, on this machine's CPU; its row with them."""
    out = Path(row["folder"])
    engine_dir = out.parent / f"{out.name}-engine"
    if not (engine_dir / "engine.json").is_file():
        build_engine(out, engine_dir, backend="onnxruntime", batch=lut_meta["batch"],
                     timing=TimingConfig(min_seconds=args.min_seconds))
    e = json.loads((engine_dir / "engine.json").read_text())
    pruned, dense = e["pruned"]["timing"], e["dense"]["timing"]
    return {**row, "measured_min_ms": pruned["min_ms"], "measured_median_ms": pruned["median_ms"],
            "dense_measured_min_ms": dense["min_ms"], "measured_ratio": pruned["min_ms"] / dense["min_ms"],
            "within_1p1_budget": pruned["min_ms"] <= (1 + TOLERANCE) * row["budget_ms"],
            "params": e["pruned"]["params"]}


def matched_epochs(rows: list[dict[str, Any]], epochs: int) -> float:
    """IEE's epochs at HALP's training FLOPs (scratch): epochs x HALP's FLOPs / IEE's, over all budgets and seeds."""
    halp = [r["train_flops"] for r in rows if r["label"] == "halp"]
    iee = [r["train_flops"] for r in rows if r["label"] == "iee"]
    return round(epochs * mean_std(halp)[0] / mean_std(iee)[0], 2)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of every (setting, budget, arm), and paired differences to HALP."""
    groups: dict[tuple[str, float, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        groups[(r["setting"], r["ratio"], r["label"])][r["seed"]] = r
    table = []
    for (setting, ratio, label), by_seed in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        rs = list(by_seed.values())
        halp = groups[(setting, ratio, "halp")]
        seeds = sorted(set(by_seed) & set(halp))
        stats = {key: mean_std([r[key] for r in rs]) for key in
                 ("val_acc", "measured_min_ms", "predicted_ms", "train_flops_relative", "train_flops", "params",
                  "measured_ratio", "seconds", "epochs")}
        table.append({"setting": setting, "ratio": ratio, "label": label, "seeds": len(rs),
                      "budget_ms": rs[0]["budget_ms"], **{k: m for k, (m, _) in stats.items()},
                      **{f"{k}_std": sd for k, (_, sd) in stats.items()},
                      "within_1p1_budget": all(r["within_1p1_budget"] for r in rs),
                      "vs_halp": None if label == "halp" or not seeds else paired_difference(
                          [by_seed[s]["val_acc"] for s in seeds], [halp[s]["val_acc"] for s in seeds])})
    return table


PLATEAU_LABEL = "halp 0.75E"  # HALP fine-tuned for 0.75 E (pretrained, the first budget): the plateau check


def plateau(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """HALP at 0.75 E minus HALP at E (pretrained, paired): plateaued when the mean is within PLATEAU_POINTS."""
    row = next((t for t in table if t["setting"] == "pretrained" and t["label"] == PLATEAU_LABEL), None)
    if row is None or row["vs_halp"] is None:
        return None
    return {"ratio": row["ratio"], **row["vs_halp"], "plateaued": plateaued(row["vs_halp"])}


def descent_matches(rows: list[dict[str, Any]]) -> bool:
    """Pretrained: IEE's first prunes are HALP's, at the same steps (same budget and seed)."""
    halp = {(r["ratio"], r["seed"]): r["prune_steps"] for r in rows if r["setting"] == "pretrained" and r["label"] == "halp"}
    return all(r["prune_steps"][:len(halp[(r["ratio"], r["seed"])])] == halp[(r["ratio"], r["seed"])]
               for r in rows if r["setting"] == "pretrained" and r["label"] == "iee" and (r["ratio"], r["seed"]) in halp)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = {"halp": "C1", "iee": "C2", "iee equal FLOPs": "C0", PLATEAU_LABEL: "C7"}
    for ax, setting in zip(axes, ("pretrained", "scratch")):
        for label, color in colors.items():
            picked = [r for r in rows if r["setting"] == setting and r["label"] == label]
            if picked:
                ax.scatter([r["measured_ratio"] for r in picked], [100 * r["val_acc"] for r in picked], color=color,
                           label=label, s=22)
        ax.set(xlabel="measured latency / dense (ONNX Runtime, side by side)", title=setting)
        if any(r["setting"] == setting for r in rows):
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("top-1 (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(record: dict[str, Any], png: str) -> str:
    mode, args, meta, lut, m = record["mode"], record["args"], record["meta"], record["lut"], record["mode_settings"]
    quick = mode == "quick"
    diff = lambda d: "-" if d is None else format_difference(d)  # noqa: E731
    table = markdown_table(
        ["start", "budget Psi", "arm", "epochs", "seeds", "top-1 (mean +- std)", "top-1 - HALP (paired, 95% CI)",
         "measured / dense", "measured min <= 1.1 Psi", "params", "train FLOPs x dense", "train FLOPs (total)"],
        [[t["setting"], f"{t['ratio']:g} x dense = {t['budget_ms']:.3f} ms", t["label"], f"{t['epochs']:g}", t["seeds"],
          f"{100 * t['val_acc']:.2f} +- {100 * t['val_acc_std']:.2f}", diff(t["vs_halp"]),
          f"{t['measured_ratio']:.3f} +- {t['measured_ratio_std']:.3f}", "yes" if t["within_1p1_budget"] else "no",
          f"{t['params']:,.0f}", f"{t['train_flops_relative']:.3f}", f"{t['train_flops']:.3g}"]
         for t in record["table"]])
    p = record.get("plateau")
    check = "not run yet" if p is None else (
        f"HALP fine-tuned for 0.75 E minus HALP at E (pretrained, {p['ratio']:g} x dense, paired): "
        f"{format_difference(p)} points: " + (f"**plateaued** (within {PLATEAU_POINTS} points)" if p["plateaued"] else
                                              f"**NOT plateaued** (more than {PLATEAU_POINTS} points): the "
                                              "comparison still depends on how many fine-tuning steps it gets"))
    lines = [
        f"# Structured IEE vs HALP under CPU latency budgets on CIFAR-10 (JPEG copy), pretrained and from scratch "
        f"({mode} mode)", "",
        *header_markdown(meta, mode + (" (a pipeline check with the sizes below; not the benchmark)" if quick else "")), "",
        "**Data caveat.** The images come from `cifar10-jpeg.tar.gz`: labels and class order are exact, pixels are JPEG "
        "copies. These numbers compare methods side by side on the same data; never compare them with published "
        "CIFAR-10 results.", "",
        f"Setup: {args['model']} at 32 px; {10 * m['train_per_class']:,} training images ({m['train_per_class']} per "
        f"class), {10 * m['val_per_class']:,} test images for validation; batch {args['batch_size']}, SGD lr {args['lr']} "
        "(momentum 0.9, wd 5e-4, cosine), random crop + flip for every run. Budgets: fractions of the dense model's "
        f"predicted latency on the `cpu` LUT (ONNX Runtime, batch {lut['batch']}, {lut['threads']} thread, statistic "
        f"`{lut['statistic']}`). Seeds 0..{m['seeds'] - 1}, paired (same data order and random choices per seed)."
        + (" Every run (the dense model too) trained on a GPU with bf16 autocast (`--device cuda`; the GPU is named in "
           "the device log beside this file); the LUT and the engine timings are this machine's CPU." if
           args.get("device") == "cuda" else ""), "",
        f"- **Pretrained**: one dense model trained for {m['dense_epochs']} epochs (seed 0), shared. HALP and IEE "
        f"fine-tune it for {m['epochs']} epochs. HALP prunes to Psi every {m['delta_t']} steps in the first "
        f"{m['prune_end']:.4g} of training (exponential latency goals; {m['prune_end']:.4g} = the paper's structured "
        "window, epoch 5 of 130, in full mode). IEE descends on the same schedule "
        f"({'the same prune steps: checked' if record['descent_matches'] else 'PRUNE STEPS DIFFER'}) and then runs its "
        "updates (exponential Omega_t, H, J, Q from the short-run rule) in a window as long again; after that both "
        "only train.",
        f"- **From scratch**: HALP prunes a randomly initialised dense model with the same schedule, IEE starts from a "
        f"random Theta_K at Psi with its updates in the same window; IEE at HALP's {m['epochs']} epochs, and IEE at "
        + (f"{record['matched_epochs']:g} epochs, which match HALP's measured training FLOPs." if record["matched_epochs"]
           else "the epochs that match HALP's measured training FLOPs (not run yet: this file was written after an "
           "earlier phase; the runs go pretrained with the plateau check, then scratch, then equal FLOPs)."), "",
        "The dense model's own training (pretrained setting) is shared by both methods and not counted in their train "
        "FLOPs (the paper's '90 + 130' epochs).", "",
        f"**Plateau check**: {check}.", "",
        *table, "",
        f"![top-1 vs measured latency]({png})", "",
        f"Commands (run from the repository root; run folders under `{args['runs']}/{mode}/`):", "",
        *[f"    {c}" for c in record["commands"]],
        *[f"    {r['command']}" for r in record["rows"] if r["seed"] == 0], "",
        f"{measured_sizing(record['rows'], args['jobs'], 10 * m['val_per_class'])}", "",
        "## Sizing of the default full mode", "",
        ("" if quick or (m["train_per_class"], m["dense_epochs"], m["epochs"]) == (
            FULL.train_per_class, FULL.dense_epochs, FULL.epochs) else
         f"This file is not the default full mode: its size options give {10 * m['train_per_class']:,} training "
         f"images, a dense model of {m['dense_epochs']} epochs and {m['epochs']} epochs per run; its own training time "
         "is measured above. ")
        + f"The default full mode (no size options): {10 * FULL.train_per_class:,} training images, "
        f"{10 * FULL.val_per_class:,} validation images; a dense model of {FULL.dense_epochs} epochs; {FULL.epochs} "
        f"epochs per run ({FULL.epochs * (10 * FULL.train_per_class // args['batch_size']):,} steps of "
        f"{args['batch_size']}); {FULL.seeds} seeds x 2 budgets x (2 pretrained + 3 scratch) = 30 runs of about "
        f"{FULL.epochs} epochs and {FULL.seeds} plateau runs of {0.75 * FULL.epochs:g}, two at a time: about 80-90 min "
        "of training on a quiet 2-core machine (resnet20, ~0.2 s per step on one core), plus 30 x 2 engine timings.", "",
    ]
    if quick:
        lines += ["**Quick mode**: 2,000 training images and 2 epochs, far too little for the methods to separate. It "
                  "shows the pipeline and the tables' shape, not which method is better.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_run_options(parser, f"{10 * QUICK.train_per_class:,} training images, {QUICK.epochs} epochs, {QUICK.seeds} "
                    "seeds (a pipeline check, minutes)", "runs/bench_structured")
    parser.add_argument("--ratios", default="0.85,0.7",
                        help="latency budgets, comma-separated fractions of the dense model's predicted latency")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="engine timing: seconds per model (s)")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: report the runs that have finished (e.g. after stopping a long phase)")
    parser.add_argument("--dense-epochs", type=int, default=None,
                        help="the dense model's epochs instead of the mode's (run folders and results: -dD suffix)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="every pruning run's epochs E instead of the mode's (run folders and results: -eE suffix)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training images per class instead of the mode's (run folders and results: -nN suffix); "
                        "a smaller set plateaus in fewer epochs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="every run's training device (cuda: run folders and results get a -cuda suffix); "
                             "engines are always timed on this machine's CPU")
    parser.add_argument("--carry", default=None, metavar="DIR",
                        help="copy this mode's CIFAR-10 subset and cpu LUT into DIR (laid out as benchmarks/.cache) "
                        "for a GPU machine, then stop")
    parser.add_argument("--train-only", action="store_true",
                        help="train every phase and stop: no engines, no results (on a GPU machine, whose CPU is not "
                             "the LUT's)")
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    if (args.epochs is not None and args.epochs < 4) or (args.dense_epochs is not None and args.dense_epochs < 1):
        raise SystemExit("--epochs must be at least 4 (0.75 E is a run of its own) and --dense-epochs at least 1")
    if args.train_per_class is not None and not 1 <= args.train_per_class <= 5000:
        raise SystemExit(f"--train-per-class {args.train_per_class}: give 1 to 5000 (CIFAR-10 has 5,000 per class)")
    if args.carry:  # before a LUT is profiled or the archive unpacked
        try:
            check_writable(args.carry, "carry", folder=True)
        except UserError as err:
            raise SystemExit(str(err)) from None
    # a longer setting or another device: its own run folders and results (never mixed with the default's)
    suffix = setting_suffix(args.device, n=(args.train_per_class, base.train_per_class),
                            d=(args.dense_epochs, base.dense_epochs), e=(args.epochs, base.epochs))
    mode = replace(base, name=base.name + suffix, epochs=args.epochs or base.epochs,
                   dense_epochs=args.dense_epochs or base.dense_epochs,
                   train_per_class=args.train_per_class or base.train_per_class)
    meta = header(1, "torchvision", "onnxruntime", "matplotlib")
    data = cifar10_subset(mode.train_per_class, mode.val_per_class)
    ratios = [float(r) for r in args.ratios.split(",")]
    arms = [(seed, r, label) for seed in range(mode.seeds) for r in ratios for label in ("halp", "iee")]
    pretrained = [Run("pretrained", label, r, seed) for seed, r, label in arms]
    scratch = [Run("scratch", label, r, seed) for seed, r, label in arms]
    plateau_runs = [Run("pretrained", PLATEAU_LABEL, ratios[0], seed) for seed in range(mode.seeds)]
    equal_flops = [Run("scratch", "iee equal FLOPs", r, seed) for seed in range(mode.seeds) for r in ratios]
    if args.device == "cuda" and not args.finished_only and not args.carry:
        import torch

        folders = ["dense", *(run.folder for run in pretrained + scratch + plateau_runs + equal_flops)]
        if not all(finished(Path(args.runs) / mode.name / f) for f in folders) and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU is visible to torch and some runs have not finished; "
                             "use --device cpu, or --finished-only to report the finished runs")
    commands: list[str] = []
    lut = profile_lut(args.model, commands)
    lut_meta = json.loads(lut.with_suffix(".json").read_text())
    if args.carry:
        carry(Path(args.carry), data, lut)
        return
    checkpoint, dense_cmd = dense_model(mode, data, args)
    commands.append(dense_cmd)
    name = ("structured_quick" if args.quick else "structured") + suffix
    rows: list[dict[str, Any]] = []

    def phase(planned: list[tuple[Run, float]], desc: str, matched: float | None = None) -> None:
        """Train (each run for its epochs), time and report one phase; the results file is rewritten after
        every phase, so that an interrupted benchmark leaves the finished comparisons (pretrained first)
        on disk. `matched`: IEE's equal-FLOPs epochs, once known (the last phase)."""
        if args.finished_only:
            planned = [(run, e) for run, e in planned if finished(Path(args.runs) / mode.name / run.folder)]
        shown = run_parallel(lambda p: execute(p[0], mode, data, lut, checkpoint, p[1], args), planned, args.jobs, desc)
        done = [trained(run, mode, cmd, args) for (run, _), cmd in zip(planned, shown)]
        if args.train_only:
            rows.extend(done)
            print(f"{desc}: {len(done)} trained (--train-only: no engines, no results file)", flush=True)
            return
        rows.extend(measure(row, lut_meta, args) for row in progress(done, total=len(done), desc="engines", unit="engine"))
        record = {"meta": meta, "mode": mode.name, "mode_settings": asdict(mode), "args": vars(args),
                  "data": str(data.relative_to(ROOT)), "commands": commands, "matched_epochs": matched,
                  "descent_matches": descent_matches(rows),
                  "lut": {k: lut_meta[k] for k in ("model", "resolution", "batch", "precision", "target", "backend",
                                                   "threads", "statistic", "grid_step", "grid_align", "calibration")},
                  "table": aggregate(rows), "rows": rows}
        record["plateau"] = plateau(record["table"])
        plot(rows, RESULTS / f"{name}.png")
        text = markdown(record, f"{name}.png")
        print(text)
        write_results(name, record, text)

    # the pretrained comparison with its plateau check first, HALP at the first budget (E and 0.75 E) leading,
    # so that an interrupted benchmark has said early whether the fine-tuning plateaus
    planned = [(run, mode.epochs) for run in pretrained] + [(run, 0.75 * mode.epochs) for run in plateau_runs]
    phase(sorted(planned, key=lambda p: not (p[0].method == "halp" and p[0].ratio == ratios[0])),
          "pretrained runs and the plateau check")
    phase([(run, mode.epochs) for run in scratch], "scratch runs")
    scratch_rows = [r for r in rows if r["setting"] == "scratch"]
    if len(scratch_rows) < len(scratch):  # --finished-only before every scratch run finished: nothing to match yet
        print(f"equal-FLOPs runs: not planned ({len(scratch_rows)} of {len(scratch)} scratch runs have finished)")
        return
    epochs = matched_epochs(scratch_rows, mode.epochs)  # known once scratch is
    phase([(run, epochs) for run in equal_flops], "equal-FLOPs runs", matched=epochs)

if __name__ == "__main__":
    main()
