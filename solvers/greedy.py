"""`greedy`: the fast baseline, value/cost-ratio filling along each group's concave hull.

It is the LP relaxation's greedy fill (`solvers.relaxation.relax`): start from every group's cheapest
option, take hull steps in decreasing value-per-latency order while they fit, then top up. It
works on the true float costs, and its reported bound is the LP bound, so its gap is visible.
"""

from __future__ import annotations

import time

from solvers.problem import KnapsackProblem, Selection, make_selection
from solvers.relaxation import relax


def solve_greedy(problem: KnapsackProblem, time_limit_s: float | None = None) -> Selection:
    """Greedy selection (`time_limit_s` is accepted for the common interface; greedy is O(n log n))."""
    start = time.perf_counter()
    relaxation = relax(problem)
    return make_selection(problem, relaxation.greedy, relaxation.bound, time.perf_counter() - start, "greedy")
