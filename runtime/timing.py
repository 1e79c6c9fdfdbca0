"""The one timing loop, the one `Timing` and the one percentile definition of the project.

A session (see `runtime.backends`) turns what it times into a `Runner`: something prepared once
(a session, a CUDA graph, an engine) that, called with n, times n runs and returns their
latencies in ms. The runner owns the clock: `host_runner` times a blocking call with the host's
monotonic clock (CPU sessions), `runtime.cuda.cuda_runner` puts CUDA events around replays of a
captured CUDA graph (GPU sessions). The profiler's layer tables and the deployment's budget
check therefore measure the same quantity on one device.

`measure` is the loop, in the manner of trtexec, for one runner or several side by side: warm up
for `warmup_s` (at least one run), then `rounds` rounds; in each round every runner runs
`warmup` untimed runs and then at least 1/rounds of `min_iterations` and of `min_seconds`, the
order alternating between rounds, so slow drifts of a shared machine hit every runner alike and a
speed-up is a side-by-side ratio from one run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from iee_deploy.errors import check_positive, check_whole

STATISTICS = ("median", "min")
"""Median: typical latency on a quiet device. Min (the fastest run): the least disturbed run, which on
a shared machine estimates the uncontended latency far more reproducibly (other jobs only ever add time)."""

STATISTIC_WORDS = {"median": "median", "min": "fastest run"}
"""How a statistic is printed beside a latency number or a plot axis."""

Runner = Callable[[int], list[float]]
"""runner(n): time n runs (no warm-up); per-run latencies in ms, measured by the runner's clock."""

Clock = Callable[[], float]


def describe(statistic: str) -> str:
    """The words printed beside a latency: "median" or "fastest run"."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    return STATISTIC_WORDS[statistic]


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks (numpy's default)."""
    if len(values) == 0 or not 0 <= q <= 100:
        raise ValueError("need at least one value and 0 <= q <= 100")
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class Timing:
    """Latency of one model (or one layer) at one batch size; latencies in ms per batch."""

    batch: int
    iterations: int
    total_s: float
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    iqr_ms: float = field(default=float("nan"))  # interquartile range (absent from engine reports of older versions)

    def value(self, statistic: str) -> float:
        """The latency a statistic names: "median" or "min" (the fastest run)."""
        describe(statistic)
        return self.median_ms if statistic == "median" else self.min_ms

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int = 1) -> Timing:
        """Statistics of per-run latencies in ms of inferences on `batch` images."""
        ms = np.asarray(samples_ms, dtype=float)
        if ms.size == 0:
            raise ValueError("no timing samples")
        total_ms = float(ms.sum())
        q1, q3 = percentile(ms, 25), percentile(ms, 75)
        return cls(batch=batch, iterations=int(ms.size), total_s=total_ms / 1e3, median_ms=percentile(ms, 50),
                   p90_ms=percentile(ms, 90), mean_ms=float(ms.mean()), min_ms=float(ms.min()), max_ms=float(ms.max()),
                   images_per_s=batch * ms.size * 1e3 / total_ms if total_ms > 0 else math.inf, iqr_ms=q3 - q1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure. Defaults are trtexec's: 200 ms warm-up, >= 10 iterations and >= 3 s, in 5 rounds."""

    warmup_s: float = 0.2  # once per runner, before the first round (at least one run)
    min_iterations: int = 10
    min_seconds: float = 3.0
    rounds: int = 5  # alternating slices per runner; each gets >= 1/rounds of the iterations and time
    warmup: int = 0  # untimed runs of a runner at the start of each of its rounds (caches after a switch)

    def __post_init__(self) -> None:
        """A ConfigError naming the field: NaN or infinite seconds would time forever or not at all."""
        for name in ("warmup_s", "min_seconds"):
            check_positive(name, getattr(self, name), zero_ok=True)
        for name, least in (("min_iterations", 1), ("rounds", 1), ("warmup", 0)):
            check_whole(name, getattr(self, name), least, least + 9)


def host_runner(run: Callable[[], object], clock: Clock = time.perf_counter) -> Runner:
    """Runner timing the blocking call `run` with the host's monotonic clock."""

    def timed(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = clock()
            run()
            samples.append((clock() - start) * 1e3)
        return samples

    return timed


def rounds_of(config: TimingConfig) -> int:
    """How many rounds `measure` makes (never more than the iterations asked for)."""
    return max(1, min(config.rounds, config.min_iterations))


def measure(runners: Mapping[str, Runner], batch: int, config: TimingConfig = TimingConfig(),
            step_done: Callable[[], object] | None = None) -> dict[str, Timing]:
    """Time every runner, interleaved in rounds (see the module docstring); `Timing` per name.

    `step_done` is called after each runner's share of a round (`rounds_of(config) * len(runners)`
    calls in all): a progress bar's `update`.
    """
    if not runners:
        raise ValueError("nothing to measure")
    for runner in runners.values():
        spent = sum(runner(1))  # at least one warm-up run, even with warmup_s = 0 (first-call initialisation)
        while spent < config.warmup_s * 1e3:
            spent += sum(runner(1))
    rounds = rounds_of(config)
    per_round_iterations = math.ceil(config.min_iterations / rounds)
    per_round_ms = config.min_seconds * 1e3 / rounds
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            runner = runners[name]
            if config.warmup:
                runner(config.warmup)
            taken = runner(per_round_iterations)
            spent = sum(taken)
            while spent < per_round_ms:  # more runs, sized by the mean so far, until the round's time is met
                mean = spent / len(taken) if spent > 0 else 0.0
                more = runner(max(1, min(1000, math.ceil((per_round_ms - spent) / mean))) if mean > 0 else 1)
                taken += more
                spent += sum(more)
            samples[name].extend(taken)
            if step_done is not None:
                step_done()
    return {name: Timing.from_samples(values, batch) for name, values in samples.items()}


def time_one(runner: Runner, batch: int, config: TimingConfig) -> Timing:
    """`measure` of a single runner."""
    return measure({"model": runner}, batch, config)["model"]


def lowest(passes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each name's lowest reading (ms) over `passes`, side-by-side timings of the same runners, for the names that
    every pass timed.

    Other jobs on a shared machine only ever add time, and for seconds to minutes at a time; a neighbour's load
    on the shared cache slows a large network far more than a small one (SSDlite's dense engine read 1.89 to 3.01
    ms within two minutes while its half-latency engine read 1.06 to 1.68), so a ratio taken within one disturbed
    pass is off by as much. Each runner's lowest reading over passes spread in time is its least disturbed one.
    """
    if not passes:
        raise ValueError("no timing passes")
    return {name: min(p[name] for p in passes) for name in passes[0] if all(name in p for p in passes)}


SETTLED = 0.01
"""`spread_passes`: a pass that lowers some runner's lowest reading by more than this share restarts the wait."""
LONGEST = 6
"""`spread_passes` times for at most this many times its `seconds` in all (a machine disturbed throughout)."""


def spread_passes(time_pass: Callable[[], Mapping[str, float]], seconds: float, least: int,
                  clock: Clock = time.monotonic) -> list[dict[str, float]]:
    """Side-by-side passes (`time_pass`: one timing of every runner, name -> ms), the passes `lowest` combines:
    repeated until `seconds` of wall time have passed since the last pass that lowered some runner's lowest reading
    by more than SETTLED, at least `least` of them, and for at most LONGEST x `seconds` in all.

    A machine disturbed for a while reads high until its load passes; the wait restarts at every clearly lower
    reading, so the timing outlasts a burst of load instead of ending inside it, and on a quiet machine it ends after
    `seconds`."""
    check_positive("seconds", seconds, zero_ok=True)
    check_whole("least", least, 1, 3)
    start = clock()
    settled_since = start
    done: list[dict[str, float]] = []
    low: dict[str, float] = {}
    while len(done) < least or (clock() < settled_since + seconds and clock() < start + LONGEST * seconds):
        done.append(dict(time_pass()))
        if any(name not in low or ms < low[name] * (1 - SETTLED) for name, ms in done[-1].items()):
            settled_since = clock()
        low = {name: min(ms, low.get(name, ms)) for name, ms in done[-1].items()}
    return done
