"""Random sub-networks of a model, physically pruned with the dependency graph.

Used to fit a LUT's calibration and to validate it. Each sub-network draws a level u in
[low, high] and keeps, in every prunable channel group, a random subset of about f * size units
(channels, or blocks of channels that go together) with f drawn from [u - spread, u + spread]
clipped to [low, high], snapped to hardware-friendly counts (multiples of the LUT's channel block)
and at least the group's minimum. Every group therefore
keeps between `low` and `high` of its channels, as asked, while the networks still span the
whole range of sizes (independent per-group fractions would make every network about equally
fast, and a rank correlation over them would measure only noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from iee_deploy.graph import DependencyGraph, build_dependency_graph, prune_model


@dataclass
class Subnet:
    """A physically pruned sub-network and the per-layer channel counts the latency model needs."""

    model: nn.Module
    level: float  # the drawn overall keep level u
    keep: dict[str, int]  # group id -> units (channels, or channel blocks) kept
    layer_channels: dict[str, tuple[int, int]]  # layer name -> (cin, cout)


def snap(target: float, size: int, lowest: int, multiple: int) -> int:
    """The kept count nearest `target` among multiples of `multiple` and `size` itself, at least `lowest` if possible."""
    options = [*range(multiple, size, multiple), size]
    allowed = [c for c in options if c >= lowest] or [size]
    return min(allowed, key=lambda c: (abs(c - target), c))


def keep_counts(sizes: Mapping[str, int], rng: np.random.Generator, low: float, high: float,
                minimum: Mapping[str, int] | None = None, multiple: Mapping[str, int] | None = None,
                spread: float = 0.15) -> tuple[float, dict[str, int]]:
    """Draw a level u ~ U(low, high) and a kept count per group with fraction in [u +- spread] and [low, high].

    Counts are at least the group's `minimum` (what its architecture requires), and multiples of
    its `multiple` (hardware-friendly channel counts) or the whole group.
    """
    if not 0 < low <= high <= 1:
        raise ValueError("keep fractions need 0 < low <= high <= 1")
    level = float(rng.uniform(low, high))
    counts = {}
    for group, size in sizes.items():
        fraction = rng.uniform(max(low, level - spread), min(high, level + spread))
        lowest = max(1, (minimum or {}).get(group, 1), math.ceil(low * size))
        counts[group] = snap(fraction * size, size, lowest, (multiple or {}).get(group, 1))
    return level, counts


def random_subnetworks(model: nn.Module, resolution: int, count: int, seed: int, low: float = 0.3,
                       high: float = 1.0, align: int = 1, graph: DependencyGraph | None = None) -> Iterator[Subnet]:
    """Yield `count` random physically pruned sub-networks of `model` (see the module docstring).

    Each group keeps a multiple of `align` channels (or all of them), as a hardware-aware pruner
    does: a latency table measured on channel blocks of `align` describes those networks. `graph`:
    the model's dependency graph where the caller has built it already (else built here).
    """
    model.eval()
    graph = graph or build_dependency_graph(model, torch.randn(1, 3, resolution, resolution))
    prunable = [group for group in graph.groups if group.prunable]
    sizes = {group.id: group.size for group in prunable}
    minimum = {group.id: group.min_keep for group in prunable}
    per_unit = {group.id: max((ref.channels_per_unit for ref in group.owners), default=1) for group in prunable}
    multiple = {gid: align // math.gcd(align, per_unit[gid]) for gid in sizes}
    rng = np.random.default_rng(seed)
    for _ in range(count):
        level, counts = keep_counts(sizes, rng, low, high, minimum, multiple)
        keep = {g: torch.as_tensor(np.sort(rng.choice(sizes[g], n, replace=False))) for g, n in counts.items()}
        pruned = prune_model(model, graph, keep).eval()
        yield Subnet(pruned, level, counts, dict(graph.layer_channels(counts)))
