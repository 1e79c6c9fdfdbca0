"""How IEE's short-run period should be split: a paired sweep of `iee_period`'s two knobs against static.

    PYTHONPATH=. python -m benchmarks.hjq_sweep              # the committed sweep (~30 min on one core)
    PYTHONPATH=. python -m benchmarks.hjq_sweep --quick      # one seed, one length: a pipeline check

When the paper's period (H = J = Q = 150) does not fit a run, `iee_deploy.methods.schedule.iee_period`
chooses H, J, Q from the run's length only: the period is the longest with `min_updates` updates,
split as Q = J = round(`explore_share` x period) and H = the rest. This sweep trains IEE with each
candidate (min_updates, explore_share) and static sparse training (the reference IEE must not fall
behind: it is the same sparse network without any update) on a small, fast problem at two run
lengths, with paired seeds (the same initial weights, mask and data order per seed across arms),
and reports each arm's difference to static and to the old rule (equal thirds) with 95% t-intervals.
The library's `SHORT_RUN_EXPLORE_SHARE` and `MIN_UPDATES` are read from this file's results.

Runs train in this process, one after another, single-threaded; each run has its own folder under
`--runs` and a finished one (summary.json) is skipped when the script is run again, so it can be
stopped and restarted. The results files are rewritten after every run, so a partial sweep is
still a (smaller) paired record.

Writes benchmarks/results/hjq_sweep[_quick].md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    SHARED,
    fashion_mnist_root,
    format_difference,
    header,
    header_markdown,
    markdown_table,
    mean_std,
    paired_difference,
    write_results,
)
from iee_deploy.methods import SparsityConfig
from iee_deploy.methods.schedule import UNSTRUCTURED_UPDATE_END, iee_period
from iee_deploy.train.config import TrainConfig
from iee_deploy.train.trainer import Trainer


@dataclass(frozen=True)
class Arm:
    """One sweep arm: static, or IEE with H, J, Q from `iee_period(..., min_updates, explore_share)`."""

    label: str
    min_updates: int | None = None  # None: static
    explore_share: float | None = None


ARMS = (
    Arm("static"),
    Arm("iee thirds, 4 updates (old rule)", 4, 1 / 3),
    Arm("iee 1/6, 4 updates", 4, 1 / 6),
    Arm("iee 1/10, 4 updates", 4, 1 / 10),
    Arm("iee 1/6, 8 updates", 8, 1 / 6),
)
REFERENCE = ARMS[1].label  # the old default: an equal split


@dataclass(frozen=True)
class Mode:
    name: str
    lengths: tuple[tuple[int, int], ...]  # (epochs, seeds) of every run length, in the order they run
    subset: int  # training images (validation: subset / 5)
    resolution: int


QUICK = Mode("quick", lengths=((2, 1),), subset=1000, resolution=8)
FULL = Mode("full", lengths=((10, 3),), subset=2000, resolution=8)
"""15 runs of 310 steps (the length of the issue's Fashion-MNIST finding), ~20 min of one idle core."""


def config_of(arm: Arm, epochs: int, seed: int, mode: Mode, data: Path) -> TrainConfig:
    base = TrainConfig(model="resnet20", dataset="fashion-mnist", data_dir=str(data), resolution=mode.resolution,
                       subset=mode.subset, epochs=float(epochs), seed=seed)
    if arm.min_updates is None or arm.explore_share is None:
        return replace(base, sparsity=SparsityConfig(method="static", sparsity=0.9, distribution="erk"))
    steps = epochs * (mode.subset // base.batch_size)  # the loader drops the last partial batch
    period = iee_period(steps, UNSTRUCTURED_UPDATE_END, arm.min_updates, arm.explore_share)
    return replace(base, sparsity=SparsityConfig(method="iee", sparsity=0.9, distribution="erk", hjq=period.hjq))


def run_one(arm: Arm, epochs: int, seed: int, mode: Mode, data: Path, runs: Path) -> dict[str, Any]:
    out = runs / mode.name / f"e{epochs}" / arm.label.replace(" ", "_").replace(",", "").replace("/", "-") / f"seed{seed}"
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)  # unfinished: start over (runs here are short)
        Trainer(config_of(arm, epochs, seed, mode, data), out, progress_bar=False).fit()
    s = json.loads((out / "summary.json").read_text())
    settings = s["settings"]
    return {"label": arm.label, "epochs": epochs, "seed": seed, "min_updates": arm.min_updates,
            "explore_share": arm.explore_share, "val_acc": s["val_acc"], "steps": s["steps"], "seconds": s["seconds"],
            "hjq": [settings[k] for k in "hjq"] if "h" in settings else None, "updates": settings.get("updates"),
            "train_flops_relative": s["flops"]["train_relative"], "folder": str(out)}


def analyse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (length, arm): mean top-1 and paired differences to static and to the old rule (common seeds only)."""
    table = []
    for epochs in sorted({r["epochs"] for r in rows}):
        at = {(r["label"], r["seed"]): r for r in rows if r["epochs"] == epochs}
        for arm in ARMS:
            mine = {seed: r for (label, seed), r in at.items() if label == arm.label}
            if not mine:
                continue
            any_row = next(iter(mine.values()))
            cell: dict[str, Any] = {"epochs": epochs, "label": arm.label, "seeds": len(mine),
                                    "val_acc": mean_std([r["val_acc"] for r in mine.values()]),
                                    "hjq": any_row["hjq"], "updates": any_row["updates"], "steps": any_row["steps"],
                                    "train_flops_relative": any_row["train_flops_relative"]}
            for name, ref in (("vs_static", "static"), ("vs_old_rule", REFERENCE)):
                seeds = sorted(s for s in mine if (ref, s) in at)
                cell[name] = None if ref == arm.label or not seeds else paired_difference(
                    [mine[s]["val_acc"] for s in seeds], [at[(ref, s)]["val_acc"] for s in seeds])
            table.append(cell)
    return table


def markdown(record: dict[str, Any]) -> str:
    mode = record["mode_settings"]
    diff = lambda d: "-" if d is None else format_difference(d)  # noqa: E731
    rows = [[f"{c['epochs']} ({c['steps']} steps)", c["label"], "-" if c["hjq"] is None else ",".join(map(str, c["hjq"])),
             "-" if c["updates"] is None else c["updates"], c["seeds"],
             f"{100 * c['val_acc'][0]:.2f} +- {100 * c['val_acc'][1]:.2f}", diff(c["vs_static"]), diff(c["vs_old_rule"]),
             f"{c['train_flops_relative']:.3f}"] for c in record["table"]]
    lines = [
        f"# IEE's short-run period: a paired sweep of the split and the number of updates ({record['mode']} mode)", "",
        *header_markdown(record["meta"], record["mode"] + (" (a pipeline check, not the sweep)"
                                                           if record["mode"] == "quick" else "")), "",
        f"Setup: resnet20 on Fashion-MNIST at {mode['resolution']} px, the first {mode['subset']:,} training images "
        f"(validation: the first {mode['subset'] // 5:,} test images), 90% ERK, batch 64, SGD lr 0.1 (momentum 0.9, wd "
        "5e-4, cosine), Omega_0 0.3 cosine, updates end at 3/4; the same seeds for every arm (same initial weights, mask "
        f"and data order). Seeds per run length (epochs: seeds): {', '.join(f'{e}: {n}' for e, n in mode['lengths'])}; each run used 1 torch thread. IEE's H, J, Q come from "
        "`iee_period(total_steps, 0.75, min_updates, explore_share)` with the arm's two knobs; differences are in "
        "top-1 points, mean over seeds with a 95% t-interval.", "",
        *markdown_table(["epochs", "arm", "H,J,Q", "updates", "seeds", "top-1 (mean +- std)",
                         "IEE - static", "arm - old rule (thirds)", "train FLOPs x dense"], rows), "",
        f"Runs finished: {len(record['rows'])} of {record['planned']}; training time {record['minutes']:.1f} min.", "",
        "Each run: `Trainer(TrainConfig(model='resnet20', dataset='fashion-mnist', resolution=..., subset=..., "
        "epochs=..., seed=..., sparsity=SparsityConfig(method=..., sparsity=0.9, distribution='erk', hjq=...)))`, "
        f"the same as `iee-deploy train` with those options; run folders under `{record['args']['runs']}/`.", "",
    ]
    if record["mode"] == "quick":
        lines += ["**Quick mode**: one short run per arm and one seed. It checks the pipeline and the table's shape; "
                  "it says nothing about which split is better.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.lengths[0][0]} epochs of {QUICK.subset:,} images, "
                        "one seed (a pipeline check)")
    parser.add_argument("--runs", default="runs/hjq_sweep", help="parent folder of the run folders")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder holding data/FashionMNIST/raw")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = QUICK if args.quick else FULL
    meta = header(1)
    data = fashion_mnist_root(args.shared)
    plan = [(arm, epochs, seed) for epochs, seeds in mode.lengths for seed in range(seeds) for arm in ARMS]
    rows: list[dict[str, Any]] = []
    name = "hjq_sweep_quick" if args.quick else "hjq_sweep"
    start = time.perf_counter()
    for i, (arm, epochs, seed) in enumerate(plan):
        rows.append(run_one(arm, epochs, seed, mode, data, Path(args.runs)))
        print(f"[{i + 1}/{len(plan)}] {epochs} epochs, {arm.label}, seed {seed}: top-1 {100 * rows[-1]['val_acc']:.2f}% "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        record = {"meta": meta, "mode": mode.name, "mode_settings": asdict(mode), "args": vars(args),
                  "arms": [asdict(a) for a in ARMS], "planned": len(plan),
                  "minutes": sum(r["seconds"] for r in rows) / 60, "table": analyse(rows), "rows": rows}
        write_results(name, record, markdown(record))


if __name__ == "__main__":
    main()
