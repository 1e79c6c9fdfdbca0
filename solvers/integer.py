"""Integer costs for the exact solvers, without ever trusting rounding for feasibility.

DP and CP-SAT need integer costs. With a power-of-two unit u, c / u is exact in floating point,
so rounding is exact too, and two integer problems bracket the true one:

- the *restriction* rounds costs up and the budget down: any selection it accepts satisfies
  sum c <= u * sum ceil(c / u) <= u * floor(B / u) <= B, so it respects the true budget;
- the *relaxation* rounds costs and the budget down: every truly feasible selection satisfies
  sum floor(c / u) <= floor(sum c / u) <= floor(B / u), so its optimum bounds the true optimum.

`dp` reads its answer back from the relaxation's table (see `solvers.dp`). `solve_bracketed`,
for `cpsat`, solves the relaxation; an answer that also fits the true budget is a proven optimum,
and one that does not is excluded and the relaxation solved again (exact: the excluded selection
is truly infeasible), a few times, before falling back to the restriction with the relaxation's
value as the stated bound. Rounding can thus cost optimality only visibly, never feasibility.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from solvers.problem import FloatArray, IntArray, KnapsackProblem, within_budget
from solvers.relaxation import pareto_front

#: Costs and budget are scaled to at most 2**MAX_BITS units so sums stay exact in int64.
MAX_BITS = 50


@dataclass(frozen=True)
class IntegerProblem:
    """Per group: the option ids still in play, their integer costs (the cheapest at 0) and values."""

    options: tuple[IntArray, ...]
    costs: tuple[IntArray, ...]
    values: tuple[FloatArray, ...]
    capacity: int


@dataclass(frozen=True)
class IntegerAnswer:
    """An integer solver's result: chosen position within each group's `options` (None if it found
    none) and a proven upper bound on the integer problem's optimum, in true value units."""

    positions: tuple[int, ...] | None
    bound: float


#: (problem, hint positions, time limit in s, excluded position tuples) -> answer.
IntegerSolver = Callable[[IntegerProblem, Sequence[int] | None, float | None, Sequence[Sequence[int]]],
                         IntegerAnswer]


def power_of_two_unit(problem: KnapsackProblem, allowed: Sequence[IntArray], resolution: int) -> int:
    """Exponent e of the unit 2**e: about `resolution` units over the budget left after the
    cheapest options, but never so fine that costs exceed 2**MAX_BITS units."""
    cheapest = math.fsum(float(g.costs[a].min()) for g, a in zip(problem.groups, allowed))
    free = problem.budget - cheapest
    magnitude = max([abs(problem.budget)] + [float(np.abs(g.costs[a]).max()) for g, a in zip(problem.groups, allowed)])
    floor_exp = math.frexp(magnitude)[1] - MAX_BITS if magnitude > 0 else -1074
    fine_exp = math.frexp(free / resolution)[1] - 1 if free > 0 else floor_exp
    return max(fine_exp, floor_exp)


def _round(x: FloatArray, exact: FloatArray, direction: Literal["floor", "ceil"]) -> IntArray:
    """Round the scaled costs; a value so small that scaling flushed it to 0 keeps its side of 0."""
    if direction == "floor":
        out = np.floor(x)
        out[(out == 0) & (exact < 0)] = -1
    else:
        out = np.ceil(x)
        out[(out == 0) & (exact > 0)] = 1
    return out.astype(np.int64)


def integer_problem(problem: KnapsackProblem, allowed: Sequence[IntArray], exponent: int,
                    direction: Literal["floor", "ceil"], prune_dominated: bool = True) -> IntegerProblem | None:
    """The relaxation ("floor") or restriction ("ceil") at unit 2**exponent, without options that
    cannot fit and (if `prune_dominated`) options dominated after rounding; None when nothing fits."""
    capacity = math.floor(math.ldexp(problem.budget, -exponent))
    options, costs, values = [], [], []
    for g, ids in zip(problem.groups, allowed):
        scaled = _round(np.ldexp(g.costs[ids], -exponent), g.costs[ids], direction)
        base = int(scaled.min())
        capacity -= base
        options.append(ids)
        costs.append(scaled - base)
        values.append(g.values[ids])
    if capacity < 0:
        return None
    kept_options, kept_costs, kept_values = [], [], []
    for ids, cost, value in zip(options, costs, values):
        order = pareto_front(cost, value) if prune_dominated else np.arange(cost.size)
        order = order[cost[order] <= capacity]
        kept_options.append(ids[order])
        kept_costs.append(cost[order])
        kept_values.append(value[order])
    return IntegerProblem(tuple(kept_options), tuple(kept_costs), tuple(kept_values), int(capacity))


def solve_bracketed(problem: KnapsackProblem, allowed: Sequence[IntArray], resolution: int,
                    integer_solver: IntegerSolver, hint: Sequence[int] | None = None,
                    time_limit_s: float | None = None,
                    max_exclusions: int = 0) -> tuple[tuple[int, ...] | None, float]:
    """Solve the relaxation; while its answer does not fit the true budget, exclude that answer and
    solve again (at most `max_exclusions` times, for solvers that accept exclusions); finally fall
    back to the restriction. Returns the chosen option index per group (None if no truly feasible
    selection was found in time) and a proven upper bound on the optimum over the `allowed` options.

    Excluding is exact: an excluded selection is truly infeasible, so the relaxation over what is
    left still bounds the true optimum. That is also why the relaxation keeps options that only
    rounding makes look dominated when exclusions are in play.
    """
    exponent = power_of_two_unit(problem, allowed, resolution)
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    relaxed = integer_problem(problem, allowed, exponent, "floor", prune_dominated=max_exclusions == 0)
    if relaxed is None:  # even the relaxation is infeasible, so nothing truly fits
        return None, -math.inf
    bound = math.inf
    excluded: list[tuple[int, ...]] = []
    while True:
        answer = integer_solver(relaxed, _positions(relaxed, hint), _left(deadline), excluded)
        bound = min(bound, answer.bound)
        if answer.positions is None:
            break
        chosen = _indices(relaxed, answer.positions)
        if within_budget(problem, chosen):
            return chosen, bound
        if len(excluded) >= max_exclusions:
            break
        excluded.append(answer.positions)
    restricted = integer_problem(problem, allowed, exponent, "ceil")
    if restricted is None:
        return None, bound
    inner = integer_solver(restricted, _positions(restricted, hint), _left(deadline), [])
    if inner.positions is None:
        return None, bound
    return _indices(restricted, inner.positions), bound


def _indices(ip: IntegerProblem, positions: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(o[p]) for o, p in zip(ip.options, positions))


def _positions(ip: IntegerProblem, hint: Sequence[int] | None) -> list[int] | None:
    """Map option indices to positions in `ip`; None when the hint uses a dropped option."""
    if hint is None:
        return None
    positions = []
    for ids, index in zip(ip.options, hint):
        where = np.flatnonzero(ids == index)
        if where.size == 0:
            return None
        positions.append(int(where[0]))
    return positions


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.perf_counter())
