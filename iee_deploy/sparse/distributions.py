"""Layer-wise sparsity distributions: how a target sparsity S is spread over the prunable layers.

All functions are pure (shapes in, numbers out) and give *exact integer* active-weight counts,
so that "the final per-layer sparsity matches ERK" is a testable equality, not an approximation.

- Uniform: every layer has sparsity S (each layer's count rounded on its own).
- ERK (Erdos-Renyi-Kernel, Evci et al. 2020 / Mocanu et al. 2018): layer density proportional to
  `sum(shape) / prod(shape)`; layers whose density would exceed 1 are made dense and the scale
  is re-normalised over the rest (google-research/rigl `get_sparsities_erdos_renyi`). The total
  active count is exactly `round((1 - S) * N)`, distributed by largest remainder.
- Global (the paper's Non-uniform): no per-layer constraint; prune and grow rank all weights
  together. The *initial* counts are ERK's (the paper's IEE_erk-init).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

Shape = Sequence[int]


class Distribution(StrEnum):
    UNIFORM = "uniform"
    ERK = "erk"
    GLOBAL = "global"


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def erk_densities(shapes: Sequence[Shape], sparsity: float) -> list[float]:
    """ERK density of each layer (1.0 for layers capped dense) for overall sparsity `sparsity`."""
    _check_sparsity(sparsity)
    numels = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        # Active weights to place in the non-dense layers: the overall budget minus the dense layers.
        rhs = sum((1 - sparsity) * n for i, n in enumerate(numels) if i not in dense) \
            - sum(sparsity * n for i, n in enumerate(numels) if i in dense)
        divisor = sum(raw[i] * numels[i] for i in range(len(shapes)) if i not in dense)
        if divisor == 0:
            return [1.0] * len(shapes)
        eps = rhs / divisor
        sparse_raw = [raw[i] for i in range(len(shapes)) if i not in dense]
        if eps * max(sparse_raw) <= 1:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        top = max(sparse_raw)
        dense.update(i for i in range(len(shapes)) if i not in dense and raw[i] == top)


def _largest_remainder(exact: Sequence[float], caps: Sequence[int], total: int) -> list[int]:
    """Integers summing to `total`, each floor(exact) or one more (largest fractions first), within caps."""
    counts = [min(int(math.floor(x)), c) for x, c in zip(exact, caps)]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    missing = total - sum(counts)
    for i in order:
        if missing <= 0:
            break
        if counts[i] < caps[i]:
            counts[i] += 1
            missing -= 1
    return counts


def layer_active_counts(shapes: Sequence[Shape], sparsity: float, distribution: Distribution | str) -> list[int]:
    """Exact number of active (unpruned) weights per layer for overall sparsity `sparsity`."""
    _check_sparsity(sparsity)
    distribution = Distribution(distribution)
    numels = [math.prod(s) for s in shapes]
    if distribution is Distribution.UNIFORM:
        return [int(round((1 - sparsity) * n)) for n in numels]
    densities = erk_densities(shapes, sparsity)
    total = int(round((1 - sparsity) * sum(numels)))
    return _largest_remainder([d * n for d, n in zip(densities, numels)], numels, total)
