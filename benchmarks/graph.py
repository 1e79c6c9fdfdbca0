"""Dependency-graph coverage and build time: iee_deploy.graph vs Torch-Pruning, side by side in one run.

Sweeps every model of the zoo (all torchvision classifiers and the paper's models) and the backbones
(with FPN) of three torchvision detectors, batch 1, eval mode, random init with randomised norms:

- coverage, ours: remove a random 30% of every prunable group, physically prune, and require the
  pruned outputs to equal the masked original within 1e-4 relative error (every FPN level, for
  backbones, whose channel counts must not change: the detection heads read them);
- coverage, Torch-Pruning: `BasePruner` with random importance at pruning_ratio 0.3 (classifier, or
  the FPN / SSD extra layers, ignored), then a forward pass that must run and give the original
  output shapes (TP offers no masked reference, so this is the weaker check);
- build time: median of `--repeats` builds after a warm-up, ours (`build_dependency_graph`) and TP's
  (`DependencyGraph().build_dependency`, a forward pass with autograd). The ResNet-50 row at
  `--speed-resolution` (224 px) is the headline speed ratio.

The sweep runs at `--resolution` (each model at the smallest size it accepts from there), since the
largest models at their native size do not fit a 2-core machine's time. Single-threaded by default.

Usage: PYTHONPATH=. python -m benchmarks.graph [--models resnet50,swin_t] [--resolution 64] [--repeats 3] [--resume]
Needs the `bench` extra (pip install torch-pruning). Writes benchmarks/results/graph.md and graph.json
(after every model, so an interrupted sweep keeps what it measured).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_graph import random_keep, randomise_bn  # noqa: E402  (the acceptance tests' own helpers)
from test_graph_coverage import DETECTION, detection_model  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    header,
    header_markdown,
    markdown_table,
    median_ms,
    time_limit,
)
from iee_deploy.errors import UserError  # noqa: E402
from iee_deploy.graph import DependencyGraph, build_dependency_graph, mask_model, prune_model  # noqa: E402
from iee_deploy.io import write_json, write_text  # noqa: E402
from iee_deploy.models import build_model, list_models, model_spec  # noqa: E402

REMOVE = 0.3
LARGEST = ("vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_x_32gf", "efficientnet_v2_l")
"""Swept last (hundreds of millions of parameters: minutes to build and copy on 2 cores)."""


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor the model returns (a dict's values, nested tuples and lists flattened), in order."""
    with torch.no_grad():
        out = model(x)

    def flat(value: Any) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
        return [t for item in items for t in flat(item)]

    return flat(out)


def param_total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rel_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Max over the outputs of max |a - b| / max |a|."""
    return max(float((u - v).abs().max() / u.abs().max()) for u, v in zip(a, b))


def ours_check(model: nn.Module, x: torch.Tensor) -> tuple[DependencyGraph, nn.Module, dict[str, Any]]:
    """Our graph, the model pruned by a random 30% of every prunable group, and the exactness row."""
    g = build_dependency_graph(model, x)
    keep = random_keep(g, seed=1)
    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    a, b = outputs(masked, x), outputs(pruned, x)
    err = rel_error(a, b)
    same_shapes = [t.shape for t in a] == [t.shape for t in b]
    return g, pruned, {"groups": len(g.prunable_groups), "rel_err": err, "handled": err < 1e-4 and same_shapes,
                       "params_kept": param_total(pruned) / param_total(model)}


def ours(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {"ms": median_ms(lambda: build_dependency_graph(model, x), repeats)}
    row.update(ours_check(model, x)[2])
    return row


def tp_ignored(model: nn.Module) -> list[nn.Module]:
    """What TP must not prune: a classifier's last Linear, or a backbone's FPN / SSD extra layers."""
    for attr in ("fpn", "extra"):
        if hasattr(model, attr):
            return [getattr(model, attr)]
    return [[m for m in model.modules() if isinstance(m, nn.Linear)][-1]]


def tp_build(model: nn.Module, x: torch.Tensor) -> Any:
    """Torch-Pruning's dependency graph of `model` (a forward pass with autograd)."""
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=x)


def tp_check(model: nn.Module, x: torch.Tensor, ignored: Callable[[nn.Module], list[nn.Module]] = tp_ignored
             ) -> dict[str, Any]:
    """TP's group count, and its random 30% pruning: handled when it runs and keeps the output shapes."""
    import torch_pruning as tp

    row: dict[str, Any] = {"groups": len(list(tp_build(model, x).get_all_groups(
        ignored_layers=ignored(model), root_module_types=[nn.Conv2d, nn.Linear])))}
    pruned = copy.deepcopy(model)
    pruner = tp.pruner.BasePruner(pruned, x, importance=tp.importance.RandomImportance(), pruning_ratio=REMOVE,
                                  ignored_layers=ignored(pruned))
    pruner.step()
    shapes = [t.shape for t in outputs(pruned, x)]
    row["handled"] = shapes == [t.shape for t in outputs(model, x)]
    if not row["handled"]:
        row["error"] = f"output shapes {[tuple(s) for s in shapes]}"
    row["params_kept"] = param_total(pruned) / param_total(model)
    return row


def torch_pruning(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {"ms": median_ms(lambda: tp_build(model, x), repeats)}
    row.update(tp_check(model, x))
    return row


def run_tool(tool: Callable[[nn.Module, torch.Tensor, int], dict[str, Any]], model: nn.Module, x: torch.Tensor,
             repeats: int, limit: int) -> dict[str, Any]:
    """One tool's row; an exception or running past `limit` seconds is reported, not raised."""
    try:
        with time_limit(limit):
            return tool(model, x, repeats)
    except Exception as exc:
        return failure(exc)


def failure(exc: BaseException) -> dict[str, Any]:
    """A tool's row for a model it failed on: the error's first line, and whether it is a one-line UserError
    (else a raw exception: a traceback a user would see)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return {"handled": False, "error": (first if isinstance(exc, UserError) else f"{type(exc).__name__}: {first}")[:200],
            "user_error": isinstance(exc, UserError)}


def smallest_size(name: str, resolution: int, tries: int = 16) -> int:
    """The smallest size from `resolution` that the model accepts (its rule, then its probe: up to `tries`
    sizes in steps of the least multiple of its `resolution_step` from 16 px); the model's own UserError when
    none of them."""
    spec = model_spec(name)
    size = -(-max(resolution, spec.min_resolution) // spec.resolution_step) * spec.resolution_step
    step = -(-16 // spec.resolution_step) * spec.resolution_step
    refusal = None
    for candidate in range(size, size + tries * step, step):
        try:
            spec.check_resolution(candidate)
            return candidate
        except UserError as exc:
            refusal = exc
    assert refusal is not None
    raise refusal


def _model(name: str, size: int) -> nn.Module:
    if name in DETECTION:
        return randomise_bn(detection_model(name, size).backbone).eval()
    return randomise_bn(build_model(name, 1000, size)).eval()


def measure(name: str, size: int, repeats: int, limit: int) -> dict[str, Any]:
    """Both tools on one model (a detector: its backbone with FPN) at `size` px."""
    start = time.perf_counter()
    model = _model(name, size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    a, b = run_tool(ours, model, x, repeats, limit), run_tool(torch_pruning, model, x, repeats, limit)
    ratio = a["ms"] / b["ms"] if "ms" in a and "ms" in b else None
    row = {"model": name + (" (backbone+FPN)" if name in DETECTION else ""), "resolution": size,
           "params_m": round(param_total(model) / 1e6, 1), "ours": a, "torch_pruning": b, "ratio": ratio,
           "seconds": round(time.perf_counter() - start, 1), "repeats": repeats}
    del model
    gc.collect()
    print(f"{row['model']:44s} {size:4d} {a.get('ms', float('nan')):8.1f} {b.get('ms', float('nan')):8.1f} "
          f"{ratio if ratio is not None else float('nan'):6.2f} {'yes' if a['handled'] else 'NO':>5s} "
          f"{'yes' if b['handled'] else 'NO':>5s} {a.get('groups', '-')!s:>5s}/{b.get('groups', '-')!s:<5s}"
          + (f"  ours: {a['error']}" if "error" in a else ""), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None,
                        help="Comma-separated zoo or detection names (default: the whole zoo and the 3 detectors).")
    parser.add_argument("--resolution", type=int, default=64,
                        help="Sweep input size (each model at the smallest size it accepts from here).")
    parser.add_argument("--speed-model", default="resnet50", help="The headline build-time comparison's model.")
    parser.add_argument("--speed-resolution", type=int, default=224, help="Its input size.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed builds per tool and model (median reported).")
    parser.add_argument("--speed-repeats", type=int, default=7, help="Timed builds for the headline row.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both tools.")
    parser.add_argument("--limit", type=int, default=300, help="Seconds per tool and model before it counts as failed.")
    parser.add_argument("--out", default=str(RESULTS), help="Folder for graph.md/graph.json.")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the model rows of the graph.json already in --out (same --resolution) and "
                             "measure only the models it lacks, and those named in --redo.")
    parser.add_argument("--redo", default="",
                        help="With --resume: comma-separated models to measure again (e.g. after a graph change).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else [*list_models(), *DETECTION]
    names.sort(key=lambda n: n in LARGEST)  # the largest last: an interrupted sweep keeps the rest
    meta = {**header(args.threads, "torchvision", "torch-pruning"), "sweep_resolution": args.resolution,
            "repeats": args.repeats, "limit": args.limit}
    out = Path(args.out)
    print(f"{'model':44s} {'px':>4s} {'ours ms':>8s} {'TP ms':>8s} {'ratio':>6s} {'ours':>5s} {'TP':>5s} groups")
    speed = measure(args.speed_model, args.speed_resolution, args.speed_repeats, args.limit)
    rows = kept_rows(out / "graph.json", args.resolution, set(filter(None, args.redo.split(",")))) if args.resume else []
    done = {r["model"].removesuffix(" (backbone+FPN)") for r in rows}
    for name in [n for n in names if n not in done]:
        row = measure(name, smallest_size(name, args.resolution) if name not in DETECTION else
                      max(args.resolution, 64), args.repeats, args.limit)
        rows.append({**row, "commit": meta["commit"]})
        write_json(out / "graph.json", {**meta, "speed": speed, "rows": rows})
        write_text(out / "graph.md", _markdown(meta, speed, rows, len(names)))
    print(f"wrote {out / 'graph.md'} and {out / 'graph.json'}")


def kept_rows(path: Path, resolution: int, redo: set[str]) -> list[dict[str, Any]]:
    """The rows of an earlier sweep at `resolution` worth keeping (not named in `redo`), each with its commit."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    if earlier.get("sweep_resolution") != resolution:
        return []
    return [{**r, "commit": r.get("commit", earlier["commit"])} for r in earlier["rows"]
            if r["model"].removesuffix(" (backbone+FPN)") not in redo]


def _markdown(meta: dict[str, Any], speed: dict[str, Any], rows: list[dict[str, Any]], planned: int) -> str:
    def ms(row: dict[str, Any]) -> str:
        return f"{row['ms']:.1f}" if "ms" in row else "-"

    def ok(row: dict[str, Any]) -> str:
        return "yes" if row.get("handled") else f"**no** ({row.get('error', 'wrong output')})"

    def line(r: dict[str, Any]) -> list[object]:
        a, b = r["ours"], r["torch_pruning"]
        return [r["model"], r["resolution"], r["params_m"], ms(a), ms(b),
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "-", ok(a), ok(b),
                f"{a.get('groups', '-')}/{b.get('groups', '-')}", f"{a['rel_err']:.1e}" if "rel_err" in a else "-",
                f"{a['params_kept']:.2f}" if "params_kept" in a else "-"]

    head = ["model", "px", "params (M)", "ours ms", "TP ms", "ratio", "ours handled", "TP handled",
            "groups ours/TP", "ours rel err", "ours params kept"]
    handled = sum(bool(r["ours"].get("handled")) for r in rows), sum(bool(r["torch_pruning"].get("handled")) for r in rows)
    a, b = speed["ours"], speed["torch_pruning"]
    runs: dict[str, int] = {}
    for r in rows:
        runs[r["commit"]] = runs.get(r["commit"], 0) + 1
    commits = ", ".join(f"{c}: {n}" for c, n in runs.items())
    lines = [
        "# Dependency graph: iee_deploy.graph vs Torch-Pruning", "",
        *header_markdown(meta, f"sweep at {meta['sweep_resolution']} px (each model at the smallest size it "
                               "accepts from there: ViT a multiple of its patch, MaxViT 224, Inception 75, AlexNet 63)"),
        f"- Sweep resolution: {meta['sweep_resolution']} px, not the native sizes (224-600 px): the whole sweep at "
        "native sizes does not fit a shared 2-core machine's time. Group structure does not depend on the size.",
        f"- Build time: median of {meta['repeats']} builds after a warm-up, batch 1. Ratio = ours / Torch-Pruning "
        "(below 1: ours faster). Timings on a shared machine are noisy; the two tools alternate per model. "
        f"A tool running past {meta['limit']} s on one model counts as not handled.",
        "- Handled, ours: a random 30% of every prunable group removed, pruned outputs equal the masked original "
        "(max relative error < 1e-4) with unchanged output shapes. Handled, TP: its random 30% pruning runs and "
        "keeps the output shapes (TP has no masked reference: the weaker check). TP runs with its defaults: no "
        "`num_heads`, `unwrapped_parameters` or custom pruners, which its own ViT/Swin examples add by hand.",
        "- Groups: prunable channel groups (ours / TP's `get_all_groups` over conv+linear, classifier or FPN ignored).",
        "- Norms and attention: channels a LayerNorm normalises together are kept (removing one changes the "
        "statistics of the others, so a masked model would not equal the pruned one): the embedding width of "
        "ViT/Swin/ConvNeXt/MaxViT. Attention heads of nn.MultiheadAttention (ViT), Swin's shifted-window "
        "attention and MaxViT's attention are units (whole heads removed). The other prunable groups are the MLP hidden widths and convs. TP prunes the embedding width (and with it "
        "nn.MultiheadAttention's inner width) too, without an exactness check.",
        "",
        f"## Build time on {speed['model']} at {speed['resolution']} px (headline)", "",
        f"Ours {ms(a)} ms vs Torch-Pruning {ms(b)} ms: ratio **{speed['ratio']:.2f}** "
        f"(median of {speed['repeats']} builds; handled: ours {ok(a)}, TP {ok(b)})." if speed["ratio"] else
        f"Ours {ok(a)}, TP {ok(b)}.",
        "",
        f"## Sweep ({len(rows)} of {planned} models)", "",
        *([f"The sweep stopped after {len(rows)} of {planned} models (the time limit of the session that ran it); "
           "rerun the command with `--resume` for the rest.", ""] if len(rows) < planned else []),
        *([f"Rows come from more than one run (`--resume`): {commits} (commit: models measured there); "
           "the header's commit is the latest run's.", ""] if len(set(r["commit"] for r in rows)) > 1 else []),
        *markdown_table(head, [line(r) for r in rows]),
        "", f"Handled: ours {handled[0]}/{len(rows)}, Torch-Pruning {handled[1]}/{len(rows)}.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
