"""Dependency-graph build time and coverage: iee_deploy.graph vs Torch-Pruning, every zoo model, one run.

For each model at its native resolution (batch 1, eval mode, random init with randomised BN):

- build time: median of `--repeats` builds after one warm-up, for `build_dependency_graph` and for
  Torch-Pruning's `DependencyGraph().build_dependency` (which runs a forward pass with autograd);
- coverage, ours: remove a random 30% of every prunable group, physically prune, and require the
  pruned outputs to equal the masked original within 1e-4 relative error;
- coverage, Torch-Pruning: `BasePruner` with random importance at pruning_ratio 0.3 (classifier
  ignored), then a forward pass that must run and give the right output shape (TP offers no masked
  reference, so this is the weaker check).

Usage: python benchmarks/graph.py [--models resnet50,shufflenet_v2_x1_0] [--repeats 5] [--threads N]
Needs the `bench` extra (pip install torch-pruning). Writes benchmarks/results/graph.md and graph.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_graph import random_keep, randomise_bn  # noqa: E402  (the acceptance test's own helpers)

from benchmarks.common import median_ms  # noqa: E402
from iee_deploy.graph import build_dependency_graph, mask_model, prune_model  # noqa: E402
from iee_deploy.io import write_json, write_text  # noqa: E402
from iee_deploy.models import build_model, list_models, model_spec  # noqa: E402


def ours(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    try:
        row["ms"] = median_ms(lambda: build_dependency_graph(model, x), repeats)
        g = build_dependency_graph(model, x)
        keep = random_keep(g, seed=1)
        pruned = prune_model(model, g, keep)
        masked = mask_model(copy.deepcopy(model), g, keep)
        with torch.no_grad():
            a, b = masked(x), pruned(x)
        err = float((a - b).abs().max() / a.abs().max())
        row.update(groups=len(g.prunable_groups), rel_err=err, handled=err < 1e-4,
                   params_kept=sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in model.parameters()))
        if len(g.prunable_groups):
            counts = {gid: len(idx) for gid, idx in keep.items()}
            row["layer_channels_us"] = median_ms(lambda: g.layer_channels(counts), 50) * 1e3
    except Exception as exc:  # report, do not stop the benchmark
        row.update(handled=False, error=f"{type(exc).__name__}: {exc}"[:200])
    return row


def torch_pruning(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    import torch_pruning as tp

    row: dict[str, Any] = {}
    try:
        row["ms"] = median_ms(lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x), repeats)
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        row["groups"] = len(list(dg.get_all_groups(ignored_layers=[classifier], root_module_types=[nn.Conv2d, nn.Linear])))
        pruned = copy.deepcopy(model)
        head = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
        pruner = tp.pruner.BasePruner(pruned, x, importance=tp.importance.RandomImportance(), pruning_ratio=0.3,
                                      ignored_layers=[head])
        pruner.step()
        with torch.no_grad():
            out = pruned(x)
        row["handled"] = tuple(out.shape) == (1, head.out_features)
        row["params_kept"] = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in model.parameters())
    except Exception as exc:
        row.update(handled=False, error=f"{type(exc).__name__}: {exc}"[:200])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(list_models()), help="Comma-separated zoo names (default: all).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed builds per tool and model (median reported).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both tools (default: torch's).")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="Folder for graph.md/graph.json.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []
    print(f"{'model':20s} {'ours ms':>8s} {'TP ms':>8s} {'ratio':>6s} {'ours':>5s} {'TP':>5s} {'groups':>11s}")
    for name in args.models.split(","):
        size = model_spec(name).native_resolution
        model = randomise_bn(build_model(name, 1000, size)).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        a, b = ours(model, x, args.repeats), torch_pruning(model, x, args.repeats)
        ratio = a["ms"] / b["ms"] if "ms" in a and "ms" in b else None
        rows.append({"model": name, "resolution": size, "ours": a, "torch_pruning": b, "ratio": ratio})
        print(f"{name:20s} {a.get('ms', float('nan')):8.1f} {b.get('ms', float('nan')):8.1f} "
              f"{ratio if ratio is not None else float('nan'):6.2f} {'yes' if a['handled'] else 'NO':>5s} "
              f"{'yes' if b['handled'] else 'NO':>5s} {a.get('groups', '-')!s:>5s}/{b.get('groups', '-')!s:<5s}",
              flush=True)
    load_after = os.getloadavg()

    versions = {pkg: metadata.version(pkg) for pkg in ("torch", "torchvision", "torch-pruning", "iee-deploy")
                if _installed(pkg)}
    meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "threads": torch.get_num_threads(), "load_average_before_after": [load_before[0], load_after[0]],
            "versions": versions, "repeats": args.repeats}
    out = Path(args.out)
    write_json(out / "graph.json", {**meta, "rows": rows})
    write_text(out / "graph.md", _markdown(meta, rows))
    print(f"wrote {out / 'graph.md'} and {out / 'graph.json'}")


def _installed(pkg: str) -> bool:
    try:
        metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return False
    return True


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    def ms(row: dict[str, Any]) -> str:
        return f"{row['ms']:.1f}" if "ms" in row else "-"

    def ok(row: dict[str, Any]) -> str:
        return "yes" if row.get("handled") else f"**no** ({row.get('error', 'wrong output')})"

    lines = [
        "# Dependency graph: iee_deploy.graph vs Torch-Pruning",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date (UTC): {meta['date']}; machine: {meta['machine']}; torch threads: {meta['threads']}",
        f"- Load average (1 min) before / after: {meta['load_average_before_after'][0]:.1f} / "
        f"{meta['load_average_before_after'][1]:.1f} (a shared machine: timings are noisy)",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- Build time: median of {meta['repeats']} builds after a warm-up, native resolution, batch 1. "
        "Ratio = ours / Torch-Pruning (below 1: ours faster).",
        "- Handled, ours: random 30% of every prunable group removed, pruned outputs equal the masked original "
        "(max relative error < 1e-4). Handled, TP: its 30% random pruning runs and gives the right output shape.",
        "- Groups: prunable channel groups found (ours / TP's `get_all_groups` over conv+linear, classifier ignored).",
        "",
        "| model | px | ours ms | TP ms | ratio | ours handled | TP handled | groups ours/TP | ours rel err "
        "| layer_channels us |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["ours"], r["torch_pruning"]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        err = f"{a['rel_err']:.1e}" if "rel_err" in a else "-"
        lc = f"{a['layer_channels_us']:.0f}" if "layer_channels_us" in a else "-"
        lines.append(f"| {r['model']} | {r['resolution']} | {ms(a)} | {ms(b)} | {ratio} | {ok(a)} | {ok(b)} | "
                     f"{a.get('groups', '-')}/{b.get('groups', '-')} | {err} | {lc} |")
    handled = sum(bool(r["ours"].get("handled")) for r in rows), sum(bool(r["torch_pruning"].get("handled")) for r in rows)
    lines += ["", f"Handled: ours {handled[0]}/{len(rows)}, Torch-Pruning {handled[1]}/{len(rows)}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
