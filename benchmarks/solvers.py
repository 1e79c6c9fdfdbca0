"""Benchmark: latency-constrained channel selection on ResNet-50-shaped knapsacks.

For each instance (HALP's coarse items and single channels; several latency targets) it runs every
solver in `solvers.SOLVERS` and prints the objective gap to `dp` (the reference), the true-latency
budget violation and the solve time, plus a reproduction of HALP's knapsack (latency x1000 and
importance x1e6 rounded to integers, items chained by the prefix rule) to show what its rounding
does to the real budget. Writes benchmarks/results/solvers.md and solvers.json.

    PYTHONPATH=. python -m benchmarks.solvers            # full run
    PYTHONPATH=. python -m benchmarks.solvers --quick    # one target, one repeat

The instances are synthetic but shaped like the real thing: ResNet-50's 37 prunable groups (33
block convolutions plus 4 residual stages coupling every conv3 and the downsample; 11,456 channels),
heavy-tailed per-channel importances (lognormal or exponential, a different scale per group), and
group latencies from a roofline model of a batch-256 GPU with tile quantisation (stair steps at
multiples of 8 input / 32 output channels) and 3% measurement noise per LUT entry, so marginal
costs are not monotone and some are negative.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # as a file, this module would shadow the `solvers` package
    sys.exit("run it as a module from the repository root: PYTHONPATH=. python -m benchmarks.solvers")

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from profiler.targets import cpu_name
from solvers import (
    SOLVERS,
    ChoiceGroup,
    InfeasibleBudgetError,
    KnapsackProblem,
    Selection,
    prefix_group,
    solve,
    within_budget,
)
from solvers.cpsat import CPSAT_RESOLUTION, VALUE_BITS
from solvers.dp import DP_RESOLUTION
from solvers.integer import integer_problem, power_of_two_unit
from solvers.problem import FloatArray, IntArray
from solvers.relaxation import reduced_options, relax

ORTOOLS = importlib.metadata.version("ortools")
PLAIN_TIME_LIMIT_S = 60.0
RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (256, 1)  # HALP's throughput setting, and latency-bound deployment
PEAK_FLOPS = 12e12  # FLOP/s: a Titan V / V100-class GPU in FP32
BANDWIDTH = 650e9  # bytes/s
LAUNCH_MS = 0.02  # per-layer fixed cost
NOISE = 0.03  # relative measurement noise of a LUT entry
#: HALP item sizes (channels per knapsack item) for the coarse instance: 250 items in all.
HALP_ITEM = {"stem": 2, "layer1": 32, "layer2": 32, "layer3": 32, "layer4": 64, "residual": 128}
STAGES = (("layer1", 3, 64, 56), ("layer2", 4, 128, 28), ("layer3", 6, 256, 14), ("layer4", 3, 512, 7))


@dataclass(frozen=True)
class Conv:
    """One convolution: input/output channels at full width, kernel, output resolution."""

    name: str
    cin: int
    cout: int
    kernel: int
    out_hw: int
    in_hw: int


@dataclass(frozen=True)
class GroupSpec:
    """A prunable group: its width and which (conv, side) pairs its channel count sets."""

    name: str
    width: int
    item: int
    sides: tuple[tuple[str, str], ...]


def resnet50() -> tuple[dict[str, Conv], list[GroupSpec]]:
    """ResNet-50 (torchvision v1.5, 224 px) convolutions and its 37 channel groups."""
    convs = {"stem": Conv("stem", 3, 64, 7, 112, 224)}
    sides: dict[str, list[tuple[str, str]]] = {"stem": [("stem", "out")]}
    widths, items = {"stem": 64}, {"stem": HALP_ITEM["stem"]}
    producer, prev_out = "stem", 64  # the group whose channels feed the next stage
    for stage, blocks, width, hw in STAGES:
        out, residual = 4 * width, f"{stage}.residual"
        sides[residual], widths[residual], items[residual] = [], out, HALP_ITEM["residual"]
        for b in range(blocks):
            p = f"{stage}.{b}"
            in_hw = hw * 2 if (b == 0 and stage != "layer1") else hw
            cin = prev_out if b == 0 else out
            convs[f"{p}.conv1"] = Conv(f"{p}.conv1", cin, width, 1, in_hw, in_hw)
            convs[f"{p}.conv2"] = Conv(f"{p}.conv2", width, width, 3, hw, in_hw)
            convs[f"{p}.conv3"] = Conv(f"{p}.conv3", width, out, 1, hw, hw)
            sides[f"{p}.conv1"] = [(f"{p}.conv1", "out"), (f"{p}.conv2", "in")]
            sides[f"{p}.conv2"] = [(f"{p}.conv2", "out"), (f"{p}.conv3", "in")]
            widths[f"{p}.conv1"] = widths[f"{p}.conv2"] = width
            items[f"{p}.conv1"] = items[f"{p}.conv2"] = HALP_ITEM[stage]
            sides[producer if b == 0 else residual].append((f"{p}.conv1", "in"))
            sides[residual].append((f"{p}.conv3", "out"))
            if b == 0:
                convs[f"{p}.downsample"] = Conv(f"{p}.downsample", cin, out, 1, hw, in_hw)
                sides[producer].append((f"{p}.downsample", "in"))
                sides[residual].append((f"{p}.downsample", "out"))
        producer, prev_out = residual, out
    return convs, [GroupSpec(n, widths[n], items[n], tuple(s)) for n, s in sides.items()]


def conv_latency_ms(conv: Conv, cin: IntArray | int, cout: IntArray | int, batch: int) -> FloatArray:
    """Roofline latency plus launch cost, with tile quantisation (cin to 8, cout to 32 channels)."""
    cin_q = np.ceil(np.asarray(cin) / 8) * 8
    cout_q = np.ceil(np.asarray(cout) / 32) * 32
    flops = 2.0 * batch * conv.out_hw**2 * conv.kernel**2 * cin_q * cout_q
    bytes_moved = 4.0 * batch * (conv.in_hw**2 * np.asarray(cin) + conv.out_hw**2 * np.asarray(cout))
    busy = np.maximum(flops / PEAK_FLOPS, bytes_moved / BANDWIDTH) * 1e3
    return np.where(np.asarray(cout) > 0, busy + LAUNCH_MS, 0.0)


@dataclass(frozen=True)
class Instance:
    """A benchmark problem and what the HALP reproduction needs: per group the latency C(k) for
    every count k = 0..width, HALP's item size and the channel importances."""

    name: str
    granularity: str
    problem: KnapsackProblem
    cost_tables: tuple[FloatArray, ...]
    items: tuple[int, ...]
    importances: tuple[FloatArray, ...]


def resnet50_instance(granularity: str, latency_ratio: float, batch: int = 256, seed: int = 0,
                      flat: bool = False) -> Instance:
    """Prune problem: keep a fraction `latency_ratio` of the dense latency (additive group model:
    latency = dense + sum_g (C_g(k_g) - C_g(width_g)), each C_g with the other groups at full width).

    granularity "channel": every count 1..width; "halp": multiples of HALP's item size. `flat`:
    every channel about equally important (1 +- 1%, as at initialisation), the hard case for
    LP-based shrinking because many selections are nearly tied.
    """
    rng = np.random.default_rng(seed)
    convs, specs = resnet50()
    dense = float(sum(conv_latency_ms(c, c.cin, c.cout, batch) for c in convs.values()))
    groups: list[ChoiceGroup] = []
    tables, items, scores = [], [], []
    for spec in specs:
        k = np.arange(spec.width + 1)
        table = np.zeros(spec.width + 1)
        for conv_name, side in spec.sides:
            conv = convs[conv_name]
            cin, cout = (k, conv.cout) if side == "in" else (conv.cin, k)
            noise = 1.0 + NOISE * rng.standard_normal(k.size)
            table += conv_latency_ms(conv, cin, cout, batch) * noise
        scale = rng.lognormal(0.0, 1.0)
        if flat:
            importance = 1.0 + 0.01 * rng.standard_normal(spec.width)
        elif rng.random() < 0.5:
            importance = scale * rng.lognormal(0.0, rng.uniform(0.5, 1.5), spec.width)
        else:
            importance = scale * rng.exponential(1.0, spec.width)
        round_to = 1 if granularity == "channel" else spec.item
        groups.append(prefix_group(spec.name, importance, table, min_count=round_to, round_to=round_to))
        tables.append(table)
        items.append(round_to)
        scores.append(importance)
    full = math.fsum(float(t[-1]) for t in tables)
    budget = full - (1.0 - latency_ratio) * dense
    name = f"b{batch} {granularity} r={latency_ratio:.2f}" + (" flat" if flat else "")
    return Instance(name, granularity, KnapsackProblem(groups, budget), tuple(tables), tuple(items), tuple(scores))


def plain_cpsat(problem: KnapsackProblem) -> dict[str, object]:
    """The formulation `cpsat` improves on: one Boolean per option of the whole problem (no Pareto
    filtering, no LP fixing, no hint), costs rounded up at the same resolution, CP-SAT defaults
    (presolve on, all workers)."""
    start = time.perf_counter()
    every = [np.arange(len(g), dtype=np.int64) for g in problem.groups]
    ip = integer_problem(problem, every, power_of_two_unit(problem, every, CPSAT_RESOLUTION), "ceil",
                         prune_dominated=False)
    assert ip is not None
    span = sum(float(v.max() - v.min()) for v in ip.values)
    scale = math.ldexp(1.0, VALUE_BITS - math.frexp(span)[1])
    model = cp_model.CpModel()
    groups = []
    for costs, values in zip(ip.costs, ip.values):
        booleans = [model.new_bool_var("") for _ in range(costs.size)]
        model.add_exactly_one(booleans)
        groups.append((booleans, costs.tolist(), np.rint((values - values.min()) * scale).astype(np.int64).tolist()))
    flat = [b for bs, _, _ in groups for b in bs]
    model.add(cp_model.LinearExpr.weighted_sum(flat, [c for _, cs, _ in groups for c in cs]) <= ip.capacity)
    model.maximize(cp_model.LinearExpr.weighted_sum(flat, [v for _, _, vs in groups for v in vs]))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = PLAIN_TIME_LIMIT_S
    status = solver.solve(model)
    chosen = [int(ip.options[gi][next(j for j, b in enumerate(bs) if solver.boolean_value(b))])
              for gi, (bs, _, _) in enumerate(groups)]
    return {"objective": problem.objective(chosen), "cost": problem.cost(chosen), "fits": within_budget(problem, chosen),
            "status": solver.status_name(status).lower(), "time_s": time.perf_counter() - start}


def halp_dp(weights: list[int], values: list[int], capacity: int, layer_sizes: list[int]) -> list[int]:
    """Our re-implementation of HALP's "augmented knapsack" DP (prune/pruner.py `_knapsack`, with
    disable_layer_prune) to measure its behaviour; returns the kept items (flat indices).

    Items of a layer are listed least important first; the DP visits the most important first and
    may keep item i at capacity w only if it kept the previous item of the layer at w - w_i (the
    heuristic prefix rule). Negative weights enlarge the table by their sum; the first item of every
    layer is forced.
    """
    if capacity >= sum(weights):
        return list(range(len(weights)))
    extra = -sum(w for w in weights if w < 0)
    width = capacity + extra + 1
    rev_w, rev_v = weights[::-1], values[::-1]
    starts = set(np.cumsum([0, *layer_sizes[::-1]])[:-1].tolist())
    table = np.zeros(width)
    keep = np.zeros((len(weights) + 1, width), dtype=bool)
    w_idx = np.arange(width)
    for i, (wi, vi) in enumerate(zip(rev_w, rev_v), start=1):
        src = w_idx - wi
        in_range = src <= capacity + extra  # HALP copies the old value when w - wi is off the table
        src_wrapped = np.where(src < 0, src + width, np.minimum(src, width - 1))  # Python's negative indexing
        take_value = vi + table[src_wrapped]
        first = (i - 1) in starts
        better = (take_value > table) | ((take_value == table) & (wi == 0))
        chain = keep[i - 1, src_wrapped] | first
        take = in_range & (wi <= w_idx) & better & chain
        if first:
            keep[i] = True
        else:
            keep[i] = take
        table = np.where(take, take_value, table)
    kept, k = [], capacity
    for i in range(len(weights), 0, -1):
        if keep[i, k if k >= 0 else k + width]:
            kept.append(len(weights) - i)
            k -= rev_w[i - 1]
    return kept


def halp_reproduction(inst: Instance) -> dict[str, object]:
    """HALP's rounding (latency x1000 per item marginal, importance x1e6) on this instance.

    Item j of a group costs C(j * item) - C((j - 1) * item), rounded; the capacity is the budget
    minus every group's cost at zero channels (so a group's kept items add up to C(k) - C(0)).
    "rounded optimum": the best selection for the rounded problem (solved exactly by `cpsat`, its
    costs being integers already), i.e. what rounding alone does. "halp dp": HALP's DP itself
    (coarse instances only; the single-channel table would need items x capacity booleans).
    """
    problem = inst.problem
    budget_units = problem.budget - math.fsum(float(t[0]) for t in inst.cost_tables)
    weights, values, sizes = [], [], []
    rounded_groups = []
    for g, table, item, imp in zip(problem.groups, inst.cost_tables, inst.items, inst.importances):
        n_items = (table.size - 1) // item
        counts = item * np.arange(n_items + 1)
        marginal = np.diff(table[counts])  # marginal[j]: cost of the (j+1)-th most important item
        order = np.sort(imp)[::-1]
        item_value = order[: n_items * item].reshape(n_items, item).sum(axis=1)
        w = [round(x * 1000) for x in marginal.tolist()]
        v = [round(x * 1e6) for x in item_value.tolist()]
        weights.extend(w[::-1])  # HALP lists items least important first
        values.extend(v[::-1])
        sizes.append(n_items)
        rounded_groups.append(ChoiceGroup(g.name, counts[1:], np.cumsum(v)[:], np.cumsum(w)[:]))
    capacity = round(budget_units * 1000)
    record: dict[str, object] = {"capacity_units": capacity, "items": len(weights)}

    def evaluate(counts: dict[str, int]) -> dict[str, object]:
        chosen = [int(np.flatnonzero(g.counts == counts[g.name])[0]) for g in problem.groups]
        cost = problem.cost(chosen)
        return {"objective": problem.objective(chosen), "cost": cost, "fits": within_budget(problem, chosen),
                "violation_pct": max(0.0, 100.0 * (cost - problem.budget) / problem.budget)}

    rounded = solve(KnapsackProblem(rounded_groups, capacity), solver="cpsat")
    record["rounded optimum"] = evaluate(dict(rounded.counts))
    if inst.granularity == "halp":
        start = time.perf_counter()
        kept = halp_dp(weights, values, capacity, sizes)
        elapsed = time.perf_counter() - start
        kept_counts: dict[str, int] = {}
        offset = 0
        for g, n_items, item in zip(problem.groups, sizes, inst.items):
            kept_counts[g.name] = item * len(set(range(offset, offset + n_items)).intersection(kept))
            offset += n_items
        if all(kept_counts[g.name] in set(g.counts.tolist()) for g in problem.groups):
            record["halp dp"] = {**evaluate(kept_counts), "time_s": elapsed}
        else:
            record["halp dp"] = {"time_s": elapsed, "note": "kept no item of some group"}
    return record


def run(quick: bool) -> dict[str, list[dict[str, object]]]:
    ratios = (0.55,) if quick else (0.3, 0.55, 0.8)
    repeats = 1 if quick else 5
    rows: list[dict[str, object]] = []
    halp_rows: list[dict[str, object]] = []
    infeasible: list[dict[str, object]] = []
    cases = [(batch, granularity, ratio, False) for batch in BATCHES for granularity in ("halp", "channel")
             for ratio in ratios] + [(256, "channel", 0.55, True)]
    for batch, granularity, ratio, flat in cases:
        inst = resnet50_instance(granularity, ratio, batch=batch, flat=flat)
        problem = inst.problem
        try:
            problem.check_feasible()
        except InfeasibleBudgetError as err:
            infeasible.append({"instance": inst.name, "message": str(err)})
            continue
        relaxation = relax(problem)
        common = {"instance": inst.name, "options": problem.num_options,
                  "pareto": sum(f.size for f in relaxation.fronts),
                  "after_fixing": sum(a.size for a in reduced_options(problem, relaxation)),
                  "budget": problem.budget}
        answers: dict[str, Selection] = {}
        for name in SOLVERS:
            runs = [solve(problem, solver=name) for _ in range(1 if name == "dp" else repeats)]
            answers[name] = runs[-1]
            rows.append({**common, "solver": name, "objective": runs[-1].objective,
                         "upper_bound": runs[-1].upper_bound, "status": runs[-1].status,
                         "cost": runs[-1].cost, "violation": max(0.0, runs[-1].cost - problem.budget),
                         "time_s": statistics.median(r.solve_time_s for r in runs),
                         "times_s": [r.solve_time_s for r in runs]})
        plain = plain_cpsat(problem)
        rows.append({**common, "solver": "plain cp-sat", "objective": plain["objective"],
                     "upper_bound": math.nan, "status": plain["status"], "cost": plain["cost"],
                     "violation": max(0.0, float(plain["cost"]) - problem.budget),  # type: ignore[arg-type]
                     "time_s": plain["time_s"], "times_s": [plain["time_s"]]})
        reference = answers["dp"].objective
        for row in rows[-len(SOLVERS) - 1:]:
            row["gap_to_dp_pct"] = 100.0 * (reference - float(row["objective"])) / abs(reference)  # type: ignore[arg-type]
        halp_rows.append({"instance": inst.name, "budget": problem.budget,
                          "optimum": answers["cpsat"].objective, **halp_reproduction(inst)})
        print(f"done {inst.name}", file=sys.stderr, flush=True)
    return {"rows": rows, "halp": halp_rows, "infeasible": infeasible}


def markdown(result: dict[str, list[dict[str, Any]]], command: str) -> str:
    lines = [
        "# Solvers benchmark: ResNet-50-shaped latency knapsacks",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores shared with other jobs "
        f"(timings are noisy); python {platform.python_version()}, numpy {np.__version__}, ortools {ORTOOLS}",
        "- instances: ResNet-50's 37 groups with a roofline latency model (ms) with tile stair steps and 3% LUT noise,"
        " at batch 256 (b256, HALP's setting) and batch 1 (b1, launch-bound); `halp` = HALP item sizes (250 options),"
        " `channel` = every channel count (11,456 options); r = latency target as a fraction of the dense latency.",
        "- pareto / after fixing: options left by Pareto filtering / by LP reduced-cost fixing at the greedy value"
        " (the largest model `cpsat` may hand to CP-SAT; its guessed targets usually make it smaller)."
        " time: median of repeats of the solver call (the problem already built).",
        "- gap to dp: (dp - solver) / dp in %, negative = better than dp (dp rounds costs to"
        f" 2^{DP_RESOLUTION.bit_length() - 1} units of the free budget, cpsat to 2^{CPSAT_RESOLUTION.bit_length() - 1})."
        " proven gap: upper_bound - objective (dp's bound is its rounded-down relaxation, so it is looser)."
        " violation: true latency over budget (ms).",
        "- plain cp-sat: one Boolean per option, no filtering, fixing or hint, CP-SAT defaults (presolve on, all"
        f" workers, {PLAIN_TIME_LIMIT_S:.0f} s limit); the formulation `cpsat` replaces.",
        "- `flat`: every channel about equally important (1 +- 1%), the hard case for LP-based shrinking.",
        "",
        "| instance | options | pareto | after fixing | solver | objective | gap to dp % | proven gap | status "
        "| violation ms | time s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        proven = "" if math.isnan(r["upper_bound"]) else f"{r['upper_bound'] - r['objective']:.1e}"
        lines.append(
            f"| {r['instance']} | {r['options']} | {r['pareto']} | {r['after_fixing']} | {r['solver']} "
            f"| {r['objective']:.6f} | {r['gap_to_dp_pct']:+.5f} | {proven} | {r['status']} "
            f"| {r['violation']:.3g} | {r['time_s']:.4f} |")
    lines += ["", "Speed, side by side from this run (time of each solver / time of `cpsat`):", "",
              "| instance | cpsat s | plain cp-sat | dp | greedy |", "|---|---|---|---|---|"]
    for instance in dict.fromkeys(r["instance"] for r in result["rows"]):
        times = {r["solver"]: r["time_s"] for r in result["rows"] if r["instance"] == instance}
        base = times["cpsat"]
        lines.append(f"| {instance} | {base:.4f} | {times['plain cp-sat'] / base:.1f}x | {times['dp'] / base:.1f}x "
                     f"| {times['greedy'] / base:.2f}x |")
    if result["infeasible"]:
        lines += ["", "Infeasible targets (InfeasibleBudgetError):", ""]
        lines += [f"- {r['instance']}: {r['message']}" for r in result["infeasible"]]
    lines += ["", "## HALP's rounding (latency x1000, importance x1e6 to integers)", "",
              "`rounded optimum`: the exact optimum of HALP's rounded problem (rounding alone). `halp dp`: our"
              " re-implementation of HALP's DP (prefix rule by chaining, first item of each group forced); coarse"
              " only, the single-channel table would need items x capacity booleans.", "",
              "| instance | selection | capacity units | objective | loss vs optimum % | true cost ms | budget ms "
              "| over budget % | time s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for h in result["halp"]:
        for key in ("rounded optimum", "halp dp"):
            if key not in h:
                continue
            e = h[key]
            time_s = f"{e['time_s']:.3f}" if "time_s" in e else ""
            if "objective" not in e:
                lines.append(f"| {h['instance']} | {key} | {h['capacity_units']} | {e['note']} | | | | | {time_s} |")
                continue
            loss = 100.0 * (h["optimum"] - e["objective"]) / abs(h["optimum"])
            lines.append(f"| {h['instance']} | {key} | {h['capacity_units']} | {e['objective']:.6f} | {loss:+.4f} "
                         f"| {e['cost']:.4f} | {h['budget']:.4f} | {e['violation_pct']:.3f} | {time_s} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one latency target (0.55) and one repeat")
    args = parser.parse_args()
    from iee_deploy.io import write_json, write_text

    command = "PYTHONPATH=. python -m benchmarks.solvers" + (" --quick" if args.quick else "")
    result = run(args.quick)
    text = markdown(result, command)
    print(text)
    write_text(RESULTS / "solvers.md", text)
    write_json(RESULTS / "solvers.json", {"command": command, "date": datetime.datetime.now().isoformat(),
                                          "python": platform.python_version(), "numpy": np.__version__,
                                          "ortools": ORTOOLS, **result})


if __name__ == "__main__":
    main()
