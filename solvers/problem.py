"""The knapsack problem that prune and grow both reduce to, and the selection a solver returns.

Every group of coupled channels is sorted by importance, so a choice for a group is just a count:
keep (prune) or add (grow) its `k` most important channels. A group therefore offers a few options
(count, value, latency cost), and a problem asks for exactly one option per group that maximises the
total value with total cost within the budget: a multiple-choice knapsack. The prefix rule (channel
j only with every more important channel of its group) holds by construction, because an option is
a count, never a set of channels.

Costs are latencies from a latency model: floats, not monotone in the count and possibly negative
(a narrower layer can be slower). "Within the budget" always means in these true units: the exact
rational sum of the chosen float costs is <= the budget (`within_budget`), never only after rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Status = Literal["optimal", "feasible"]

#: Relative tolerance under which an objective counts as equal to a proven upper bound.
OPTIMALITY_RTOL = 1e-9


class InfeasibleBudgetError(ValueError):
    """No selection fits: even the cheapest option of every group costs more than the budget.

    `min_cost` is the smallest total cost any selection can reach, so a caller can turn this into
    a one-line user error ("budget X is below the smallest achievable latency Y").
    """

    def __init__(self, min_cost: float, budget: float) -> None:
        self.min_cost = float(min_cost)
        self.budget = float(budget)
        digits = next(d for d in range(6, 18) if f"{self.budget:.{d}g}" != f"{self.min_cost:.{d}g}" or d == 17)
        super().__init__(
            f"latency budget {self.budget:.{digits}g} is below the smallest achievable cost "
            f"{self.min_cost:.{digits}g} (every group at its cheapest option)"
        )


def _readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.setflags(write=False)
    return array


class ChoiceGroup:
    """The options of one channel group: option `o` keeps/adds the `counts[o]` most important channels,
    worth `values[o]` (their summed importance) and costing `costs[o]` (latency, any sign)."""

    __slots__ = ("name", "counts", "values", "costs")

    name: str
    counts: IntArray
    values: FloatArray
    costs: FloatArray

    def __init__(self, name: str, counts: Sequence[int] | npt.ArrayLike, values: Sequence[float] | npt.ArrayLike,
                 costs: Sequence[float] | npt.ArrayLike) -> None:
        counts_arr = np.asarray(counts)
        values_arr = np.asarray(values, dtype=np.float64).copy()
        costs_arr = np.asarray(costs, dtype=np.float64).copy()
        if counts_arr.ndim != 1 or counts_arr.size == 0:
            raise ValueError(f"group {name!r}: counts must be a non-empty 1-D sequence")
        if not np.issubdtype(counts_arr.dtype, np.integer) and not (
                np.all(np.isfinite(counts_arr)) and np.all(counts_arr == np.round(counts_arr))):
            raise ValueError(f"group {name!r}: counts must be integers")
        counts_arr = counts_arr.astype(np.int64)
        if values_arr.shape != counts_arr.shape or costs_arr.shape != counts_arr.shape:
            raise ValueError(f"group {name!r}: counts, values and costs must have the same length "
                             f"({counts_arr.size}, {values_arr.size}, {costs_arr.size})")
        if np.any(counts_arr < 0) or np.unique(counts_arr).size != counts_arr.size:
            raise ValueError(f"group {name!r}: counts must be distinct and non-negative")
        if not (np.all(np.isfinite(values_arr)) and np.all(np.isfinite(costs_arr))):
            raise ValueError(f"group {name!r}: values and costs must be finite")
        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "counts", _readonly(counts_arr))
        object.__setattr__(self, "values", _readonly(values_arr))
        object.__setattr__(self, "costs", _readonly(costs_arr))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("ChoiceGroup is immutable")

    def __len__(self) -> int:
        return int(self.counts.size)

    def __repr__(self) -> str:
        if len(self) <= 8:
            return (f"ChoiceGroup({self.name!r}, {self.counts.tolist()}, {self.values.tolist()}, "
                    f"{self.costs.tolist()})")
        return (f"ChoiceGroup({self.name!r}, {len(self)} options, counts {int(self.counts.min())}.."
                f"{int(self.counts.max())})")

    @property
    def cheapest(self) -> int:
        """Index of the cheapest option (ties: the most valuable)."""
        return int(np.lexsort((-self.values, self.costs))[0])


@dataclass(frozen=True)
class KnapsackProblem:
    """Choose exactly one option per group; maximise the summed value with summed cost <= `budget`."""

    groups: tuple[ChoiceGroup, ...]
    budget: float

    def __init__(self, groups: Sequence[ChoiceGroup], budget: float) -> None:
        groups = tuple(groups)
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError("group names must be unique")
        if not math.isfinite(budget):
            raise ValueError(f"budget must be finite, got {budget}")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "budget", float(budget))

    @property
    def num_options(self) -> int:
        return sum(len(g) for g in self.groups)

    def min_cost(self) -> float:
        """The smallest total cost any selection reaches (every group at its cheapest option), rounded
        up to a float, so that it is also the smallest feasible budget."""
        exact = sum((Fraction(float(g.costs.min())) for g in self.groups), Fraction(0))
        rounded = float(exact)
        return math.nextafter(rounded, math.inf) if Fraction(rounded) < exact else rounded

    def check_feasible(self) -> None:
        """Raise `InfeasibleBudgetError` when even the cheapest selection exceeds the budget."""
        cheapest = [g.cheapest for g in self.groups]
        if not within_budget(self, cheapest):
            raise InfeasibleBudgetError(self.min_cost(), self.budget)

    def objective(self, indices: Sequence[int]) -> float:
        return math.fsum(float(g.values[i]) for g, i in zip(self.groups, indices, strict=True))

    def cost(self, indices: Sequence[int]) -> float:
        """Correctly rounded total cost of a selection, in the problem's (true) units."""
        return math.fsum(float(g.costs[i]) for g, i in zip(self.groups, indices, strict=True))


def within_budget(problem: KnapsackProblem, indices: Sequence[int]) -> bool:
    """Whether the exact (rational) sum of the chosen float costs is <= the budget."""
    total = sum((Fraction(float(g.costs[i])) for g, i in zip(problem.groups, indices, strict=True)), Fraction(0))
    return total <= Fraction(problem.budget)


@dataclass(frozen=True)
class Selection:
    """A solver's answer: one option index per group and what it achieves, in true units.

    `upper_bound` is a proven bound on the best objective of the problem (true units); `status` is
    "optimal" when the objective reaches it (within `OPTIMALITY_RTOL`), else "feasible", so a gap is
    always visible as `upper_bound - objective`. `cost` is always within the budget.
    """

    indices: tuple[int, ...]
    counts: Mapping[str, int]
    objective: float
    cost: float
    budget: float
    upper_bound: float
    status: Status
    solve_time_s: float
    solver: str

    @property
    def gap(self) -> float:
        """Proven distance to the optimum: `upper_bound - objective` (0 when optimal)."""
        return max(0.0, self.upper_bound - self.objective)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["counts"] = dict(self.counts)
        record["indices"] = list(self.indices)
        record["gap"] = self.gap
        return record


def is_optimal(problem: KnapsackProblem, objective: float, upper_bound: float) -> bool:
    """Objective equal to the proven bound up to `OPTIMALITY_RTOL` of the values' magnitude
    (the sum over groups of the largest |value|)."""
    scale = math.fsum(float(np.abs(g.values).max()) for g in problem.groups)
    return upper_bound - objective <= OPTIMALITY_RTOL * max(1.0, scale)


def make_selection(problem: KnapsackProblem, indices: Sequence[int], upper_bound: float, solve_time_s: float,
                   solver: str) -> Selection:
    """Build a `Selection`, checking the budget in true units (a violation is a solver bug, not a gap)."""
    indices = tuple(int(i) for i in indices)
    if not within_budget(problem, indices):
        raise RuntimeError(f"solver {solver!r} returned a selection over the budget: "
                             f"{problem.cost(indices)!r} > {problem.budget!r}")
    objective = problem.objective(indices)
    upper_bound = max(upper_bound, objective)
    status: Status = "optimal" if is_optimal(problem, objective, upper_bound) else "feasible"
    return Selection(
        indices=indices,
        counts={g.name: int(g.counts[i]) for g, i in zip(problem.groups, indices, strict=True)},
        objective=objective,
        cost=problem.cost(indices),
        budget=problem.budget,
        upper_bound=float(upper_bound),
        status=status,
        solve_time_s=float(solve_time_s),
        solver=solver,
    )


def prefix_group(name: str, importances: npt.ArrayLike,
                 cost_of_count: Callable[[IntArray], npt.ArrayLike] | npt.ArrayLike, *,
                 min_count: int = 1, max_count: int | None = None, round_to: int = 1,
                 base_count: int = 0) -> ChoiceGroup:
    """Options "the k most important channels" of one group, for k in an allowed set.

    V(k) is the sum of the k largest `importances`; C(k) comes from `cost_of_count`, either a function
    evaluated once on the array of allowed k, or a table indexed by k (length >= max_count + 1).
    Allowed k: `min_count <= k <= max_count` with `base_count + k` a multiple of `round_to`
    (hardware-friendly widths), plus `max_count` itself, plus k = 0 when `min_count == 0` (adding
    nothing is always possible).

    Prune: k = channels kept of the active set, `min_count >= 1` (never empty a group the
    architecture needs), C(k) the group's latency at width k. Grow: k = channels added from the
    exploration set, `min_count=0`, `base_count` = the group's active width, C(k) the latency added
    relative to the active configuration (so C(0) = 0).
    """
    scores = np.asarray(importances, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"group {name!r}: importances must be 1-D, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"group {name!r}: importances must be finite")
    n = int(scores.size)
    max_count = n if max_count is None else int(max_count)
    if not 0 <= min_count <= max_count <= n:
        raise ValueError(f"group {name!r}: need 0 <= min_count ({min_count}) <= max_count ({max_count}) "
                         f"<= channels ({n})")
    if round_to < 1 or base_count < 0:
        raise ValueError(f"group {name!r}: round_to must be >= 1 and base_count >= 0")
    ks = np.arange(min_count, max_count + 1, dtype=np.int64)
    keep = ((base_count + ks) % round_to == 0) | (ks == max_count) | (ks == 0)
    counts = ks[keep]
    prefix = np.concatenate(([0.0], np.cumsum(np.sort(scores)[::-1])))
    if callable(cost_of_count):
        costs = np.asarray(cost_of_count(counts), dtype=np.float64)
        if costs.shape != counts.shape:
            raise ValueError(f"group {name!r}: cost_of_count returned shape {costs.shape} for {counts.size} counts")
    else:
        table = np.asarray(cost_of_count, dtype=np.float64)
        if table.ndim != 1 or table.size <= max_count:
            raise ValueError(f"group {name!r}: cost table needs an entry for every count 0..{max_count}, "
                             f"got {table.size}")
        costs = table[counts]
    return ChoiceGroup(name, counts, prefix[counts], costs)
