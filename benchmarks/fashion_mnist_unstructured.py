"""IEE vs RigL at 90% ERK unstructured sparsity on Fashion-MNIST: accuracy and grown-weight survival.

Both runs use the same model, data, optimizer, update period and update budget schedule
(Omega_0 = alpha = 0.3, cosine decay, updates end at 3/4), so they differ only in how the
structure is updated. Each run is an ordinary `iee-deploy train` command (printed and recorded);
the table is read from the run folders' summary.json.

    python benchmarks/fashion_mnist_unstructured.py --data-dir ../shared/data

Writes benchmarks/results/fashion_mnist_unstructured.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


RUNS = {  # label: (method, extra options)
    "iee": ("iee", []),
    "rigl": ("rigl", []),
    "iee --grow-init zero": ("iee", ["--grow-init", "zero"]),  # Table 4's ZeroInit ablation
}


def command(method: str, extra: list[str], args: argparse.Namespace, out: Path) -> list[str]:
    period = ["--hjq", f"{args.h},{args.h},{args.h}"] if method == "iee" else ["--delta-t", str(3 * args.h)]
    return [sys.executable, "-m", "iee_deploy", "train", "--method", method, "--sparsity", "0.9", "--distribution", "erk",
            "--dataset", "fashion-mnist", "--data-dir", args.data_dir, "--model", args.model, "--resolution",
            str(args.resolution), "--subset", str(args.subset), "--epochs", str(args.epochs), "--batch-size",
            str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed), *period, *extra, "--out", str(out),
            "--no-progress"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="folder holding FashionMNIST/raw")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--resolution", type=int, default=28, help="px")
    parser.add_argument("--subset", type=int, default=10_000, help="training images (validation: subset/5)")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--h", type=int, default=30, help="IEE H = J = Q; RigL's dT is 3H (the same period)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench_fmnist", help="folder for the two run folders")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (OMP_NUM_THREADS)")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    rows = []
    for label, (method, extra) in RUNS.items():
        out = Path(args.runs) / label.replace(" --", "-").replace(" ", "-")
        shutil.rmtree(out, ignore_errors=True)  # this script's own previous output
        cmd = command(method, extra, args, out)
        shown = f"OMP_NUM_THREADS={args.threads} " + shlex.join(["python"] + cmd[1:])
        print(f"$ {shown}", flush=True)
        subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        s = json.loads((out / "summary.json").read_text())
        rows.append({"method": label, "command": shown, "val_acc": s["val_acc"], "best_val_acc": s["best_val_acc"],
                     "sparsity": s["sparsity"]["achieved"], "mean_survival": s["structure"]["mean_survival"],
                     "survival": s["structure"]["survival"], "updates": s["structure"]["grows"],
                     "last_iou_after_grow": (s["structure"]["iou_after_grow"] or [None])[-1],
                     "train_flops_relative": s["flops"]["train_relative"], "seconds": s["seconds"],
                     "settings": s["settings"], "steps": s["steps"]})

    header = "| method | top-1 (final) | sparsity | updates | grown-weight survival (mean) | survival per update | " \
             "train FLOPs x dense | wall s |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_update = ", ".join(f"{100 * v:.1f}" for v in r["survival"])
        lines.append(f"| {r['method']} | {100 * r['val_acc']:.2f}% | {100 * r['sparsity']:.2f}% | {r['updates']} | "
                     f"{100 * r['mean_survival']:.1f}% | {per_update} | {r['train_flops_relative']:.3f} | "
                     f"{r['seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores "
            f"(shared), {args.threads} torch thread(s)", "python": platform.python_version(), "torch": torch.__version__}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fashion_mnist_unstructured.json").write_text(json.dumps({"meta": meta, "args": vars(args), "runs": rows},
                                                                        indent=2) + "\n")
    md = [
        "# IEE vs RigL, 90% ERK unstructured, Fashion-MNIST", "",
        f"{meta['date']}; {meta['machine']}; Python {meta['python']}, torch {meta['torch']}.", "",
        f"A short run: {args.model} at {args.resolution} px, the first {args.subset} training images "
        f"(validation: the first {args.subset // 5} test images), {args.epochs:g} epochs, batch {args.batch_size}, "
        f"SGD lr {args.lr:g} cosine. Same update period for both ({3 * args.h} steps: IEE H = J = Q = {args.h}, "
        "RigL dT = 3H), same budget schedule (0.3, cosine, end at 3/4). Survival = share of the weights grown at "
        "update t still active after the prune of update t+1 (paper Fig. 5b).", "",
        table, "", "Commands (run from the repository root):", "",
        *[f"    {r['command']}" for r in rows], "",
        "Regenerate: `python benchmarks/fashion_mnist_unstructured.py` (same options as above are the defaults).", "",
    ]
    (RESULTS / "fashion_mnist_unstructured.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
