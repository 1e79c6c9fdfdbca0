"""INT8 on top of pruning: is a network pruned against a measured INT8 table better than one pruned against the fp32
table and then quantized, at the same measured INT8 latency? And how far is dense fp32?

    PYTHONPATH=. python -m benchmarks.int8            # after benchmarks.head_to_head (its dense models and LUTs)
    PYTHONPATH=. python -m benchmarks.int8 --tiny     # the test suite's check, after head_to_head --tiny

Start: the head-to-head benchmark's dense model and fp32 `cpu` LUT of each architecture (same mode, same
records folder), so both benchmarks prune the same trained network. Arms, on the `cpu` target (ONNX Runtime,
batch 1, one thread, fastest run):

- `dense`: the dense model in fp32, and quantized (`dense` int8);
- `fp32-lut`: HALP to 0.5 of the dense fp32 engine's measured latency against the fp32 LUT (the head-to-head's
  `halp` arm at 0.5 at the ratio its one-shot structure aims: the head-to-head's pilot command and run folder, which
  the head-to-head's own rows re-run at a calibrated ratio when the pilot lands off its budget), fine-tuned, then
  quantized;
- `int8-lut`: HALP against the INT8 LUT (`iee-deploy profile --precision int8`), its ratio bisected so that the
  knapsack's one-shot structure, quantized, measures the INT8 latency of `fp32-lut`'s one-shot structure,
  quantized (equal measured INT8 latency), with the same fine-tuning, then quantized.

Quantization is the product's: QDQ with per-channel weights (`runtime.quantize`, ONNX Runtime's static
quantizer, MinMax), activation scales calibrated on the first `CALIBRATION_IMAGES` training images, the
same images for every arm. Top-1 of the fp32 and the int8 engine of every run is measured in ONNX Runtime on
the validation images, so the accuracy lost to quantization is paired per run. Every engine is timed in one
side-by-side run in alternating rounds, as its recorded structure with re-drawn weights (int8: quantized on
random batches; latency does not depend on the values).

Resumable like the head-to-head: every finished step leaves a small JSON record under
benchmarks/results/int8[_tiny]_runs/<model>/. Writes benchmarks/results/int8[_tiny].md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from benchmarks.common import (
    RESULTS,
    budget_folder,
    cifar10_subset,
    cpu_session,
    format_difference,
    header,
    header_markdown,
    image_batches,
    markdown_table,
    onnx_from_structure,
    onnx_structure,
    paired_difference,
    run_parallel,
    shown_command,
    write_json,
    write_results,
)
from benchmarks.head_to_head import (
    FULL,
    TINY,
    Mode,
    base_train,
    bisect_ratio,
    calibration_batch,
    exported,
    knapsack_once,
    profile_lut,
    read_record,
    result_name,
    shown_path,
    smallest_ratio,
    time_side_by_side,
    train,
)
from iee_deploy.errors import UserError
from runtime.backends import get_backend
from runtime.quantize import quantize, random_batches

BUDGET = 0.5
"""The fp32-LUT arm's budget: a fraction of the dense fp32 engine's measured latency (the head-to-head's 0.5)."""
CALIBRATION_IMAGES = 256
"""Training images every int8 engine is calibrated on (the first ones: the same for every arm)."""
ARMS = ("fp32-lut", "int8-lut")
NORTH_SPEEDUP, NORTH_POINTS = 3.0, 1.0
"""The goal: an int8 pruned engine at least 3x faster than dense fp32, with at most 1 point of top-1 lost."""


def quantized(fp32: Path, out: Path, batches: list[np.ndarray]) -> Path:
    """The int8 QDQ graph of the fp32 ONNX `fp32`, activation scales calibrated on `batches`."""
    scheme = get_backend("onnxruntime").qdq_scheme("int8")
    assert scheme is not None
    return quantize(fp32, out, batches, scheme)


def timing_int8(fp32: Path, out: Path) -> Path:
    """The int8 graph of `fp32` calibrated on random batches: what timing needs (latency does not depend on the
    scales, only on the kernels)."""
    return quantized(fp32, out, random_batches((1, 3, 32, 32), 2))


def top1_fp32_int8(net: nn.Module, data: Path, work: Path) -> dict[str, float]:
    """Top-1 of `net`'s fp32 engine and of its int8 engine (calibrated on the first training images) on the
    validation images, both in ONNX Runtime; also the share of images whose predicted class is unchanged."""
    work.mkdir(parents=True, exist_ok=True)
    fp32 = exported(net, work / "fp32.onnx")
    calibration = [x for x, _ in image_batches(data, "train", CALIBRATION_IMAGES, 32)]
    int8 = quantized(fp32, work / "int8.onnx", calibration)
    engines = {"fp32": cpu_session(fp32), "int8": cpu_session(int8, "int8")}
    correct = {name: 0 for name in engines}
    same = total = 0
    for x, y in image_batches(data, "val", None):
        predicted = {name: e.infer_batch(x).argmax(1) for name, e in engines.items()}
        for name, p in predicted.items():
            correct[name] += int((p == y).sum())
        same += int((predicted["fp32"] == predicted["int8"]).sum())
        total += len(y)
    return {"fp32": correct["fp32"] / total, "int8": correct["int8"] / total, "agreement": same / total}


def timing_engines(structure: str, folder: Path, name: str) -> dict[str, Path]:
    """The fp32 engine of a recorded structure (re-drawn weights) and its int8 graph (random calibration)."""
    fp32 = onnx_from_structure(structure, folder / f"{name}.onnx")
    return {f"{name}|fp32": fp32, f"{name}|int8": timing_int8(fp32, folder / f"{name}.int8.onnx")}


def time_int8(net: nn.Module, dense_onnx: Path, dense_ms: float, work: Path, seconds: float) -> float:
    """The measured int8 latency of `net` (random calibration), timed beside the dense fp32 engine, scaled to
    `dense_ms` (so load changes between probes do not move the match)."""
    int8 = timing_int8(exported(net, work / "probe.onnx"), work / "probe.int8.onnx")
    ms = time_side_by_side({"probe": int8, "dense": dense_onnx}, seconds, int8={"probe"})
    return ms["probe"] / ms["dense"] * dense_ms


def architecture(model: str, mode: Mode, args: argparse.Namespace, data: Path, commands: list[str]) -> dict[str, Any]:
    """Both arms of one architecture, trained, quantized, evaluated and timed side by side; its rows."""
    from iee_deploy.models import build_model

    start = Path(args.results) / f"{result_name(mode)}_runs" / model  # the head-to-head's records
    dense_json, dense_pt, lut = start / "dense.json", start / "dense.pt", start / "lut.csv"
    if not (dense_json.is_file() and dense_pt.is_file() and lut.is_file()):
        raise SystemExit(f"{shown_path(start)} holds no dense model and LUT of {model}: run `PYTHONPATH=. python -m "
                         f"benchmarks.head_to_head{'' if mode is FULL else ' --' + mode.name} --models {model}` first "
                         "(this benchmark prunes the same trained network)")
    root = Path(args.runs) / mode.name / model
    rec = Path(args.results) / f"int8{'' if mode is FULL else '_' + mode.name}_runs" / model
    rec.mkdir(parents=True, exist_ok=True)
    lut_int8 = profile_lut(model, rec / "lut-int8.csv", commands, "int8")
    tables = {"fp32-lut": lut, "int8-lut": lut_int8}
    checkpoint = root / "dense" / "final_model.pt"
    if not checkpoint.is_file():
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(dense_pt.read_bytes())
    dense_net = build_model(model, 10, 32, checkpoint)
    work = root / "int8"
    dense_onnx = exported(dense_net, work / "dense.onnx")
    dense_rec = rec / "dense.json"
    dense = read_record(dense_rec, shown_path(dense_pt))
    if dense is None:
        dense = {"how": shown_path(dense_pt), **top1_fp32_int8(dense_net, data, work / "dense-eval"),
                 "engine": onnx_structure(dense_onnx), "bisection_dense_ms": time_side_by_side({"dense": dense_onnx},
                                                                                              mode.report_seconds)["dense"]}
        write_json(dense_rec, dense)
    batch = calibration_batch(data, mode.calibration_images)
    floors: dict[str, float] = {}
    refused: dict[str, str] = {}  # an arm whose LUT cannot prune this model: the table's own one-line reason
    for arm, table in tables.items():
        try:
            floors[arm] = smallest_ratio(model, None, table)
        except UserError as err:
            refused[arm] = str(err)

    def one_shot(arm: str, ratio: float) -> nn.Module:
        return knapsack_once(model, checkpoint, tables[arm], floors[arm], ratio, batch)

    # fp32-lut: the head-to-head's knapsack match at BUDGET (its one-shot structure at BUDGET x dense fp32 measured)
    match_path = start / budget_folder(BUDGET) / "knapsack-latency" / "match.json"
    if not match_path.is_file():
        raise SystemExit(f"{shown_path(match_path)} is missing: the head-to-head has not aimed its knapsack at "
                         f"{BUDGET:g} x dense on {model} yet; run it first")
    aimed_fp32 = json.loads(match_path.read_text())
    ratios = {"fp32-lut": max(aimed_fp32["ratio"], floors["fp32-lut"])}
    # int8-lut: bisect its ratio so that its one-shot structure's int8 latency matches fp32-lut's one-shot int8 latency
    match_int8 = rec / "match.json"
    matched: dict[str, float] = {}
    if "int8-lut" not in refused and match_int8.is_file():
        matched = json.loads(match_int8.read_text())
    elif "int8-lut" not in refused:
        probe_dir = work / "probes"
        probe_dir.mkdir(parents=True, exist_ok=True)
        dense_ms = dense["bisection_dense_ms"]
        target = time_int8(one_shot("fp32-lut", ratios["fp32-lut"]), dense_onnx, dense_ms, probe_dir, mode.match_seconds)
        ratio, ms = bisect_ratio(lambda r: time_int8(one_shot("int8-lut", r), dense_onnx, dense_ms, probe_dir,
                                                     mode.match_seconds), target, False, mode.bisect_steps)
        matched = {"ratio": ratio, "probe_int8_ms": ms, "target_int8_ms": target}
        write_json(match_int8, matched)
    if matched:
        ratios["int8-lut"] = max(matched["ratio"], floors["int8-lut"])

    def run(arm: str, seed: int) -> dict[str, Any]:
        # fp32-lut is the head-to-head's halp arm at BUDGET at its one-shot aim: its pilot's command and run folder
        out = root / budget_folder(BUDGET) / ("halp" if arm == "fp32-lut" else "halp-int8-lut") / f"seed{seed}"
        cmd = [*base_train(model, data, mode.epochs, seed, args, args.finetune_lr), "--method", "halp", "--target", "cpu",
               "--lut", shown_path(tables[arm]), "--latency-ratio", f"{ratios[arm]:.6f}", "--update-end", "0.25",
               "--delta-t", str(mode.delta_t), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]
        path = rec / arm / f"seed{seed}.json"
        record = read_record(path, shown_command(cmd))
        if record is None:
            from iee_deploy.deploy.run_models import load_run_models

            train(cmd, out, mode)
            pruned = load_run_models(out).pruned
            record = {"how": shown_command(cmd), **top1_fp32_int8(pruned, data, out / "int8-eval"),
                      "engine": onnx_structure(exported(pruned, out / "engine.onnx"))}
            write_json(path, record)
        return record

    todo = [(arm, seed) for arm in ARMS if arm not in refused for seed in range(mode.seeds)]
    records = run_parallel(lambda item: run(*item), todo, 1 if mode.in_process else args.jobs, f"{model}: int8 runs")
    with tempfile.TemporaryDirectory() as folder:
        engines = timing_engines(dense["engine"], Path(folder), "dense")
        for (arm, seed), r in zip(todo, records):
            engines.update(timing_engines(r["engine"], Path(folder), f"{arm}|{seed}"))
        timed = time_side_by_side(engines, mode.report_seconds, int8={name for name in engines if name.endswith("|int8")})
    base = timed["dense|fp32"]
    rows = [{"model": model, "arm": arm, "seed": seed, "command": r["how"], "fp32_top1": r["fp32"], "int8_top1": r["int8"],
             "agreement": r["agreement"], "fp32_ms": timed[f"{arm}|{seed}|fp32"], "int8_ms": timed[f"{arm}|{seed}|int8"],
             "int8_speedup": base / timed[f"{arm}|{seed}|int8"], "fp32_speedup": base / timed[f"{arm}|{seed}|fp32"]}
            for (arm, seed), r in zip(todo, records)]
    return {"model": model, "dense": {"fp32_top1": dense["fp32"], "int8_top1": dense["int8"], "fp32_ms": base,
                                      "int8_ms": timed["dense|int8"], "int8_speedup": base / timed["dense|int8"]},
            "ratios": ratios, "match": matched, "floors": floors, "refused": refused, "records": shown_path(rec),
            "rows": rows}


def summary(arch: dict[str, Any]) -> list[dict[str, Any]]:
    """Per arm: means over seeds, and int8-lut minus fp32-lut paired by seed."""
    out = []
    by_arm = {arm: sorted((r for r in arch["rows"] if r["arm"] == arm), key=lambda r: r["seed"]) for arm in ARMS
              if arm not in arch["refused"]}
    for arm, rs in by_arm.items():
        out.append({"model": arch["model"], "arm": arm, "seeds": len(rs),
                    **{k: statistics.fmean(r[k] for r in rs) for k in ("fp32_top1", "int8_top1", "fp32_ms", "int8_ms",
                                                                      "int8_speedup", "fp32_speedup", "agreement")},
                    "quantization_loss": paired_difference([r["int8_top1"] for r in rs], [r["fp32_top1"] for r in rs]),
                    "vs_dense_fp32": {"mean": statistics.fmean(r["int8_top1"] for r in rs) - arch["dense"]["fp32_top1"]},
                    "int8_lut_minus_fp32_lut": paired_difference([r["int8_top1"] for r in by_arm["int8-lut"]],
                                                                 [r["int8_top1"] for r in by_arm["fp32-lut"]])
                    if arm == "int8-lut" and "fp32-lut" in by_arm else None})
    return out


def speedups_multiply(arm: dict[str, Any], dense: dict[str, Any]) -> str:
    """Whether pruning's and int8's speed-ups multiply for an arm (means over seeds), in one sentence of numbers: what
    falls short is int8's gain from pruning (the pruned int8 engine gains under 0.9 of what its fp32 engine does over
    dense), else pruning itself."""
    expected = arm["fp32_speedup"] * dense["int8_speedup"]
    in_int8 = dense["int8_ms"] / arm["int8_ms"]
    short = ("the channels pruning removes weigh less in int8" if in_int8 < 0.9 * arm["fp32_speedup"] else
             "what falls short is the pruning itself")
    return (f"pruning alone gives {arm['fp32_speedup']:.2f}x (fp32 engines) and int8 alone {dense['int8_speedup']:.2f}x "
            f"(dense engines), which would multiply to {expected:.2f}x; together they give {arm['int8_speedup']:.2f}x: "
            f"the pruned int8 engine is {in_int8:.2f}x faster than the dense int8 one, against "
            f"{arm['fp32_speedup']:.2f}x between the fp32 engines, so {short}.")


def answer(archs: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[str]:
    lines = []
    for arch in archs:
        d = arch["dense"]
        lines.append(f"- {arch['model']}: dense fp32 {100 * d['fp32_top1']:.2f}% at {d['fp32_ms']:.3f} ms; dense int8 "
                     f"{100 * d['int8_top1']:.2f}% at {d['int8_speedup']:.2f}x.")
        rows = {t["arm"]: t for t in table if t["model"] == arch["model"]}
        for arm, t in rows.items():
            lost = -100 * t["vs_dense_fp32"]["mean"]
            met = t["int8_speedup"] >= NORTH_SPEEDUP and lost <= NORTH_POINTS
            lines.append(f"  {arm}, int8: {100 * t['int8_top1']:.2f}% at {t['int8_speedup']:.2f}x over dense fp32 "
                         f"({lost:.2f} points below dense fp32; quantization "
                         f"{format_difference(t['quantization_loss'])} points): "
                         + ("**meets**" if met else "**misses**") + f" >= {NORTH_SPEEDUP:g}x with <= {NORTH_POINTS:g} point lost"
                         + ("" if met else f" (by {max(0.0, NORTH_SPEEDUP - t['int8_speedup']):.2f}x and "
                            f"{max(0.0, lost - NORTH_POINTS):.2f} points)") + ".")
            if t["int8_speedup"] < NORTH_SPEEDUP:
                lines.append(f"  Why {arm} is slower than {NORTH_SPEEDUP:g}x: {speedups_multiply(t, d)}")
        for arm, why in arch["refused"].items():
            lines.append(f"  {arm}: **cannot prune {arch['model']}**: {why}")
        if {"fp32-lut", "int8-lut"} <= set(rows):
            a, b = rows["fp32-lut"], rows["int8-lut"]
            diff = b["int8_lut_minus_fp32_lut"]
            lo, hi = diff["low"], diff["high"]
            word = ("the INT8 LUT wins" if lo > 0 else "the fp32 LUT wins" if hi < 0 else "neither LUT is resolved")
            lines.append(f"  INT8 LUT vs fp32 LUT then quantized, at {b['int8_ms']:.3f} vs {a['int8_ms']:.3f} ms int8: "
                         f"{format_difference(diff)} points: **{word}**.")
    return lines


def markdown(record: dict[str, Any]) -> str:
    m = record["mode_settings"]
    table = markdown_table(
        ["model", "arm", "seeds", "fp32 top-1", "int8 top-1", "quantization (int8 - fp32, paired)", "same class",
         "fp32 ms", "int8 ms", "int8 speed-up over dense fp32", "int8-lut - fp32-lut (paired)"],
        [[t["model"], t["arm"], t["seeds"], f"{100 * t['fp32_top1']:.2f}", f"{100 * t['int8_top1']:.2f}",
          format_difference(t["quantization_loss"]), f"{100 * t['agreement']:.1f}%", f"{t['fp32_ms']:.3f}",
          f"{t['int8_ms']:.3f}", f"{t['int8_speedup']:.2f}x",
          "-" if t["int8_lut_minus_fp32_lut"] is None else format_difference(t["int8_lut_minus_fp32_lut"])]
         for t in record["table"]])
    dense = markdown_table(["model", "dense fp32 top-1", "dense int8 top-1", "fp32 ms", "int8 ms", "int8 speed-up"],
                           [[a["model"], f"{100 * a['dense']['fp32_top1']:.2f}", f"{100 * a['dense']['int8_top1']:.2f}",
                             f"{a['dense']['fp32_ms']:.3f}", f"{a['dense']['int8_ms']:.3f}",
                             f"{a['dense']['int8_speedup']:.2f}x"] for a in record["architectures"]])
    return "\n".join([
        f"# INT8 on top of pruning ({record['mode']} mode)", "", *header_markdown(record["meta"], record["mode"]), "",
        "**Data caveat.** CIFAR-10 JPEG copy; compare arms side by side, never with published numbers.", "",
        f"Setup: the head-to-head benchmark's dense model and fp32 LUT ({10 * m['train_per_class']:,} training and "
        f"{10 * m['val_per_class']:,} validation images at 32 px). fp32-lut: HALP to {BUDGET:g} x the dense fp32 engine's "
        f"measured latency against the fp32 LUT (the head-to-head's halp arm at its one-shot aim); int8-lut: HALP against the INT8 LUT at "
        f"the equal measured int8 latency of the knapsack's one-shot structures; both fine-tuned {m['epochs']} epochs "
        f"(peak lr {record['args']['finetune_lr']}), seeds 0..{m['seeds'] - 1} paired. int8: QDQ, per-channel weights, "
        f"MinMax on the first {CALIBRATION_IMAGES} training images. Top-1 of fp32 and int8 engines in ONNX Runtime on "
        "the validation images; every engine timed in one side-by-side run (batch 1, one thread, fastest run), as its "
        "recorded structure with re-drawn weights.", "",
        "## The answer", "", *answer(record["architectures"], record["table"]), "",
        *dense, "", *table, "",
        "Commands (from the repository root):", "", *[f"    {c}" for c in record["commands"]],
        *[f"    {r['command']}" for a in record["architectures"] for r in a["rows"] if r["seed"] == 0], "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's check (after head_to_head --tiny)")
    parser.add_argument("--models", default=None, help="comma-separated zoo models (default: resnet20,mobilenet_v2)")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="peak SGD learning rate of the fine-tuning "
                        "(the head-to-head's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", default="runs/bench_head_to_head", help="the head-to-head's run folders")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    mode = TINY if args.tiny else FULL
    args.batch_size = args.batch_size or mode.batch_size
    models = (args.models or ("resnet20" if args.tiny else "resnet20,mobilenet_v2")).split(",")
    meta = header(1, "torchvision", "onnxruntime", "onnx")
    data = cifar10_subset(mode.train_per_class, mode.val_per_class)
    commands: list[str] = []
    archs = [architecture(model, mode, args, data, commands) for model in models]
    table = [t for a in archs for t in summary(a)]
    record = {"meta": meta, "mode": mode.name, "mode_settings": {"train_per_class": mode.train_per_class,
              "val_per_class": mode.val_per_class, "epochs": mode.epochs, "seeds": mode.seeds},
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "architectures": archs, "commands": commands, "table": table}
    name = "int8" if mode is FULL else f"int8_{mode.name}"
    results = Path(args.results)
    if results == RESULTS:
        write_results(name, record, markdown(record))
    else:
        write_json(results / f"{name}.json", record)
        (results / f"{name}.md").write_text(markdown(record))


if __name__ == "__main__":
    main()
