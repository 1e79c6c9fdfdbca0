"""Latency and throughput measurement in the manner of trtexec, for several engines side by side.

trtexec warms up for a fixed time, then runs until at least N iterations *and* T seconds have
passed, and reports the median / percentile latency and the throughput. We do the same, but for a
set of engines at once (the dense reference and the pruned model): the measurement is split into
`rounds` slices that alternate between the engines, so slow drifts of a shared machine (other
jobs, clock changes) hit both alike and the speed-up is a side-by-side ratio from one run.

Latency is host wall time of one synchronous inference of a full batch (launch to result ready),
in milliseconds per batch; images/s = batch x iterations / time spent in those iterations.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure. Defaults are trtexec's: 200 ms warm-up, >= 10 iterations and >= 3 s."""

    warmup_s: float = 0.2
    min_iterations: int = 10
    min_seconds: float = 3.0
    rounds: int = 5  # alternating slices per engine; each gets >= 1/rounds of the iterations and time

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.min_seconds < 0 or self.min_iterations < 1 or self.rounds < 1:
            raise ValueError(f"invalid timing configuration {self}")


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one engine at one batch size (all latencies in ms per batch)."""

    batch: int
    iterations: int
    total_s: float
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float


def percentile_nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) by nearest rank: the smallest value with >= q% of values at or below it."""
    if not values or not 0 < q <= 100:
        raise ValueError("need at least one value and 0 < q <= 100")
    ordered = sorted(values)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


def summarise(latencies_s: Sequence[float], batch: int) -> Timing:
    """Statistics of per-iteration latencies (seconds) of inferences on `batch` images."""
    if not latencies_s:
        raise ValueError("no latencies to summarise")
    total = float(sum(latencies_s))
    ms = [t * 1e3 for t in latencies_s]
    return Timing(
        batch=batch,
        iterations=len(ms),
        total_s=total,
        median_ms=float(statistics.median(ms)),
        p90_ms=percentile_nearest_rank(ms, 90),
        mean_ms=total * 1e3 / len(ms),
        min_ms=min(ms),
        max_ms=max(ms),
        images_per_s=batch * len(ms) / total if total > 0 else math.inf,
    )


def measure(calls: Mapping[str, Callable[[], None]], batch: int, config: TimingConfig = TimingConfig(),
            clock: Clock = time.perf_counter) -> dict[str, Timing]:
    """Time each synchronous one-batch call in `calls`, interleaved, and summarise each.

    Every call is first warmed up for `config.warmup_s`. Then, for `config.rounds` rounds, each call
    runs back to back for at least 1/rounds of `min_iterations` and of `min_seconds` (the order
    alternates between rounds), so every call ends with >= min_iterations and >= min_seconds.
    """
    if not calls:
        raise ValueError("nothing to measure")
    for call in calls.values():
        start = clock()
        call()  # at least one warm-up call, even with warmup_s = 0 (first-call initialisation)
        while clock() - start < config.warmup_s:
            call()
    per_round_iters = math.ceil(config.min_iterations / config.rounds)
    per_round_s = config.min_seconds / config.rounds
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(config.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            call, spent, done = calls[name], 0.0, 0
            while done < per_round_iters or spent < per_round_s:
                t0 = clock()
                call()
                elapsed = clock() - t0
                samples[name].append(elapsed)
                spent += elapsed
                done += 1
    return {name: summarise(values, batch) for name, values in samples.items()}
