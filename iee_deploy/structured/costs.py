"""Prune and grow as latency knapsacks (`solvers`), built from the latency model. No side effects.

A configuration is the number of active units of every prunable channel group (`counts`); the
latency model predicts it exactly as `LatencyModel.predict(graph.layer_channels(counts))`. The
knapsack needs one cost per option "group g at k units", so the prediction is linearised at the
current configuration:

    C_g(k) = sum over the layers l that g touches of
             L_l(cin_l + a_lg (k - n_g), cout_l + b_lg (k - n_g)) - L_l(cin_l, cout_l)

with (cin_l, cout_l) the layer's current channels, n_g the group's current units and a_lg / b_lg
the input / output channels one unit of g gives layer l. That is the exact change of the
prediction when only g changes:
- layers whose OUTPUT g sets are costed at their current input count (HALP's rule);
- layers whose INPUT g sets are costed too, at their current output count, so a group that feeds
  expensive layers (ResNet's residual channels feed every block of the next stage) is valued for
  what shrinking it saves there;
- a depthwise conv (input and output both g) moves along its diagonal table.
The sum over groups misses only the cross terms of layers between two changed groups (for a
bilinear cost c cin cout, c (dcin)(dcout) > 0 when both shrink or both grow), so the true
prediction of a solution can exceed the knapsack's estimate a little. `solve_within` therefore
checks every solution with the true prediction and, if it is over the limit, solves again with the
budget set to that solution's estimated cost minus its excess over the limit.

Options respect the hardware: a group keeps a multiple of `unit_multiple(per_unit, align)` units
(channel counts on the LUT's channel block) or all of them, and at least its `min_keep`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from iee_deploy.graph import LayerInfo
from profiler.latency import LatencyModel
from solvers import InfeasibleBudgetError, KnapsackProblem, Selection, prefix_group, solve

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Touching = Sequence[tuple[str, int, int]]
"""The layers a group sets: (layer name, input channels per unit, output channels per unit)."""

MAX_ATTEMPTS = 8
"""Solves per update before giving up on the linearised costs (each tightens the budget, see `solve_within`)."""
TIGHTEN_MARGIN = 1e-6
"""Extra tightening per attempt, relative to the limit, so that a float tie does not repeat an attempt."""


def unit_multiple(per_unit: int, align: int) -> int:
    """Units per hardware channel block: counts k with k * per_unit a multiple of `align`."""
    return align // math.gcd(align, per_unit)


def smallest_count(size: int, min_keep: int, multiple: int) -> int:
    """The fewest units a group may keep: the first multiple of `multiple` >= max(1, min_keep), else all."""
    lowest = max(1, min_keep)
    k = -(-lowest // multiple) * multiple
    return k if k < size else size


def touching_layers(layers: Mapping[str, LayerInfo]) -> dict[str, list[tuple[str, int, int]]]:
    """Group id -> the layers whose input or output channels it sets, with channels per unit each way."""
    touching: dict[str, dict[str, list[int]]] = {}
    for name, info in layers.items():
        for side, refs in ((0, info.in_groups), (1, info.out_groups)):
            for gid, per_unit in refs:
                touching.setdefault(gid, {}).setdefault(name, [0, 0])[side] += per_unit
    return {gid: [(name, a, b) for name, (a, b) in by_layer.items()] for gid, by_layer in touching.items()}


def count_deltas(latency: LatencyModel, touching: Touching, channels: Mapping[str, tuple[int, int]], current: int,
                 counts: npt.ArrayLike) -> FloatArray:
    """Predicted latency change (ms) of the layers in `touching` when their group has `counts` units instead of `current`."""
    change = np.asarray(counts, dtype=np.int64) - current
    total = np.zeros(change.shape)
    for name, per_in, per_out in touching:
        cin, cout = channels[name]
        total += latency.layer_latency(name, cin + per_in * change, cout + per_out * change) \
            - latency.layer_latency(name, cin, cout)
    return total


Deltas = Callable[[str, IntArray], FloatArray]
"""(group id, unit counts) -> predicted latency change of setting that group to each count."""


def prune_problem(scores: Mapping[str, npt.ArrayLike], current: Mapping[str, int], smallest: Mapping[str, int],
                  multiple: Mapping[str, int], deltas: Deltas, budget: float) -> KnapsackProblem:
    """Keep the k most important active units of every group (k from its smallest count to all it has).

    `scores[g]` are the importances of g's active units; costs are latency changes (<= 0 mostly),
    so `budget` is the allowed change: the latency limit minus the current prediction.
    """
    groups = [prefix_group(g, scores[g], partial(deltas, g), min_count=min(smallest[g], current[g]),
                           max_count=current[g], round_to=multiple[g]) for g in scores]
    return KnapsackProblem(groups, budget)


def _added(deltas: Deltas, group: str, current: int, added: IntArray) -> FloatArray:
    return deltas(group, current + added)


def grow_problem(scores: Mapping[str, npt.ArrayLike], current: Mapping[str, int], multiple: Mapping[str, int],
                 deltas: Deltas, budget: float) -> KnapsackProblem:
    """Add the k most important exploration units of every group (k = 0 allowed), within `budget` ms more.

    `scores[g]` are the importances of g's exploration units; the group ends at current + k units,
    a multiple of its channel block or the whole group.
    """
    groups = [prefix_group(g, scores[g], partial(_added, deltas, g, current[g]), min_count=0, round_to=multiple[g],
                           base_count=current[g]) for g in scores]
    return KnapsackProblem(groups, budget)


@dataclass(frozen=True)
class Solved:
    """A selection whose true predicted latency is within the limit."""

    selection: Selection
    counts: dict[str, int]  # the configuration it leads to (units per group)
    predicted_ms: float
    attempts: int
    budget: float  # the knapsack budget of the accepted attempt (tightened after the first)


def solve_within(build: Callable[[float], KnapsackProblem], configuration: Callable[[Selection], dict[str, int]],
                 predict: Callable[[Mapping[str, int]], float], budget: float, limit: float,
                 solver: str = "cpsat") -> Solved | None:
    """Solve `build(budget)`; accept the answer if `predict` of its configuration is <= `limit`.

    Otherwise solve again with the budget at the answer's estimated cost minus its excess over the
    limit, so that the next answer is cheaper by at least what the estimate missed (up to MAX_ATTEMPTS). None when
    no attempt fits (or the tightened budget is infeasible): the caller falls back to a safe choice.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            selection = solve(build(budget), solver)
        except InfeasibleBudgetError:
            return None
        counts = configuration(selection)
        predicted = predict(counts)
        if predicted <= limit:
            return Solved(selection, counts, predicted, attempt, budget)
        # the linearisation missed `predicted - limit` beyond this selection's estimated cost: ask for that much less
        budget = selection.cost - (predicted - limit) - TIGHTEN_MARGIN * abs(limit)
    return None


def uniform_counts(sizes: Mapping[str, int], smallest: Mapping[str, int], multiple: Mapping[str, int],
                   ratio: float) -> dict[str, int]:
    """Every group at about `ratio` of its units: rounded down to its channel block, at least its smallest count."""
    if ratio >= 1:
        return dict(sizes)
    return {g: max(smallest[g], min(n, int(math.floor(ratio * n / multiple[g] + 1e-9)) * multiple[g]))
            for g, n in sizes.items()}


def largest_uniform_ratio(predict: Callable[[Mapping[str, int]], float], sizes: Mapping[str, int],
                          smallest: Mapping[str, int], multiple: Mapping[str, int], limit: float,
                          iterations: int = 40) -> tuple[float, dict[str, int]]:
    """The largest keep ratio r (bisection) whose `uniform_counts` predict <= `limit`, and those counts.

    Needs predict(smallest counts) <= limit (r = 0), which the caller's feasibility check guarantees.
    """
    low, high = 0.0, 1.0
    if predict(uniform_counts(sizes, smallest, multiple, high)) <= limit:
        return high, dict(sizes)
    for _ in range(iterations):
        mid = (low + high) / 2
        if predict(uniform_counts(sizes, smallest, multiple, mid)) <= limit:
            low = mid
        else:
            high = mid
    return low, uniform_counts(sizes, smallest, multiple, low)
