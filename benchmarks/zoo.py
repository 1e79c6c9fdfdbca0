"""Zoo sweep: iee_deploy.graph vs Torch-Pruning on the smallest model of every timm family, the YOLOv8/YOLO11
nano task models and the transformers vision classifiers, with exactness and ONNX parity per model.

Models (random init, randomised norms, eval mode, batch 1):

- timm: the smallest variant (fewest parameters, counted by building on the meta device) of every
  architecture family that builds offline. Family (`timm_family`): strip a ``tf_`` prefix, take the
  first ``_``-separated token, then its leading letters, plus ``v<digits>`` when the letters end in
  ``v`` and digits follow (``efficientnetv2_rw_t`` -> ``efficientnetv2``, ``resnet50d`` -> ``resnet``,
  ``mobilenetv3_small_050`` -> ``mobilenetv3``). The selection is cached in zoo.json.
- ultralytics (optional, AGPL: imported here only): YOLOv8n and YOLO11n for every task whose yaml
  ultralytics bundles (detect, segment, pose, classify, OBB), built from the yaml.
- transformers: every image-classification config built offline (`HF_MODELS`), small where the
  default is large (the ViT-like ones: ViT-Tiny's width, 4 layers).

Per model, at 64 px where the model takes it, else the smallest size it takes from there:

- exact (ours): a random 30% of every prunable group removed; the pruned outputs (every output
  tensor) equal the masked original within 1e-4 max relative error with unchanged shapes. A failure
  is its first line; a failure that is not a one-line UserError is flagged as a raw traceback;
- ONNX parity: the pruned model exported by `runtime.export.export_onnx` (opset 17), run in an ONNX
  Runtime CPU session; its first output equals the torch pruned model's first output within
  `ONNX_TOL` (max |onnx - torch| / max |torch|);
- prunable share: 1 - g.param_count({every prunable group: 0 units}) / g.param_count(): the share of
  the parameters that belong to at least one prunable group (they would go if every such group
  were emptied); the rest the graph keeps whatever the budget;
- Torch-Pruning: `BasePruner` with random importance at pruning ratio 0.3 (the class outputs, or a
  YOLO's head, ignored) must run and keep the output shapes (the weaker check, as in graph.py);
- build time: ours (`build_dependency_graph`) and TP's (`DependencyGraph().build_dependency`), median
  of `--repeats` builds after a warm-up, the two tools taking turns, 1 thread.

Each tool step runs under a per-model time limit (`--limit`, SIGALRM).
Usage: PYTHONPATH=. python -m benchmarks.zoo [--models timm:resnet10t,ultralytics:yolov8n] [--resume] [--redo ...]
(`--select` only refreshes the cached timm selection, e.g. after a timm upgrade.)
Needs the `bench`, `timm` and `hf` extras (and ultralytics for the YOLO rows). Writes benchmarks/results/zoo.md
and zoo.json after every model, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import gc
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.common import (  # noqa: E402
    RESULTS,
    alternating_median_ms,
    header,
    header_markdown,
    markdown_table,
    time_limit,
    versions,
)
from benchmarks.graph import (  # noqa: E402
    failure,
    ours_check,
    outputs,
    param_total,
    randomise_bn,
    smallest_size,
    tp_build,
    tp_check,
    tp_ignored,
)
from iee_deploy.graph import DependencyGraph, build_dependency_graph  # noqa: E402
from iee_deploy.io import write_json, write_text  # noqa: E402
from iee_deploy.models import build_model  # noqa: E402

RESOLUTION = 64
NUM_CLASSES = 1000
ONNX_TOL = 1e-4
"""ONNX parity: max |onnx - torch| / max |torch| of the pruned model's first output (FP32 both sides)."""
SLOW_MS, SMALL_PARAMS_M = 1000.0, 50.0
"""The summary lists models under SMALL_PARAMS_M million parameters whose graph takes over SLOW_MS to build."""

SMALL_VIT = "hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768"
"""ViT-Tiny's width with 4 of its 12 layers: the transformers defaults are ViT-Base (86M parameters)."""
SMALL_DINO = "hidden_size=192, num_hidden_layers=4, num_attention_heads=3, mlp_ratio=4"
"""The same for DINOv2, whose config sets the MLP width as a ratio."""
HF_MODELS = [
    *(f"hf:{c}({SMALL_VIT})" for c in ("ViTConfig", "DeiTConfig", "BeitConfig", "Data2VecVisionConfig",
                                        "ViTMSNConfig", "IJepaConfig")),
    *(f"hf:{c}({SMALL_DINO})" for c in ("Dinov2Config", "Dinov2WithRegistersConfig")),
    "hf:EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0)",  # B0; the default is B7
    *(f"hf:{c}" for c in ("SwinConfig", "Swinv2Config", "DonutSwinConfig", "ConvNextConfig", "ConvNextV2Config",
                          "ResNetConfig", "RegNetConfig", "MobileNetV1Config", "MobileNetV2Config", "MobileViTConfig",
                          "MobileViTV2Config", "LevitConfig", "PoolFormerConfig", "SegformerConfig", "BitConfig",
                          "CvtConfig", "FocalNetConfig", "PvtConfig", "PvtV2Config", "SwiftFormerConfig",
                          "HGNetV2Config", "HieraConfig", "TextNetConfig", "PPLCNetConfig", "DinatConfig")),
]
HF_LEFT_OUT = ("CLIP, SigLIP, SigLIP 2 and MetaCLIP 2 (image classifiers built from a joint image-text config), "
               "ImageGPT and Perceiver (sequence models over pixels), ShieldGemma 2 (a language model) and "
               "TimmWrapper (a timm architecture: the timm rows)")
YOLO_TASKS = {"": "DetectionModel", "-seg": "SegmentationModel", "-pose": "PoseModel", "-cls": "ClassificationModel",
              "-obb": "OBBModel"}
YOLO_VERSIONS = ("yolov8n", "yolo11n")


def timm_family(name: str) -> str:
    """The architecture family of a timm model name (see the module docstring for the rule)."""
    token = name.removeprefix("tf_").split("_")[0]
    letters = re.match(r"[a-z]*", token).group(0)  # type: ignore[union-attr]
    version = re.match(r"\d+", token[len(letters):]) if letters.endswith("v") else None
    return letters + (version.group(0) if version else "") or token


def select_timm() -> dict[str, list[Any]]:
    """Family -> [its smallest timm model, parameters], among the models that build on the meta device."""
    import timm

    best: dict[str, list[Any]] = {}
    names = timm.list_models()
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                count = param_total(timm.create_model(name, pretrained=False))
        except Exception:  # a model that does not build offline is not a candidate
            continue
        family = timm_family(name)
        if family not in best or count < best[family][1]:
            best[family] = [name, count]
        if i % 100 == 0:
            print(f"selecting timm models: {i}/{len(names)} counted, {len(best)} families", flush=True)
    return dict(sorted(best.items()))


@dataclass(frozen=True)
class Entry:
    """One model of the sweep: its row name, source and how to build it at a size (None: the sweep's rule)."""

    name: str
    source: str
    build: Callable[[int], nn.Module]
    fixed_size: int | None = None

    def size(self, resolution: int) -> int:
        return self.fixed_size or smallest_size(self.name, resolution)


def _yolo(version: str, task: str) -> Entry:
    def build(size: int) -> nn.Module:
        from ultralytics.nn import tasks

        model: nn.Module = getattr(tasks, YOLO_TASKS[task])(f"{version}{task}.yaml", verbose=False)
        return model

    return Entry(f"ultralytics:{version}{task}", "ultralytics", build, fixed_size=RESOLUTION)


def entries(selection: dict[str, list[Any]]) -> list[Entry]:
    """Every model of the sweep: YOLO, transformers, then timm from the smallest up."""
    def zoo(name: str, source: str) -> Entry:
        return Entry(name, source, lambda size: build_model(name, NUM_CLASSES, size))

    found = [_yolo(v, t) for v in YOLO_VERSIONS for t in YOLO_TASKS]
    found += [zoo(n, "transformers") for n in HF_MODELS]
    found += [zoo(f"timm:{n}", "timm") for n, _ in sorted(selection.values(), key=lambda v: v[1])]
    return found


def zoo_tp_ignored(model: nn.Module) -> list[nn.Module]:
    """What TP must not prune: a YOLO's head, else every layer giving the class outputs (TP would change them)."""
    if type(model).__module__.startswith("ultralytics"):
        return [model.model[-1]]  # type: ignore[index]
    heads = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES)
             or (isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES)]
    return heads or tp_ignored(model)


def prunable_share(g: DependencyGraph) -> float:
    """1 - parameters with every prunable group emptied / all parameters (see the module docstring)."""
    return 1 - g.param_count({group.id: 0 for group in g.prunable_groups}) / g.param_count()


def onnx_parity(pruned: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Export `pruned`, run it in ONNX Runtime (1 thread), compare its first output with torch's."""
    import onnxruntime as ort

    from runtime.backends.ort import PROVIDERS, session_options
    from runtime.export import export_onnx

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(pruned, Path(tmp) / "pruned.onnx", x.shape[-1])
            session = ort.InferenceSession(str(path), session_options(1), providers=PROVIDERS)
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    except Exception as exc:
        row = failure(exc)
        return {"ok": False, "error": row["error"]}
    want = outputs(pruned, x)[0].numpy()
    if got.shape != want.shape:
        return {"ok": False, "error": f"ONNX output {got.shape}, torch {want.shape}"}
    err = float(np.abs(got - want).max() / np.abs(want).max())
    return {"ok": err <= ONNX_TOL, "rel_err": err}


def ours_side(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Our exactness row with the prunable share and the pruned model's ONNX parity."""
    g, pruned, row = ours_check(model, x)
    row["prunable_share"] = prunable_share(g)
    row["unprunable_groups"] = len(g.groups) - len(g.prunable_groups)
    row["onnx"] = onnx_parity(pruned, x) if row["handled"] else {"ok": False, "error": "not exact: not exported"}
    return row


def guarded(step: Callable[[], dict[str, Any]], limit: int) -> dict[str, Any]:
    """`step()`'s row, or the failure row when it raises or runs past `limit` seconds."""
    try:
        with time_limit(limit):
            return step()
    except Exception as exc:
        return failure(exc)


def measure(name: str, source: str, model: nn.Module, size: int, repeats: int, limit: int) -> dict[str, Any]:
    """Both tools on one model at `size` px: exactness, ONNX parity, prunable share, TP's check, build times."""
    start = time.perf_counter()
    model = randomise_bn(model).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    a = guarded(lambda: ours_side(model, x), limit)
    b = guarded(lambda: tp_check(model, x, zoo_tp_ignored), limit)
    builds: dict[str, Callable[[], object]] = {"ours": lambda: build_dependency_graph(model, x),
                                               "torch_pruning": lambda: tp_build(model, x)}
    # a tool is timed when its graph builds (TP's may, and its pruning fail)
    timed = {tool: fn for tool, fn in builds.items() if "error" not in guarded(lambda fn=fn: (fn(), {})[1], limit)}
    if timed:
        times = guarded(lambda: alternating_median_ms(timed, repeats), limit)
        for tool, row in (("ours", a), ("torch_pruning", b)):
            if tool in times:
                row["ms"] = times[tool]
    ratio = a["ms"] / b["ms"] if "ms" in a and "ms" in b else None
    return {"model": name, "source": source, "resolution": size, "params_m": round(param_total(model) / 1e6, 2),
            "ours": a, "torch_pruning": b, "ratio": ratio, "repeats": repeats,
            "seconds": round(time.perf_counter() - start, 1)}


def sweep_one(entry: Entry, resolution: int, repeats: int, limit: int) -> dict[str, Any]:
    """One entry's row; a model that cannot be built (or at no size) is a row with the reason."""
    start = time.perf_counter()
    try:
        with time_limit(limit), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            size = entry.size(resolution)
            model = entry.build(size)
    except Exception as exc:
        row = failure(exc)
        return {"model": entry.name, "source": entry.source, "resolution": None, "params_m": None,
                "ours": {**row, "error": f"build: {row['error']}"}, "torch_pruning": {"handled": False},
                "ratio": None, "repeats": repeats, "seconds": round(time.perf_counter() - start, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = measure(entry.name, entry.source, model, size, repeats, limit)
    del model
    gc.collect()
    return row


def _nan(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def progress_line(row: dict[str, Any]) -> str:
    a, b = row["ours"], row["torch_pruning"]
    onnx = a.get("onnx", {})
    return (f"{row['model'][:58]:58s} {row['resolution'] or '-'!s:>4s} {_nan(a.get('ms')):>8s} "
            f"{_nan(b.get('ms')):>8s} {'yes' if a['handled'] else 'NO':>5s} {'yes' if onnx.get('ok') else 'no':>4s} "
            f"{'yes' if b['handled'] else 'NO':>4s}" + (f"  ours: {a['error']}" if "error" in a else ""))


def normalised(line: str) -> str:
    """A refusal line with its model-specific names and numbers replaced, so that equal reasons aggregate."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", line))


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The summary lines: exactness, ONNX parity, raw tracebacks, speed, what stays unpruned and why."""
    unbuilt = [r for r in rows if r["ours"].get("error", "").startswith("build: ")]
    rows = [r for r in rows if r not in unbuilt]  # the sweep covers the models that build offline
    n = len(rows)
    exact = [r for r in rows if r["ours"]["handled"]]
    onnx = [r for r in exact if r["ours"].get("onnx", {}).get("ok")]
    raw = [r for r in rows if "error" in r["ours"] and not r["ours"]["user_error"]]
    both = [r for r in rows if r["ours"]["handled"] and r["torch_pruning"]["handled"] and r["ratio"] is not None]
    faster = [r for r in both if r["ratio"] <= 1]
    slow = [r for r in rows if (r["params_m"] or 0) < SMALL_PARAMS_M and r["ours"].get("ms", 0) > SLOW_MS]
    refusals = collections.Counter(normalised(r["ours"]["error"]) for r in rows if "error" in r["ours"])
    shares = [r["ours"]["prunable_share"] for r in exact]
    lowest = sorted(exact, key=lambda r: r["ours"]["prunable_share"])[:8]
    pct = lambda k: f"{100 * k / n:.0f}%" if n else "-"  # noqa: E731
    lines = [
        f"- Models that do not build offline on their own (left out of every count below): {len(unbuilt)}"
        + (f": {', '.join(r['model'] for r in unbuilt)} (each row says why)" if unbuilt else "") + ".",
        f"- Exact (ours): **{len(exact)}/{n}** ({pct(len(exact))}). Torch-Pruning handled (its weaker check): "
        f"{sum(bool(r['torch_pruning']['handled']) for r in rows)}/{n}.",
        f"- ONNX parity of the pruned model (within {ONNX_TOL:g}): **{len(onnx)}/{len(exact)}** of the exact ones.",
        f"- No raw traceback (exact, wrong outputs, or refused with a one-line UserError): **{n - len(raw)}/{n}**"
        + (f"; raw: {', '.join(r['model'] for r in raw)}" if raw else "") + ".",
        f"- Speed: of the {len(both)} models both tools handle, ours builds its graph at least as fast as "
        f"Torch-Pruning on **{len(faster)}** ({100 * len(faster) / len(both):.1f}%); the median model takes "
        f"{statistics.median(r['ratio'] for r in both):.2f} times Torch-Pruning's time." if both else
        "- Speed: no model handled by both tools yet.",
        f"- Models under {SMALL_PARAMS_M:.0f}M parameters whose graph takes over {SLOW_MS / 1000:.0f} s to build: "
        + (", ".join(f"{r['model']} ({r['ours']['ms'] / 1000:.1f} s)" for r in slow) or "none") + ".",
        "", "### What the graph keeps unpruned, and why", "",
        (f"- Of the exact models, the median share of parameters in prunable groups is "
         f"{statistics.median(shares):.2f} (min {min(shares):.2f}); the lowest: "
         + ", ".join(f"{r['model']} {r['ours']['prunable_share']:.2f}" for r in lowest) + ".") if shares else
        "- No exact model yet.",
        "- Within an exact model, channels are kept when they reach the model's input or outputs, or are pinned by "
        "a literal size, a channel-mixing op or a norm over them (see the graph's documentation).",
        *(["- Models the graph refuses or gets wrong, by reason (names and numbers elided):", "",
           *markdown_table(["models", "reason"], [[c, f"`{k}`"] for k, c in refusals.most_common()])] if refusals
          else ["- The graph refuses no model that builds, and gets none wrong."]),
    ]
    return lines


def runs_note(rows: list[dict[str, Any]]) -> list[str]:
    """A line naming the commits whose runs measured the rows, when there is more than one (`--resume`, `--shard`).

    "+dirty" there is the sweep's own zoo.json, which every run rewrites while it measures."""
    runs = collections.Counter(r.get("commit", "?") for r in rows)
    if len(runs) < 2:
        return []
    return ["- Rows come from more than one run (`--resume`, `--shard`, `--redo` with the options above): "
            + ", ".join(f"{c}: {n} rows" for c, n in runs.items())
            + "; the header's command and commit are the latest run's."]


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], planned: int) -> str:
    def yes(value: bool | None, why: str | None = None) -> str:
        return "yes" if value else f"**no**{f' ({why})' if why else ''}"

    def line(r: dict[str, Any]) -> list[object]:
        a, b = r["ours"], r["torch_pruning"]
        onnx = a.get("onnx", {})
        onnx_text = (f"yes ({onnx['rel_err']:.0e})" if onnx.get("ok") else
                     f"no ({onnx.get('error') or format(onnx.get('rel_err', float('nan')), '.0e')})") if a["handled"] else "-"
        why = a.get("error") or (f"outputs differ: {a['rel_err']:.0e}" if "rel_err" in a else None)
        return [r["model"], r["source"], r["resolution"] or "-", r["params_m"] if r["params_m"] is not None else "-",
                yes(a["handled"], why), f"{a['rel_err']:.0e}" if "rel_err" in a else "-", onnx_text,
                f"{a['prunable_share']:.2f}" if "prunable_share" in a else "-", _nan(a.get("ms")), _nan(b.get("ms")),
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "-", yes(b["handled"], b.get("error"))]

    head = ["model", "source", "px", "params (M)", "exact (ours)", "rel err", "ONNX parity", "prunable share",
            "ours ms", "TP ms", "ours/TP", "TP handled"]
    return "\n".join([
        "# Model zoo: iee_deploy.graph vs Torch-Pruning on timm, YOLO and transformers models", "",
        *header_markdown(meta, f"sweep at {meta['sweep_resolution']} px (each model at the smallest size it takes "
                               "from there; the px column)"),
        (f"- Models: the smallest timm model of each of {meta['timm_families']} architecture families (family: "
         "a name without `tf_`, first `_` token, its leading letters plus `v<digits>`), YOLOv8n/YOLO11n of every "
         f"bundled task, and the transformers image classifiers built from a config ({SMALL_VIT} for the ViT-like "
         f"ones, EfficientNet at B0; left out: {HF_LEFT_OUT})." if meta["timm_families"] else
         "- Models: those named by `--models`.") + " Random init, randomised norms, batch 1.",
        "- Exact: a random 30% of every prunable group removed, the pruned outputs equal the masked original "
        "within 1e-4 max relative error (every output tensor). Otherwise the reason's first line; one that is not "
        "a one-line UserError counts as a raw traceback.",
        f"- ONNX parity: the pruned model exported with the project's exporter (`runtime.export`: TorchScript at opset 17, "
        f"or the torch.export-based exporter at opset 18 where that fails) and run in ONNX Runtime "
        f"(CPU, 1 thread): max |onnx - torch| / max |torch| of the first output <= {ONNX_TOL:g}.",
        "- Prunable share: 1 - g.param_count({every prunable group: 0 units}) / g.param_count(): the parameters "
        "that belong to at least one prunable group.",
        f"- Build time: median of {meta['repeats']} builds after a warm-up, the tools taking turns, "
        f"{meta['torch_threads']} thread. TP handled: its random 30% pruning (class outputs or YOLO head ignored) "
        f"runs and keeps the output shapes; it runs with its defaults (its own YOLOv8 example rewrites C2f's "
        f"split, and its ViT examples pass `num_heads`, by hand). Each step has {meta['limit']} s per model.",
        *runs_note(rows),
        "", "## Summary", "", *summary(rows), "",
        f"## Models ({len(rows)} of {planned})", "",
        *([f"The sweep stopped after {len(rows)} of {planned} models; rerun the command with `--resume`.", ""]
          if len(rows) < planned else []),
        *markdown_table(head, [line(r) for r in rows]), "",
    ])


def split_names(text: str) -> list[str]:
    """Comma-separated model names; commas inside a name's (overrides) do not split."""
    return [n.strip() for n in re.split(r",(?![^()]*\))", text) if n.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="Comma-separated row names (timm:NAME, hf:..., "
                        "ultralytics:yolov8n-seg); default: the whole sweep.")
    parser.add_argument("--resolution", type=int, default=RESOLUTION,
                        help="Sweep input size (each model at the smallest size it takes from here).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed builds per tool and model (median reported).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both tools.")
    parser.add_argument("--limit", type=int, default=300, help="Seconds per step and model before it counts as failed.")
    parser.add_argument("--out", default=str(RESULTS), help="Folder for zoo.md/zoo.json.")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the rows of the zoo.json in --out (same --resolution); measure the rest.")
    parser.add_argument("--redo", default="", help="With --resume: comma-separated models to measure again.")
    parser.add_argument("--shard", default="1/1",
                        help="K/N: measure only every N-th planned model from the K-th (run N processes, one per core, "
                             "with --resume; each merges its rows into zoo.json under a lock).")
    parser.add_argument("--select", action="store_true",
                        help="Only (re)select the timm models (every timm model built on the meta device: minutes) "
                             "and store the selection in zoo.json, keeping its rows.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    earlier = json.loads((out / "zoo.json").read_text()) if (out / "zoo.json").is_file() else {}
    timm_version = versions("timm").get("timm")
    if args.select:
        selection = select_timm()
        write_json(out / "zoo.json", {**earlier, "timm_selection": selection, "timm_selection_version": timm_version})
        print(f"{len(selection)} timm families: stored in {out / 'zoo.json'}")
        return
    # the timm selection (minutes: every timm model built on the meta device) is made again for another timm
    cached = earlier.get("timm_selection") if earlier.get("timm_selection_version") == timm_version else None
    selection = cached or ({} if args.models else select_timm())
    planned = entries(selection)
    if args.models:
        known = {e.name: e for e in planned}
        planned = [known.get(n) or Entry(n, n.split(":")[0], lambda size, n=n: build_model(n, NUM_CLASSES, size))
                   for n in split_names(args.models)]
    meta = {**header(args.threads, "torch-pruning", "timm", "transformers", "ultralytics", "onnxruntime"),
            "sweep_resolution": args.resolution, "repeats": args.repeats, "limit": args.limit,
            "timm_families": len(selection), "timm_selection_version": timm_version}
    redo = set(split_names(args.redo))
    rows = [r for r in earlier.get("rows", []) if r["model"] not in redo] if (
        args.resume and earlier.get("sweep_resolution") == args.resolution) else []
    done = {r["model"] for r in rows}
    shard, shards = parse_shard(args.shard)
    print(f"{'model':58s} {'px':>4s} {'ours ms':>8s} {'TP ms':>8s} {'exact':>5s} {'onnx':>4s} {'TP':>4s}", flush=True)
    if not args.resume:  # a fresh sweep starts from no rows
        write_json(out / "zoo.json", {**meta, "timm_selection": selection, "rows": []})
    for entry in [e for e in planned if e.name not in done][shard - 1::shards]:
        row = {**sweep_one(entry, args.resolution, args.repeats, args.limit), "commit": meta["commit"]}
        print(progress_line(row), flush=True)
        with merge_lock(out / "zoo.json.lock"):  # another shard may have added rows since
            current = json.loads((out / "zoo.json").read_text()).get("rows", []) if (out / "zoo.json").is_file() else []
            merged = [r for r in current if r["model"] != row["model"]] + [row]
            write_json(out / "zoo.json", {**meta, "timm_selection": selection, "rows": merged})
            write_text(out / "zoo.md", markdown(meta, merged, len({r["model"] for r in merged} | {e.name for e in planned})))
    print(f"wrote {out / 'zoo.md'} and {out / 'zoo.json'}")


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"error: --shard '{text}' is not K/N; e.g. 1/2") from None
    if not 1 <= k <= n:
        raise SystemExit(f"error: --shard {text} needs 1 <= K <= N")
    return k, n


@contextlib.contextmanager
def merge_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, the lock that serialises shards' read-merge-write of zoo.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


if __name__ == "__main__":
    main()
