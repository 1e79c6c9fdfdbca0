"""The LP relaxation of the multiple-choice knapsack and what it buys: a greedy fill, a proven upper
bound, and reduced-cost fixing that shrinks a problem without losing any optimal selection.

All of it works on the true float costs (no integer scaling):

- `pareto_front`: an option that costs at least as much as another and is worth no more is never
  needed (swapping it for the other keeps any selection feasible and at least as good).
- `concave_hull`: the LP relaxation only uses the upper concave hull of each group's front; its
  segments ("steps") taken in decreasing value/cost slope solve the LP exactly (Sinha & Zoltners).
- `relax`: the greedy fill along those steps (a feasible selection, the `greedy` solver) and the
  Lagrangian bound U(lam) = lam * budget + sum_g max_o (v_go - lam * c_go), valid for every lam >= 0
  and equal to the LP optimum at lam = the slope of the first step that does not fit.
- `reduced_options`: option o of group g can be in a selection worth at least T (e.g. the greedy
  value) only if U(lam) - (max_p r_gp - r_go) >= T with r = v - lam * c; other options are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from solvers.problem import FloatArray, IntArray, KnapsackProblem, within_budget

#: Unit round-off of float64.
ROUNDOFF = 2.0**-53
#: Safety margin (relative to the magnitudes summed) that keeps float round-off from dropping an option.
FIXING_RTOL = 1e-9


def pareto_front(costs: npt.NDArray[Any], values: FloatArray) -> IntArray:
    """Indices of the non-dominated options, by increasing cost (and strictly increasing value)."""
    order = np.lexsort((-values, costs))
    ordered = values[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], ordered[:-1])))
    return order[ordered > best_before].astype(np.int64)


def concave_hull(costs: FloatArray, values: FloatArray, front: IntArray) -> IntArray:
    """Indices (a subsequence of `front`) on the upper concave hull; slopes strictly decrease along it."""
    c = costs[front].tolist()
    v = values[front].tolist()
    hull: list[int] = []
    for i in range(len(c)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is not a hull vertex when it lies on or below the segment a -> i.
            if (v[b] - v[a]) * (c[i] - c[a]) <= (v[i] - v[a]) * (c[b] - c[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return front[np.asarray(hull, dtype=np.int64)]


@dataclass(frozen=True)
class Relaxation:
    """Greedy selection (feasible), its value, the LP multiplier and the proven upper bound."""

    fronts: tuple[IntArray, ...]
    greedy: tuple[int, ...]
    greedy_value: float
    multiplier: float
    bound: float


def lagrangian_bound(problem: KnapsackProblem, multiplier: float) -> float:
    """U(lam) = lam * budget + sum_g max_o (v_go - lam * c_go): an upper bound for any lam >= 0.

    Widened by the worst-case float round-off of its terms, so it stays a bound when lam * cost
    terms cancel (infinite when lam is too large for floats).
    """
    terms = [multiplier * problem.budget]
    magnitude = abs(terms[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for g in problem.groups:
            terms.append(float(np.max(g.values - multiplier * g.costs)))
            magnitude += float(np.max(np.abs(g.values) + multiplier * np.abs(g.costs)))
        bound = math.fsum(terms) + 8 * ROUNDOFF * magnitude
    return bound if math.isfinite(bound) else math.inf


def relax(problem: KnapsackProblem) -> Relaxation:
    """Greedy fill along the hull steps by decreasing slope, then a top-up pass, plus the LP bound.

    Assumes the cheapest selection fits (`KnapsackProblem.check_feasible`).
    """
    groups = problem.groups
    fronts = tuple(pareto_front(g.costs, g.values) for g in groups)
    hulls = [concave_hull(g.costs, g.values, f) for g, f in zip(groups, fronts)]
    position = [0] * len(groups)
    remaining = problem.budget - math.fsum(float(g.costs[h[0]]) for g, h in zip(groups, hulls))
    multiplier = 0.0
    if hulls:
        step_group = np.concatenate([np.full(h.size - 1, gi, dtype=np.int64) for gi, h in enumerate(hulls)])
        step_cost = np.concatenate([np.diff(g.costs[h]) for g, h in zip(groups, hulls)])
        step_value = np.concatenate([np.diff(g.values[h]) for g, h in zip(groups, hulls)])
        with np.errstate(over="ignore"):  # a subnormal cost step can give an infinite slope
            slope = step_value / step_cost
        order = np.argsort(-slope, kind="stable")
        blocked = [False] * len(groups)
        broken = False
        for s, gi, dc in zip(order.tolist(), step_group[order].tolist(), step_cost[order].tolist()):
            if blocked[gi]:
                continue
            if dc <= remaining:
                remaining -= dc
                position[gi] += 1
            else:
                blocked[gi] = True
                if not broken:
                    broken, multiplier = True, float(slope[s]) if math.isfinite(slope[s]) else 0.0
    chosen = [int(h[p]) for h, p in zip(hulls, position)]
    # Top-up: spend what the hull steps left on the best front option of each group that still fits.
    for gi, (g, front) in enumerate(zip(groups, fronts)):
        current = chosen[gi]
        fits = front[(g.costs[front] <= g.costs[current] + remaining) | (front == current)]
        best = int(fits[np.argmax(g.values[fits])])
        if g.values[best] > g.values[current]:
            remaining -= float(g.costs[best] - g.costs[current])
            chosen[gi] = best
    # Float round-off in `remaining` could admit a selection an ulp over the budget: repair exactly.
    while not within_budget(problem, chosen):
        gi = max(range(len(groups)), key=lambda i: groups[i].costs[chosen[i]] - groups[i].costs[fronts[i][0]])
        front = fronts[gi]
        chosen[gi] = int(front[np.searchsorted(groups[gi].costs[front], groups[gi].costs[chosen[gi]]) - 1])
    bound = lagrangian_bound(problem, multiplier)
    if not math.isfinite(bound):  # lam so large that lam * cost overflows: U(0) is still a bound
        multiplier, bound = 0.0, lagrangian_bound(problem, 0.0)
    return Relaxation(fronts=fronts, greedy=tuple(chosen), greedy_value=problem.objective(chosen),
                      multiplier=multiplier, bound=bound)


def reduced_options(problem: KnapsackProblem, relaxation: Relaxation, target: float | None = None) -> list[IntArray]:
    """Per group, the front options that can appear in a selection worth >= `target` (default: the
    greedy value, so the optimum's options all survive).

    Exact: option o survives when U(lam) minus its reduced-cost deficit reaches the target, with
    `FIXING_RTOL` of slack kept on purpose against float round-off. A target <= U(lam) leaves every
    group at least its option of largest reduced value (deficit 0).
    """
    lam = relaxation.multiplier
    target = relaxation.greedy_value if target is None else target
    scale = sum(float(np.abs(g.values).max()) + lam * float(np.abs(g.costs).max()) for g in problem.groups)
    slack = relaxation.bound - target + FIXING_RTOL * (scale + lam * abs(problem.budget))
    allowed = []
    for g, front in zip(problem.groups, relaxation.fronts):
        reduced = g.values[front] - lam * g.costs[front]
        allowed.append(front[reduced.max() - reduced <= slack])
    return allowed
