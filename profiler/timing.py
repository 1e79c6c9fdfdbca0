"""Timing loops shared by every backend: warm-up, repeats, median and spread.

`time_host` times a blocking call with the host clock (CPU backends). `time_cuda` times work
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


@dataclass(frozen=True)
class Timing:
    """Latency of one configuration in milliseconds: median, inter-quartile range, minimum, runs."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    runs: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        values = np.asarray(samples_ms, dtype=float)
        if values.size == 0:
            raise ValueError("no timing samples")
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q3 - q1), float(values.min()), int(values.size))


class CacheFlush:
    """Evict the CPU caches (untimed) by writing a buffer larger than them, as the rest of a network would.

    Inside a batch-1 CPU network a layer's weights were last touched a whole inference ago and come
    from memory, while its input was just written by the previous layer; a one-layer network run
    back to back would find both in cache and look too fast. Calling this, then touching the
    input, before each timed run reproduces the in-network state.
    """

    def __init__(self, megabytes: int) -> None:
        self._buffer = np.zeros(megabytes << 18, dtype=np.float32) if megabytes > 0 else None

    def __call__(self) -> None:
        if self._buffer is not None:
            self._buffer += 1.0


def time_host(run: Callable[[], object], warmup: int, repeats: int, before: Callable[[], object] | None = None) -> Timing:
    """Call `run` `warmup` times untimed, then `repeats` times, each timed with the host's monotonic clock.

    `before`, if given, runs untimed before every timed run (e.g. a `CacheFlush`).
    """
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing.from_samples(samples)


def time_cuda(run: Callable[[], object], stream: Any, warmup: int, repeats: int, cuda: Any = None) -> Timing:
    """Time work that `run` enqueues on CUDA `stream`: warm-up, CUDA-graph capture, events per replay.

    `cuda` is the `torch.cuda` module (a parameter so the orchestration can be tested without a
    GPU). If the work cannot be captured in a CUDA graph, it is timed as plain enqueues, as trtexec does.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    with cuda.stream(stream):
        for _ in range(max(warmup, 1)):  # at least once: lazy initialisation must stay out of the graph
            run()
        stream.synchronize()
        step: Callable[[], object] = run
        try:
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, stream=stream):
                run()
            graph.replay()
            stream.synchronize()
            step = graph.replay
        except RuntimeError:  # capture unsupported for this work: time plain enqueues
            stream.synchronize()
        starts = [cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [cuda.Event(enable_timing=True) for _ in range(repeats)]
        for start, end in zip(starts, ends):
            start.record(stream)
            step()
            end.record(stream)
        ends[-1].synchronize()
        return Timing.from_samples([start.elapsed_time(end) for start, end in zip(starts, ends)])
