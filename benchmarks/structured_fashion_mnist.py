"""Structured IEE vs HALP under a CPU latency budget on Fashion-MNIST: predicted vs measured latency.

Ordinary commands, each printed and recorded: `iee-deploy profile` (a CPU LUT of resnet18 at 32 px,
unless --lut is given), `iee-deploy train --latency-ratio R --method iee` and `--method halp` (same
model, data, optimizer and budget), then `iee-deploy build-engine --backend onnxruntime` and
`iee-deploy validate` on both run folders. The table compares each physically pruned model's latency measured by build-engine
(ONNX Runtime, the LUT's batch and thread count) with the latency the LUT predicted for it and with
the budget Psi. The CPU target's LUT records the fastest of its runs (`statistic: min`: the
uncontended latency on a shared machine), so the like-for-like measured figure is build-engine's
fastest batch; its median is shown beside it.

    python benchmarks/structured_fashion_mnist.py --data-dir ../shared/data

Writes benchmarks/results/structured_fashion_mnist.md and .json.
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
from typing import Any

import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 0.10  # acceptance: |measured - predicted| <= 10% of predicted, measured <= 1.1 x budget


def shown(cmd: list[str], threads: int) -> str:
    return f"OMP_NUM_THREADS={threads} " + shlex.join(["python"] + cmd[1:])


def run(cmd: list[str], env: dict[str, str], threads: int, log: list[str], check: bool = True) -> None:
    text = shown(cmd, threads)
    print(f"$ {text}", flush=True)
    log.append(text)
    subprocess.run(cmd, env=env, cwd=ROOT, check=check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="folder holding FashionMNIST/raw")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--resolution", type=int, default=32, help="px (resnet18 gets the CIFAR stem at <= 64 px)")
    parser.add_argument("--ratio", type=float, default=0.5, help="latency budget: fraction of the dense model's prediction")
    parser.add_argument("--subset", type=int, default=3000, help="training images (validation: subset/5)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--update-end", type=float, default=0.75, help="fraction of training with structure updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lut", default=None, help="an existing LUT of this model (default: profile one into --runs)")
    parser.add_argument("--calibration-networks", type=int, default=12,
                        help="profile: whole networks timed to calibrate the LUT (more average out a shared machine's noise)")
    parser.add_argument("--runs", default="runs/structured_fmnist", help="folder for the LUT, run and engine folders")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads while training (OMP_NUM_THREADS)")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="build-engine: timing seconds per model")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    iee = [sys.executable, "-m", "iee_deploy"]
    lut = Path(args.lut) if args.lut else runs / f"cpu-{args.model}-{args.resolution}.csv"
    if not args.lut:
        for stale in (lut, lut.with_suffix(".json")):  # this script's own previous LUT
            stale.unlink(missing_ok=True)
        run([*iee, "profile", "--target", "cpu", "--model", args.model, "--num-classes", "10", "--resolution",
             str(args.resolution), "--calibration-networks", str(args.calibration_networks), "--out", str(lut)],
            env, args.threads, commands)
    meta = json.loads(lut.with_suffix(".json").read_text())

    rows: list[dict[str, Any]] = []
    for method in ("iee", "halp"):
        out, engine = runs / method, runs / f"{method}-engine"
        shutil.rmtree(out, ignore_errors=True)  # this script's own previous output
        shutil.rmtree(engine, ignore_errors=True)
        run([*iee, "train", "--method", method, "--model", args.model, "--dataset", "fashion-mnist", "--data-dir",
             args.data_dir, "--resolution", str(args.resolution), "--target", "cpu", "--lut", str(lut), "--latency-ratio",
             str(args.ratio), "--subset", str(args.subset), "--epochs", str(args.epochs), "--batch-size",
             str(args.batch_size), "--update-end", str(args.update_end), "--seed", str(args.seed), "--out", str(out),
             "--no-progress"], env, args.threads, commands)
        run([*iee, "build-engine", "--run", str(out), "--backend", "onnxruntime", "--batch", str(meta["batch"]),
             "--min-seconds", str(args.min_seconds), "--out", str(engine)], env, args.threads, commands)
        run([*iee, "validate", "--engine", str(engine), "--subset", str(args.subset), "--min-seconds",
             str(args.min_seconds)], env, args.threads, commands, check=False)  # exits 1 when a check fails
        s = json.loads((out / "summary.json").read_text())
        e = json.loads((engine / "engine.json").read_text())
        v = json.loads((engine / "validation.json").read_text())
        lat, pruned, dense = s["latency"], e["pruned"]["timing"], e["dense"]["timing"]
        error = (pruned["min_ms"] - lat["predicted_ms"]) / lat["predicted_ms"]
        rows.append({
            "method": method, "val_acc": s["val_acc"], "best_val_acc": s["best_val_acc"],
            "budget_ms": lat["budget_ms"], "predicted_ms": lat["predicted_ms"], "dense_predicted_ms": lat["dense_ms"],
            "measured_min_ms": pruned["min_ms"], "measured_median_ms": pruned["median_ms"], "measured_p90_ms": pruned["p90_ms"],
            "dense_measured_min_ms": dense["min_ms"], "dense_measured_median_ms": dense["median_ms"],
            "error": error, "measured_over_budget": pruned["min_ms"] / lat["budget_ms"],
            "within_10pct": abs(error) <= TOLERANCE, "within_1p1_budget": pruned["min_ms"] <= (1 + TOLERANCE) * lat["budget_ms"],
            "speedup_min": dense["min_ms"] / pruned["min_ms"], "speedup_median": e["speedup"],
            "params": e["pruned"]["params"], "dense_params": e["dense"]["params"], "groups": lat["groups"],
            "prunes": s["structure"]["prunes"], "grows": s["structure"]["grows"],
            "mean_survival": s["structure"]["mean_survival"], "trajectory": s["structure"]["latency_trajectory"],
            "train_flops_relative": s["flops"]["train_relative"], "seconds": s["seconds"], "settings": s["settings"],
            "validate": {"checks": {c["name"]: c["status"] for c in v["checks"]}, "engine_top1": (v.get("scores") or v["top1"])["engine"],
                         "pruned_vs_masked_max_abs": v["errors"]["pruned_vs_masked"]["max_abs"],
                         "median_ms": v["latency"]["median_ms"], "min_ms": v["latency"]["min_ms"]},
        })

    head = ("| method | top-1 | budget Psi ms | predicted ms | measured ms (min / median) | error (min vs predicted) | "
            "measured / Psi | dense measured ms (min / median) | speed-up (min) | prunes / grows | train FLOPs x dense |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {100 * r['val_acc']:.2f}% | {r['budget_ms']:.3f} | {r['predicted_ms']:.3f} | "
            f"{r['measured_min_ms']:.3f} / {r['measured_median_ms']:.3f} | {100 * r['error']:+.1f}% "
            f"({'ok' if r['within_10pct'] else 'over 10%'}) | {r['measured_over_budget']:.3f} "
            f"({'ok' if r['within_1p1_budget'] else 'over 1.1'}) | {r['dense_measured_min_ms']:.3f} / "
            f"{r['dense_measured_median_ms']:.3f} | {r['speedup_min']:.2f}x | {r['prunes']} / {r['grows']} | "
            f"{r['train_flops_relative']:.3f} |")
    table = "\n".join(lines)
    print(table)
    checks = ["| method | " + " | ".join(rows[0]["validate"]["checks"]) + " | engine top-1 | pruned vs masked max abs | "
              "median / min ms |", "|---|" + "---|" * (len(rows[0]["validate"]["checks"]) + 3)]
    checks += [f"| {r['method']} | " + " | ".join(r["validate"]["checks"].values()) +
               f" | {r['validate']['engine_top1']:.2f}% | {r['validate']['pruned_vs_masked_max_abs']:.2g} | "
               f"{r['validate']['median_ms']:.3f} / {r['validate']['min_ms']:.3f} |" for r in rows]
    groups = ["| group | " + " | ".join(r["method"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    groups += [f"| {g} | " + " | ".join(f"{r['groups'][g]['kept']} / {r['groups'][g]['size']}" for r in rows) + " |"
               for g in rows[0]["groups"]]
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {meta['machine'].get('cpu', '?')}, {os.cpu_count()} CPU cores (shared)",
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "structured_fashion_mnist.json").write_text(json.dumps(
        {"meta": info, "args": vars(args), "lut": {k: meta[k] for k in ("model", "resolution", "batch", "precision",
                                                                           "target", "backend", "threads", "statistic",
                                                                           "grid_step", "grid_min", "grid_align",
                                                                           "calibration", "elapsed_s")},
         "commands": commands, "runs": rows}, indent=2) + "\n")
    md = [
        "# Structured IEE vs HALP under a CPU latency budget, Fashion-MNIST", "",
        f"{info['date']}; {info['machine']}; Python {info['python']}, torch {info['torch']}, "
        f"onnxruntime {info['onnxruntime']}.", "",
        f"{args.model} at {args.resolution} px (10 classes), budget Psi = {args.ratio:g} x the dense model's predicted "
        f"latency on the `cpu` target (ONNX Runtime, batch {meta['batch']}, {meta['precision']}, {meta['threads']} "
        f"thread; LUT statistic `{meta['statistic']}`, grid step {meta['grid_step']}, channel block "
        f"{meta['grid_align']}, calibration measured = {meta['calibration']['a']:.4f} x sum + "
        f"{meta['calibration']['b']:.4f} ms). A short run: the first {args.subset} training images (validation: the "
        f"first {args.subset // 5} test images), {args.epochs:g} epochs, batch {args.batch_size}, SGD lr 0.1 cosine, "
        f"structure updates in the first {args.update_end:g} of training; IEE starts from a random Theta_K at Psi, "
        "HALP prunes the dense model down to Psi with its exponential schedule.", "",
        "Measured = build-engine's ONNX Runtime session of the physically pruned model; `min` is its fastest batch "
        "(the statistic the LUT predicts), `median` its typical one. The machine is shared by several engineers "
        "(2 cores), so medians carry contention; the figures are one run, not a quiet-machine measurement.", "",
        table, "", "`iee-deploy validate` on the same engines (its latency-budget check compares the *median* with "
        "Psi, without tolerance; the CPU LUT predicts the fastest run):", "", *checks, "",
        "Channels kept per group (kept / size):", "", *groups, "",
        "Commands (run from the repository root):", "", *[f"    {c}" for c in commands], "",
        f"Regenerate: `python benchmarks/structured_fashion_mnist.py --data-dir {args.data_dir}`.", "",
    ]
    (RESULTS / "structured_fashion_mnist.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
