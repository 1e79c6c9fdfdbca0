"""Random sub-networks of a model, physically pruned with the dependency graph.

Used to fit a LUT's calibration and to validate it. Each sub-network draws a level u in
[low, high] and keeps, in every prunable channel group, a random subset of round(f * size)
units (channels, or blocks of channels that go together) with f drawn from [u - spread, u + spread]
clipped to [low, high] (and at least the group's minimum). Every group therefore
keeps between `low` and `high` of its channels, as asked, while the networks still span the
whole range of sizes (independent per-group fractions would make every network about equally
fast, and a rank correlation over them would measure only noise).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from iee_deploy.graph import build_dependency_graph, prune_model


@dataclass
class Subnet:
    """A physically pruned sub-network and the per-layer channel counts the latency model needs."""

    model: nn.Module
    level: float  # the drawn overall keep level u
    keep: dict[str, int]  # group id -> units (channels, or channel blocks) kept
    layer_channels: dict[str, tuple[int, int]]  # layer name -> (cin, cout)


def keep_counts(sizes: Mapping[str, int], rng: np.random.Generator, low: float, high: float,
                minimum: Mapping[str, int] | None = None, spread: float = 0.15) -> tuple[float, dict[str, int]]:
    """Draw a level u ~ U(low, high) and a kept count per group with fraction in [u +- spread] and [low, high].

    Counts are at least 1 and at least the group's `minimum` (e.g. what its architecture requires).
    """
    if not 0 < low <= high <= 1:
        raise ValueError("keep fractions need 0 < low <= high <= 1")
    level = float(rng.uniform(low, high))
    counts = {}
    for group, size in sizes.items():
        fraction = rng.uniform(max(low, level - spread), min(high, level + spread))
        floor = max(1, (minimum or {}).get(group, 1))
        counts[group] = int(min(size, max(floor, round(fraction * size))))
    return level, counts


def random_subnetworks(model: nn.Module, resolution: int, count: int, seed: int, low: float = 0.3,
                       high: float = 1.0) -> Iterator[Subnet]:
    """Yield `count` random physically pruned sub-networks of `model` (see the module docstring)."""
    graph = build_dependency_graph(model.eval(), torch.randn(1, 3, resolution, resolution))
    prunable = [group for group in graph.groups if group.prunable]
    sizes = {group.id: group.size for group in prunable}
    minimum = {group.id: group.min_keep for group in prunable}
    rng = np.random.default_rng(seed)
    for _ in range(count):
        level, counts = keep_counts(sizes, rng, low, high, minimum)
        keep = {g: torch.as_tensor(np.sort(rng.choice(sizes[g], n, replace=False))) for g, n in counts.items()}
        pruned = prune_model(model, graph, keep).eval()
        yield Subnet(pruned, level, counts, dict(graph.layer_channels(counts)))
