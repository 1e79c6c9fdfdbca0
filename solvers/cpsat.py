"""`cpsat`: the default solver, OR-Tools CP-SAT on a problem first shrunk by its LP relaxation.

1. `relax`: Pareto fronts, the greedy fill (a feasible incumbent worth L) and the LP bound U.
   When L reaches U the greedy answer is already proven optimal and CP-SAT is not needed.
2. `reduced_options`: reduced-cost fixing keeps only options that could reach a target T >= L.
   On channel-level instances this removes almost everything (options far from the LP break
   point); guessing T close to U first (see `solve_cpsat`) keeps that true even when L is weak.
3. CP-SAT on what is left: one Boolean per option, exactly one per group, the integer-scaled
   cost row <= capacity, maximise the integer-scaled value, the greedy answer as a hint. Costs are
   bracketed (`solvers.integer`) so the answer fits the true budget; values are rounded to
   2**-VALUE_BITS of their range and the bound is widened by that rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from ortools.sat.python import cp_model

from solvers.integer import IntegerAnswer, IntegerProblem, solve_bracketed
from solvers.problem import KnapsackProblem, Selection, is_optimal, make_selection
from solvers.relaxation import reduced_options, relax

#: Integer cost units over the budget left after every group's cheapest option.
CPSAT_RESOLUTION = 1 << 30
#: Values are scaled so the objective spans at most 2**VALUE_BITS integer units.
VALUE_BITS = 40
#: Relaxation answers that miss the true budget by rounding alone are cut off and the relaxation
#: re-solved, up to this many times, before falling back to the (feasible) restriction.
MAX_EXCLUSIONS = 25
#: Shrinking targets T = U - fraction * (U - L), tried in turn (see `solve_cpsat`); 1 means T = L.
TARGET_FRACTIONS = (1 / 16, 1 / 4, 1.0)
#: CP-SAT search workers (the reduced models are small; one worker avoids thread start-up).
CPSAT_WORKERS = 1
#: CP-SAT's presolve stays off. In ortools 9.15 it certifies wrong optima on exactly this model
#: shape (exactly-one groups plus one knapsack row): 14 of 3,000 random 2-4 group instances with
#: 10-bit costs came back "OPTIMAL" below the brute-force optimum, 8 of 3,000 even with
#: presolve_inclusion_work_limit=0 (the workaround in google/or-tools#5293), 0 of 15,000 without
#: presolve. The reduced models are small, so presolve buys nothing here.
CPSAT_PRESOLVE = False


def cpsat_integer(ip: IntegerProblem, hint: Sequence[int] | None = None, time_limit_s: float | None = None,
                  excluded: Sequence[Sequence[int]] = ()) -> IntegerAnswer:
    """Solve an integer problem with CP-SAT, with the `excluded` selections cut off by no-good
    clauses; the bound is in true value units."""
    lows = [float(v.min()) for v in ip.values]
    span = math.fsum(float(v.max()) - low for v, low in zip(ip.values, lows))
    exponent = (math.frexp(span)[1] - VALUE_BITS) if span > 0 else 0
    unit = math.ldexp(1.0, exponent)
    model = cp_model.CpModel()
    fixed_value, fixed_cost = 0.0, 0  # groups left with one option
    rounding = 0.0  # the largest total error value rounding can introduce
    booleans_cost: list[cp_model.IntVar] = []
    coef_cost: list[int] = []
    coef_value: list[int] = []
    chosen_vars: list[list[cp_model.IntVar]] = []
    for gi, (costs, values) in enumerate(zip(ip.costs, ip.values)):
        if costs.size == 1:
            fixed_cost += int(costs[0])
            fixed_value += float(values[0])
            chosen_vars.append([])
            continue
        exact = np.ldexp(values - lows[gi], -exponent)
        scaled = np.rint(exact)
        rounding += unit * float(np.abs(scaled - exact).max())
        booleans = [model.new_bool_var(f"g{gi}o{j}") for j in range(costs.size)]
        model.add_exactly_one(booleans)
        chosen_vars.append(booleans)
        booleans_cost.extend(booleans)
        coef_cost.extend(costs.tolist())
        coef_value.extend(scaled.astype(np.int64).tolist())
        fixed_value += lows[gi]
        if hint is not None:
            for j, b in enumerate(booleans):
                model.add_hint(b, j == hint[gi])
    if not booleans_cost:
        # One selection left: the answer, unless it was excluded (then nothing is left).
        return IntegerAnswer(None, -math.inf) if excluded else IntegerAnswer(tuple(0 for _ in chosen_vars), fixed_value)
    for positions in excluded:
        model.add_bool_or([booleans[j].Not() for booleans, j in zip(chosen_vars, positions) if booleans])
    model.add(cp_model.LinearExpr.weighted_sum(booleans_cost, coef_cost) <= ip.capacity - fixed_cost)
    model.maximize(cp_model.LinearExpr.weighted_sum(booleans_cost, coef_value))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = CPSAT_WORKERS
    solver.parameters.cp_model_presolve = CPSAT_PRESOLVE
    if time_limit_s is not None:
        solver.parameters.max_time_in_seconds = max(time_limit_s, 1e-3)
    status = solver.solve(model)
    if status == cp_model.INFEASIBLE:  # everything left was excluded
        return IntegerAnswer(None, -math.inf)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):  # stopped by the time limit
        return IntegerAnswer(None, math.inf)
    positions = tuple(0 if not booleans else next(j for j, b in enumerate(booleans) if solver.boolean_value(b))
                      for booleans in chosen_vars)
    return IntegerAnswer(positions, fixed_value + unit * solver.best_objective_bound + rounding)


def solve_cpsat(problem: KnapsackProblem, time_limit_s: float | None = None) -> Selection:
    """LP-shrunk CP-SAT solve; optimal unless the time limit stops it (then the best found).

    The shrinking uses a guessed target T between the greedy value L and the LP bound U, raised
    from U - gap / 16 towards L (`TARGET_FRACTIONS`): only options that can reach T are kept, so
    the model is tiny. If the best selection among them reaches T it is optimal (every selection
    worth >= T was in the model); if not, every selection is worth < T, and T is lowered. The last
    round uses T = the best value found, which keeps every optimal selection.
    """
    start = time.perf_counter()
    relaxation = relax(problem)
    best, value = relaxation.greedy, relaxation.greedy_value
    upper = relaxation.bound
    if is_optimal(problem, value, upper):
        return make_selection(problem, best, upper, time.perf_counter() - start, "cpsat")
    for fraction in TARGET_FRACTIONS:
        target = max(value, relaxation.bound - fraction * (relaxation.bound - relaxation.greedy_value))
        allowed = reduced_options(problem, relaxation, target)
        left = None if time_limit_s is None else max(0.0, time_limit_s - (time.perf_counter() - start))
        chosen, bound = solve_bracketed(problem, allowed, CPSAT_RESOLUTION, cpsat_integer, best, left,
                                        max_exclusions=MAX_EXCLUSIONS)
        if chosen is not None and problem.objective(chosen) > value:
            best, value = chosen, problem.objective(chosen)
        # Selections outside the model are worth < target: the optimum is <= max(bound, target).
        upper = min(upper, max(bound, target))
        out_of_time = time_limit_s is not None and time.perf_counter() - start >= time_limit_s
        if value >= target or out_of_time:
            break
    return make_selection(problem, best, upper, time.perf_counter() - start, "cpsat")
