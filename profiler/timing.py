"""Timing loops shared by every backend: warm-up, repeats, median and spread.

A backend turns what it measures into a `Runner`: something prepared once (a session, a CUDA
graph, an engine) that, when called with n, warms up and returns n per-run latencies in ms.
`host_runner` times a blocking call with the host clock (CPU backends). `cuda_runner` times work
enqueued on a CUDA stream the way cuDNN/TensorRT tables are measured: warm-up (which also runs
cuDNN's autotuner and lazy initialisation), one CUDA-graph capture so launch overhead does not
count, then CUDA events around every replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STATISTICS = ("median", "min")
"""Median: typical latency on a quiet device. Min: the least disturbed run, which on a shared machine
estimates the uncontended latency far more reproducibly (other processes only ever add time)."""

Runner = Callable[[int], list[float]]
"""runner(n): warm up, then time n runs; per-run latencies in ms."""


@dataclass(frozen=True)
class Timing:
    """Latency of one configuration in milliseconds: median, inter-quartile range, minimum, runs."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    runs: int

    def value(self, statistic: str) -> float:
        """The figure a latency table uses: "median" (typical latency) or "min" (uncontended latency)."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        return self.median_ms if statistic == "median" else self.min_ms

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        values = np.asarray(samples_ms, dtype=float)
        if values.size == 0:
            raise ValueError("no timing samples")
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q3 - q1), float(values.min()), int(values.size))


def interleaved(runners: Sequence[Runner], repeats: int, rounds: int) -> list[Timing]:
    """Time several prepared runners in `rounds` round-robin passes of about repeats/rounds runs each.

    A burst of load from other processes then slows every configuration alike instead of a few,
    which keeps comparisons between whole networks (calibration, validation) honest on a shared machine.
    """
    rounds = max(1, min(rounds, repeats))
    per_round = -(-repeats // rounds)
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for collected, runner in zip(samples, runners):
            collected.extend(runner(per_round))
    return [Timing.from_samples(s) for s in samples]


def host_runner(run: Callable[[], object], warmup: int) -> Runner:
    """Runner timing the blocking call `run` with the host's monotonic clock after `warmup` untimed calls."""

    def measure(repeats: int) -> list[float]:
        for _ in range(warmup):
            run()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append((time.perf_counter() - start) * 1e3)
        return samples

    return measure


def cuda_runner(run: Callable[[], object], stream: Any, warmup: int, cuda: Any = None) -> Runner:
    """Runner for work that `run` enqueues on CUDA `stream`: warm-up, CUDA-graph capture, events per replay.

    Preparation runs the work `warmup` times (at least once: cuDNN autotuning and lazy
    initialisation must stay out of the graph) and captures it; each call replays the graph
    `warmup` times untimed, then times each of n replays between CUDA events. If the work cannot
    be captured, plain enqueues are timed, as trtexec does. `cuda` is the `torch.cuda` module
    (a parameter so the orchestration can be tested without a GPU).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    step: Callable[[], object] = run
    with cuda.stream(stream):
        for _ in range(max(warmup, 1)):
            run()
        stream.synchronize()
        try:
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, stream=stream):
                run()
            graph.replay()
            step = graph.replay
        except RuntimeError:  # capture unsupported for this work: time plain enqueues
            pass
        stream.synchronize()

    def measure(repeats: int) -> list[float]:
        with cuda.stream(stream):
            for _ in range(warmup):
                step()
            starts = [cuda.Event(enable_timing=True) for _ in range(repeats)]
            ends = [cuda.Event(enable_timing=True) for _ in range(repeats)]
            for start, end in zip(starts, ends):
                start.record(stream)
                step()
                end.record(stream)
            ends[-1].synchronize()
            return [float(start.elapsed_time(end)) for start, end in zip(starts, ends)]

    return measure
