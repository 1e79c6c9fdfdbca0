"""Speed of the toolkit's parts: training-step time of IEE vs dense vs RigL, graph build, solvers, LUT queries.

    PYTHONPATH=. python -m benchmarks.speed            # full run (about 10 minutes on 2 shared cores)
    PYTHONPATH=. python -m benchmarks.speed --quick    # a few minutes: fewer rounds, models and repeats

1. Training steps, interleaved in one run: plain dense training (zero_grad, forward, backward,
   SGD step; no hooks), RigL and IEE (Theta_K frozen while exploring) on the same model, batch and
   data, each with its own copy of the same initial weights. Every round runs one step of each,
   in a rotating order, so machine noise hits all three alike. Each step is timed around the
   trainer's own `train_step` (hooks included) and filed by what it did: IEE "outside explore"
   (Importance Estimation, Accuracy Improvement, final), IEE "explore" (Reactivate & Explore),
   and "update" steps (prune / reactivate / grow, RigL's drop-and-grow) apart. Reported: median
   ms per category and the ratio to dense's median (the goal: IEE <= 1.15x dense outside
   explore). The masks are applied to dense tensors, so no sparse method is faster than dense.
2. Dependency-graph build time of every zoo model (native resolution, batch 1; median).
3. Solver times on the ResNet-50-shaped knapsacks of `benchmarks.solvers` (median).
4. `LatencyModel.layer_latency` throughput on a resnet20 cpu LUT (`benchmarks.profiler.query_speed`);
   the LUT is profiled once into benchmarks/.cache/.

Writes benchmarks/results/speed.md, speed.json and speed.png (per-step time traces and ratios).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    CACHE,
    RESULTS,
    header,
    header_markdown,
    markdown_table,
    median_ms,
    write_results,
)
from iee_deploy.distributed import Distributed
from iee_deploy.graph import build_dependency_graph
from iee_deploy.methods import SparsityConfig, SparsityMethod, TrainContext, build_method
from iee_deploy.methods.iee import IEE
from iee_deploy.methods.schedule import Stage, iee_step
from iee_deploy.models import build_model, list_models, model_spec
from iee_deploy.seeding import seed_everything
from iee_deploy.train.trainer import train_step

Step = Callable[[int, torch.Tensor, torch.Tensor], str]
"""One training step (step index, images, labels) -> the category it is filed under."""


def dense_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Step:
    """Plain dense training: what `train_step` does without any method hook."""

    def run(step: int, images: torch.Tensor, labels: torch.Tensor) -> str:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        float(loss.detach()), int((logits.argmax(1) == labels).sum())  # as train_step reads them
        return "dense"

    return run


def method_step(model: nn.Module, optimizer: torch.optim.Optimizer, method: SparsityMethod) -> Step:
    """The trainer's `train_step` for `method`, filed by IEE stage or by whether the structure changed."""

    def run(step: int, images: torch.Tensor, labels: torch.Tensor) -> str:
        result = train_step(model, method, optimizer, step, images, labels)
        if isinstance(method, IEE):
            s = iee_step(step, *method.hjq, method.updates)
            if s.events:
                return "update"
            return "explore" if s.stage is Stage.REACTIVATE_EXPLORE else "outside explore"
        return "update" if result.records else "outside explore"

    return run


def training_steps(rounds: int, warmup: int, period: int, model_name: str, batch: int, resolution: int) -> dict[str, Any]:
    """Interleaved per-step times of dense, RigL and IEE (see the module docstring)."""
    seed_everything(0)
    base = build_model(model_name, 10, resolution)
    third = period // 3
    steps: dict[str, Step] = {}
    for name in ("dense", "rigl", "iee"):
        model = copy.deepcopy(base).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        if name == "dense":
            steps[name] = dense_step(model, optimizer)
            continue
        config = SparsityConfig(method=name, sparsity=0.9, distribution="erk",
                                **({"hjq": (third, third, third)} if name == "iee" else {"delta_t": period}))
        method = build_method(config, model, Distributed(), seed=0)
        method.setup(TrainContext(rounds, optimizer))
        steps[name] = method_step(model, optimizer, method)
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 3, resolution, resolution, generator=gen), torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(4)]
    times: dict[str, list[tuple[int, str, float]]] = {name: [] for name in steps}
    names = list(steps)
    for step in range(rounds):
        images, labels = data[step % len(data)]
        order = names[step % 3:] + names[: step % 3]
        for name in order:
            start = time.perf_counter()
            category = steps[name](step, images, labels)
            times[name].append((step, category, (time.perf_counter() - start) * 1e3))
        if step % 25 == 0:
            print(f"training steps: round {step}/{rounds}", file=sys.stderr, flush=True)
    dense = statistics.median(ms for step, _, ms in times["dense"] if step >= warmup)
    rows = []
    for name, recorded in times.items():
        by_category: dict[str, list[float]] = defaultdict(list)
        for step, category, ms in recorded:
            if step >= warmup:
                by_category[category].append(ms)
        for category, values in by_category.items():
            med = statistics.median(values)
            rows.append({"method": name, "steps": category, "count": len(values), "median_ms": med,
                         "iqr_ms": statistics.quantiles(values, n=4)[2] - statistics.quantiles(values, n=4)[0]
                         if len(values) > 1 else 0.0, "ratio_to_dense": med / dense})
    return {"model": model_name, "batch": batch, "resolution": resolution, "rounds": rounds, "warmup": warmup,
            "period": period, "hjq": [third] * 3, "sparsity": 0.9, "rows": rows, "dense_median_ms": dense,
            "trace": {name: [ms for _, _, ms in recorded] for name, recorded in times.items()}}


def graph_build(models: list[str], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        size = model_spec(name).native_resolution
        model = build_model(name, 1000, size).eval()
        x = torch.randn(1, 3, size, size)
        graph = build_dependency_graph(model, x)
        rows.append({"model": name, "resolution": size, "groups": len(graph.prunable_groups),
                     "ms": median_ms(partial(build_dependency_graph, model, x), repeats)})
        print(f"graph: {name} {rows[-1]['ms']:.0f} ms", file=sys.stderr, flush=True)
    return rows


def solver_times(ratios: tuple[float, ...], repeats: int) -> list[dict[str, Any]]:
    from benchmarks.solvers import resnet50_instance
    from solvers import SOLVERS, solve

    rows = []
    for granularity in ("halp", "channel"):
        for ratio in ratios:
            inst = resnet50_instance(granularity, ratio)
            for name in SOLVERS:
                runs = [solve(inst.problem, solver=name) for _ in range(repeats)]
                rows.append({"instance": inst.name, "options": inst.problem.num_options, "solver": name,
                             "median_s": statistics.median(r.solve_time_s for r in runs), "repeats": repeats,
                             "objective": runs[-1].objective})
            print(f"solvers: {inst.name}", file=sys.stderr, flush=True)
    return rows


def lut_queries(model_name: str) -> dict[str, Any]:
    from benchmarks.profiler import cli, query_speed
    from profiler.latency import LatencyModel
    from profiler.lut import load_lut

    lut = CACHE / f"cpu-{model_name}.csv"
    if not lut.is_file():
        result, seconds = cli("profile", "--target", "cpu", "--model", model_name, "--out", str(lut))
        if result.returncode:
            raise SystemExit(f"profiling {model_name} failed:\n{result.stderr}")
        print(f"profiled {lut} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"lut": f"benchmarks/.cache/{lut.name}", **query_speed(LatencyModel.from_lut(load_lut(lut)))}


def plot(training: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (trace, bars) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for name, values in training["trace"].items():
        trace.plot(values, label=name, lw=0.8)
    trace.set(xlabel="round (one step of each method)", ylabel="step time (ms)",
              title=f"{training['model']}, batch {training['batch']}, 1 thread: interleaved steps")
    trace.legend()
    rows = [r for r in training["rows"] if r["method"] != "dense"]
    labels = [f"{r['method']}\n{r['steps']}" for r in rows]
    bars.bar(labels, [r["ratio_to_dense"] for r in rows], color=["C1" if r["method"] == "rigl" else "C2" for r in rows])
    bars.axhline(1.0, color="k", lw=0.8)
    bars.axhline(1.15, color="r", ls="--", lw=0.8, label="goal 1.15x (IEE outside explore)")
    bars.set(ylabel="median step time / dense", title="ratio to dense training")
    bars.tick_params(axis="x", labelsize=7)
    bars.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(record: dict[str, Any]) -> str:
    tr, mode = record["training"], record["mode"]
    lines = ["# Speed: training-step overhead, graph build, solvers, LUT queries", "",
             *header_markdown(record["meta"], mode), "",
             "## Training step: IEE vs dense vs RigL (one interleaved run)", "",
             f"{tr['model']} at {tr['resolution']} px, batch {tr['batch']}, CPU, 1 torch thread; 90% ERK for RigL and "
             f"IEE; update period {tr['period']} steps (IEE H = J = Q = {tr['hjq'][0]}, RigL dT = {tr['period']}); "
             f"{tr['rounds']} rounds of one step each in rotating order, the first {tr['warmup']} rounds discarded. "
             "Median wall time per step, IQR, and the ratio to dense training's median from the same run. "
             "Masks are applied to dense tensors (no sparse kernels), so a ratio above 1 is the methods' "
             "bookkeeping overhead.", "",
             *markdown_table(["method", "steps", "count", "median ms", "IQR ms", "x dense"],
                             [[r["method"], r["steps"], r["count"], f"{r['median_ms']:.1f}", f"{r['iqr_ms']:.1f}",
                               f"{r['ratio_to_dense']:.3f}"] for r in tr["rows"]]), "",
             f"Goal: IEE <= 1.15x dense outside explore steps: measured {record['iee_outside_ratio']:.3f}x "
             f"({'met' if record['iee_outside_ratio'] <= 1.15 else 'NOT met'}).", "",
             "![step times](speed.png)", "",
             "## Dependency-graph build (native resolution, batch 1)", "",
             *markdown_table(["model", "px", "prunable groups", "build ms (median)"],
                             [[r["model"], r["resolution"], r["groups"], f"{r['ms']:.1f}"] for r in record["graph"]]),
             "", "## Solvers (ResNet-50-shaped knapsacks of `benchmarks.solvers`, batch 256)", "",
             *markdown_table(["instance", "options", "solver", "median s", "repeats"],
                             [[r["instance"], r["options"], r["solver"], f"{r['median_s']:.4f}", r["repeats"]]
                              for r in record["solvers"]]), ""]
    q = record["lut_queries"]
    lines += ["## LUT queries (`LatencyModel.layer_latency`)", "",
              f"{q['queries']:,} random (cin, cout) queries on layer `{q['layer']}` of `{q['lut']}`: vectorised "
              f"{q['vectorised_ms']:.2f} ms ({q['queries_per_ms_vectorised']:,.0f} queries/ms); one call per query "
              f"{q['per_query_loop_ms']:.0f} ms (extrapolated from 5,000 calls): {q['speedup']:.0f}x.", "",
              "Machine-readable record: `benchmarks/results/speed.json`. Timings on a shared 2-core machine are noisy; "
              "the training ratios come from one interleaved run so that noise affects all methods alike.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 rounds, 3 zoo models, one solver target, 1 repeat")
    parser.add_argument("--model", default="resnet20", help="zoo model for the training-step timing")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = header(torch.get_num_threads(), "ortools", "matplotlib")
    quick = args.quick
    resolution = model_spec(args.model).native_resolution
    training = training_steps(rounds=75 if quick else 300, warmup=5 if quick else 10, period=15 if quick else 60,
                              model_name=args.model, batch=args.batch_size, resolution=resolution)
    iee_outside = next(r["ratio_to_dense"] for r in training["rows"]
                       if r["method"] == "iee" and r["steps"] == "outside explore")
    models = ["resnet20", "resnet50", "mobilenet_v2"] if quick else list_models()
    record = {"meta": meta, "mode": "quick" if quick else "full", "training": training,
              "iee_outside_ratio": iee_outside,
              "graph": graph_build(models, repeats=1 if quick else 3),
              "solvers": solver_times((0.55,) if quick else (0.3, 0.55, 0.8), repeats=1 if quick else 3),
              "lut_queries": lut_queries("resnet20")}
    plot(training, str(RESULTS / "speed.png"))
    text = markdown(record)
    print(text)
    write_results("speed", record, text)


if __name__ == "__main__":
    main()
