"""Aiming a predicted budget so that the measured result lands on a target: pure arithmetic, no torch.

A knapsack keeps a structure whose *predicted* cost is within its aim. What the engine then measures
differs from the prediction (a latency table sums layers; a whole network fuses and caches), and not
by one constant factor: on a depthwise network the measured latency moves faster than the aim.
Given the aims already tried and what each measured, both as fractions of the dense model:

- `next_aim` is the next aim to try: the straight line through the two nearest tries whose
  measurements bracket the target, or, with no bracket, a step on from the outermost try toward
  the target (the smallest aim when every try measured too slow, the largest when every one
  measured too fast: a structure's latency need not grow with its aim, and stepping from the try
  that measured nearest can land on an aim already tried). That step is the proportional
  correction, or, where the two outermost tries measured in the order of their aims, the line
  through them: it steps less where the latency moves faster than the aim (no overshoot) and more
  where it moves slower (no creeping up on the target in steps too short to move the structure),
  at most `STRETCH` times the proportional step;
- `best_try` is the try to keep: the one measured nearest the target (within a tolerance, if any
  try is, since the nearest try is then one of those within it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]
"""(aim, measured), both as fractions of the dense model."""
STRETCH = 4.0
"""The longest step without a bracket, as a multiple of the proportional correction (the line through two
close tries can point far off)."""


def next_aim(points: Sequence[Point], target: float, floor: float, ceiling: float = 1.0) -> float | None:
    """The aim to try next toward a measured `target` from `points` (see the module docstring), clipped to [`floor`,
    `ceiling`] (the smallest and largest aims the knapsack accepts); None when it is an aim already tried: its result
    would be the same again."""
    ordered = sorted(points)
    brackets = [(a, b) for a, b in zip(ordered, ordered[1:]) if (a[1] - target) * (b[1] - target) <= 0 and a[1] != b[1]]
    if brackets:
        (r0, m0), (r1, m1) = min(brackets, key=lambda pair: pair[1][0] - pair[0][0])
        aim = r0 + (target - m0) * (r1 - r0) / (m1 - m0)
    else:  # every try on one side: step on from the outermost aim toward the target (the engines need not be monotone)
        slow = all(m > target for _, m in ordered)
        (r, m), inner = (ordered[0], ordered[1:2]) if slow else (ordered[-1], ordered[-2:-1])
        aim = r * target / m
        if inner and (m - inner[0][1]) * (r - inner[0][0]) > 0:  # the two outermost measured in the order of their aims
            line = r + (target - m) * (r - inner[0][0]) / (m - inner[0][1])
            aim = r + min(line - r, STRETCH * (aim - r), key=abs)
    aim = min(ceiling, max(floor, aim))
    return None if any(math.isclose(aim, r, rel_tol=1e-4) for r, _ in ordered) else aim


def within(measured: float, target: float, tolerance: float) -> bool:
    """Whether `measured` is within `tolerance` (relative) of `target`."""
    return abs(measured / target - 1) <= tolerance


def best_try(points: Sequence[Point], target: float) -> int:
    """The index in `points` of the try to keep (see the module docstring)."""
    if not points:
        raise ValueError("no tries to choose from")
    return min(range(len(points)), key=lambda i: abs(points[i][1] - target))
