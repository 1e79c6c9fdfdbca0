"""`dp`: exact dynamic programming over integer-scaled costs, the reference solver.

best_g[w] = the largest value of one option in each of the first g groups whose rounded-down
costs sum to <= w: best_g[w] = max_o best_{g-1}[w - c_go] + v_go. It uses no LP reasoning (only
per-group Pareto filtering of the rounded options), so it checks the other solvers independently.

Costs are rounded down at a power-of-two unit u (`solvers.integer`), so best[capacity] bounds the
true optimum. The answer is read back from the table at the largest w <= capacity whose selection
fits the true budget (checked exactly); w = capacity - (number of groups) always does, so the
answer is at least the true optimum for a budget tighter by groups x u. Run time and memory grow
with options x `DP_RESOLUTION`; there is no time limit.
"""

from __future__ import annotations

import time

import numpy as np

from solvers.integer import IntegerProblem, integer_problem, power_of_two_unit
from solvers.problem import FloatArray, KnapsackProblem, Selection, make_selection, within_budget

#: Integer units over the budget left after every group's cheapest option.
DP_RESOLUTION = 1 << 17


def dp_table(ip: IntegerProblem) -> tuple[FloatArray, np.ndarray]:
    """best[w] for the whole problem and choice[g, w], the position chosen in group g at capacity w."""
    width = ip.capacity + 1
    best = np.zeros(width)
    choice = np.empty((len(ip.costs), width), dtype=np.int32)
    for gi, (costs, values) in enumerate(zip(ip.costs, ip.values)):
        new = np.full(width, -np.inf)
        arg = choice[gi]
        arg.fill(-1)
        for j, (c, v) in enumerate(zip(costs.tolist(), values.tolist())):
            candidate = best[: width - c] + v
            target = new[c:]
            better = candidate > target
            np.copyto(target, candidate, where=better)
            np.copyto(arg[c:], j, where=better)
        best = new
    return best, choice


def read_back(ip: IntegerProblem, choice: np.ndarray, capacity: int) -> tuple[int, ...]:
    """Option indices of the table's selection at `capacity`."""
    positions = []
    w = capacity
    for gi in range(len(ip.costs) - 1, -1, -1):
        j = int(choice[gi, w])
        positions.append(j)
        w -= int(ip.costs[gi][j])
    return tuple(int(o[p]) for o, p in zip(ip.options, reversed(positions)))


def solve_dp(problem: KnapsackProblem, time_limit_s: float | None = None) -> Selection:
    """Reference solve (`time_limit_s` is accepted for the common interface and ignored)."""
    start = time.perf_counter()
    allowed = [np.arange(len(g), dtype=np.int64) for g in problem.groups]
    ip = integer_problem(problem, allowed, power_of_two_unit(problem, allowed, DP_RESOLUTION), "floor")
    assert ip is not None, "the cheapest selection fits, so the relaxation is feasible"
    best, choice = dp_table(ip)
    chosen = next((sel for w in range(ip.capacity, -1, -1)
                   if within_budget(problem, sel := read_back(ip, choice, w))),
                  tuple(g.cheapest for g in problem.groups))
    return make_selection(problem, chosen, float(best[ip.capacity]), time.perf_counter() - start, "dp")
