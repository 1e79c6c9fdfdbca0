"""Pure optimisation for channel selection: problem in, selection out. No torch inside.

Prune and grow are multiple-choice knapsacks over channel groups: pick one count per group (keep
or add its most important channels) to maximise total importance within a latency budget. Build
groups with `prefix_group`, a problem with `KnapsackProblem`, and call `solve`:

    selection = solve(KnapsackProblem(groups, budget))          # cpsat, proven optimal
    selection.counts   # {group name: channels to keep / add}

Solvers (`SOLVERS`): `cpsat` (default: LP-shrunk OR-Tools CP-SAT), `dp` (exact dynamic programming,
the reference), `greedy` (value/cost ratio, the fast baseline). Every answer fits the budget in true
latency units; an impossible budget raises `InfeasibleBudgetError` with the smallest achievable cost.
"""

from __future__ import annotations

from collections.abc import Callable

from solvers.cpsat import solve_cpsat
from solvers.dp import solve_dp
from solvers.greedy import solve_greedy
from solvers.problem import (
    ChoiceGroup,
    InfeasibleBudgetError,
    KnapsackProblem,
    Selection,
    prefix_group,
    within_budget,
)

SolverFn = Callable[[KnapsackProblem, "float | None"], Selection]

#: Every solver behind the one interface `solve(problem, solver=name)`.
SOLVERS: dict[str, SolverFn] = {"cpsat": solve_cpsat, "dp": solve_dp, "greedy": solve_greedy}


def solve(problem: KnapsackProblem, solver: str = "cpsat", time_limit_s: float | None = None) -> Selection:
    """Best selection for `problem` with the named solver.

    Raises `InfeasibleBudgetError` when even the cheapest option of every group exceeds the budget,
    and `ValueError` for an unknown solver name.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be positive, got {time_limit_s}")
    problem.check_feasible()
    return SOLVERS[solver](problem, time_limit_s)


__all__ = ["SOLVERS", "ChoiceGroup", "InfeasibleBudgetError", "KnapsackProblem", "Selection", "prefix_group",
           "solve", "within_budget"]
