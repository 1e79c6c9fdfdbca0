"""The runtime's channel blocking, measured: which channel counts a pruned layer should keep.

A CPU runtime such as ONNX Runtime (NCHWc convolutions) computes a conv in blocks of `block`
channels (16 with AVX-512): above one block, a layer of 40 channels runs as one of 48, so its
latency falls in steps at the multiples of the block. Below one block the layer runs unblocked
and its latency keeps falling with the channels, so a narrow group (ResNet-20's 16-channel
stage) still gets faster at half a block. The grid of a latency table follows both facts:

- `block`: the smallest power of two b >= 2 such that the measured latency steps down at every
  multiple of b from 2b up (latency(k b) below latency(k b - 1) by more than `STEP_TOLERANCE`; at b
  itself the unblocked regime below meets the blocked one, so no step is required there), 1 when no b
  does (no blocking); a stray step elsewhere (timing noise, a special case of the runtime) does not
  change it;
- `align`: the channel multiple pruning keeps: half a block when the measured latency at half a
  block is below the latency at one block by more than `STEP_TOLERANCE` (the runtime saves below
  its block), else the block.

The latency model rounds a count below one block up to a multiple of `align` and a count of at
least one block up to a multiple of `block` (`round_channels`), so a 24-channel layer on a
16-blocked runtime costs what 32 costs, and a knapsack keeps 32 rather than 24 (same cost, more
channels). `measure_blocking` times one dense 3x3 conv at cin = cout = 1 .. `2 * MAX_BLOCK` with a
profiler `Measurer`; `blocking_from_latencies` is the pure rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from profiler.layers import LayerSignature
from runtime.progress import progress as progress_bar

if TYPE_CHECKING:
    from profiler.measurer import Measurer

MAX_BLOCK = 32
"""Largest channel block looked for; the measurement covers two of them."""
STEP_TOLERANCE = 0.05
"""A count's latency must be this fraction below its neighbour's to count as a step (timing noise is below it)."""
PROBE_HW = 32
"""Input height and width of the probe conv: large enough that the conv's work, not overhead, sets its latency."""


@dataclass(frozen=True)
class Blocking:
    """Channel multiples of a runtime: pruning keeps multiples of `align` below one `block`, of `block` above."""

    align: int
    block: int

    def __post_init__(self) -> None:
        if self.align < 1 or self.block < 1 or self.block % self.align:
            raise ValueError(f"align {self.align} must be positive and divide block {self.block}")


def step_counts(latency: Mapping[int, float], tolerance: float = STEP_TOLERANCE) -> list[int]:
    """The counts c whose latency is below latency(c - 1) by more than `tolerance` (relative), ascending."""
    return [c for c in sorted(latency) if c - 1 in latency and latency[c] < (1 - tolerance) * latency[c - 1]]


def powers_of_two(limit: int) -> list[int]:
    """2, 4, 8, ... up to `limit`."""
    return [2 ** k for k in range(1, max(limit, 1).bit_length()) if 2 ** k <= limit]


def blocking_from_latencies(latency: Mapping[int, float], tolerance: float = STEP_TOLERANCE) -> Blocking:
    """The `Blocking` that latencies measured at consecutive channel counts show (see the module docstring)."""
    steps = set(step_counts(latency, tolerance))
    top = max(latency, default=0)
    block = next((b for b in powers_of_two(min(MAX_BLOCK, top)) if all(m in steps for m in range(2 * b, top + 1, b))), 1)
    half = block // 2
    if block % 2 == 0 and half in latency and block in latency and latency[half] < (1 - tolerance) * latency[block]:
        return Blocking(half, block)
    return Blocking(block, block)


def round_channels(x: ArrayLike, align: int, block: int, cap: float) -> NDArray[np.float64]:
    """Channel counts as the runtime computes them: below `block` up to a multiple of `align`, else of `block`; <= `cap`."""
    q = np.asarray(x, float)
    if block <= 1:  # no blocking: counts as they are (a table extends its last cell linearly)
        return q
    fine = np.ceil(q / max(align, 1)) * max(align, 1)
    coarse = np.ceil(q / max(block, 1)) * max(block, 1)
    return np.asarray(np.minimum(np.where(fine < block, fine, coarse), cap))


def probe_signature(channels: int = 2 * MAX_BLOCK, hw: int = PROBE_HW) -> LayerSignature:
    """The dense 3x3 stride-1 conv that `measure_blocking` times at every channel count up to `channels`."""
    return LayerSignature("conv", (3, 3), (1, 1), (1, 1), (1, 1), "dense", 1, (hw, hw), channels, channels, False, False)


def measure_blocking(measurer: Measurer, batch: int = 1, channels: int = 2 * MAX_BLOCK,
                     progress: bool = False) -> tuple[Blocking, dict[int, float]]:
    """Time the probe conv at cin = cout = 1 .. `channels` (fastest run) and read the blocking off the latencies.

    With `progress`, a line at least every 10 s without a terminal (at a large batch this takes minutes).
    """
    sig = probe_signature(channels)
    counts = progress_bar(range(1, channels + 1), total=channels, desc="profile: measure the channel blocking",
                          unit="count", enabled=progress)
    latency = {c: measurer.time_layer(sig, c, c, batch).min_ms for c in counts}
    return blocking_from_latencies(latency), latency
