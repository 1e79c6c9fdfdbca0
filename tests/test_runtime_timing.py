"""The one `Timing`, percentile and timing loop of `runtime.timing`: exact expectations with a fake clock."""

import math

import pytest

from iee_deploy.errors import ConfigError
from runtime.timing import (
    LONGEST,
    Timing,
    TimingConfig,
    describe,
    host_runner,
    lowest,
    measure,
    percentile,
    spread_passes,
)


def test_percentile_by_linear_interpolation():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0]
    assert percentile(values, 90) == pytest.approx(9.1)  # rank 0.9 * 9 = 8.1: 9 + 0.1 * (10 - 9)
    assert percentile(values, 50) == 5.5
    assert percentile(values, 100) == 10.0 and percentile(values, 0) == 1.0
    assert percentile([3.0], 90) == 3.0
    with pytest.raises(ValueError):
        percentile([], 90)


def test_timing_units_and_throughput():
    t = Timing.from_samples([1.0, 2.0, 3.0, 4.0], batch=8)
    assert t.iterations == 4 and t.batch == 8
    assert t.median_ms == pytest.approx(2.5) and t.iqr_ms == pytest.approx(1.5)
    assert t.p90_ms == pytest.approx(3.7)
    assert t.mean_ms == pytest.approx(2.5)
    assert (t.min_ms, t.max_ms) == (pytest.approx(1.0), pytest.approx(4.0))
    assert t.total_s == pytest.approx(0.010)
    assert t.images_per_s == pytest.approx(8 * 4 / 0.010)


class FakeClock:
    """A clock that only moves when a fake inference runs."""

    def __init__(self):
        self.now = 0.0
        self.log = []

    def __call__(self):
        return self.now

    def engine(self, name, seconds):
        def call():
            self.now += seconds
            self.log.append(name)
        return call


def test_measure_meets_iterations_and_time_for_every_engine_and_alternates():
    clock = FakeClock()
    config = TimingConfig(warmup_s=0.01, min_iterations=10, min_seconds=0.1, rounds=5)
    runners = {name: host_runner(clock.engine(name, s), clock) for name, s in (("dense", 0.004), ("pruned", 0.001))}
    timings = measure(runners, 2, config)
    # warm-up: dense 3 calls (0.012 s >= 0.01), pruned 10 calls
    assert clock.log[:13] == ["dense"] * 3 + ["pruned"] * 10
    timed = clock.log[13:]
    # each round: >= ceil(10/5) = 2 iterations and >= 0.02 s -> dense 5 x 4 ms, pruned 20 x 1 ms
    assert timings["dense"].iterations == 5 * 5 and timings["pruned"].iterations == 5 * 20
    assert timings["dense"].median_ms == pytest.approx(4.0) and timings["pruned"].median_ms == pytest.approx(1.0)
    assert timings["pruned"].images_per_s == pytest.approx(2 / 0.001)
    # rounds alternate the order: dense first, then pruned first, ...
    starts = [timed[0], timed[5], timed[25]]
    assert starts == ["dense", "pruned", "pruned"]
    assert timed[25:45] == ["pruned"] * 20 and timed[45:50] == ["dense"] * 5
    for t in timings.values():
        assert t.iterations >= config.min_iterations and t.total_s >= config.min_seconds - 1e-9


def test_measure_zero_time_budget_still_runs_min_iterations():
    clock = FakeClock()
    timings = measure({"x": host_runner(clock.engine("x", 0.5), clock)}, 1,
                      TimingConfig(warmup_s=0, min_iterations=3, min_seconds=0, rounds=2))
    assert clock.log.count("x") == 1 + 2 * 2  # one warm-up call, ceil(3/2) per round
    assert timings["x"].iterations == 4 and math.isclose(timings["x"].images_per_s, 2.0)


def test_invalid_config_names_the_field():
    for fields, match in (({"min_iterations": 0}, "`min_iterations` 0 is not a whole number >= 1"),
                          ({"min_seconds": math.nan}, "`min_seconds` nan is not a non-negative finite number"),
                          ({"warmup_s": math.inf}, "`warmup_s` inf is not a non-negative finite number"),
                          ({"rounds": 2.5}, "`rounds` 2.5 is not a whole number >= 1")):
        with pytest.raises(ConfigError, match=match):
            TimingConfig(**fields)


def test_statistic_words_and_values():
    t = Timing.from_samples([3.0, 1.0, 2.0])
    assert (t.value("min"), t.value("median")) == (1.0, 2.0)
    assert (describe("min"), describe("median")) == ("fastest run", "median")
    with pytest.raises(ValueError):
        t.value("mean")


def test_old_engine_reports_without_iqr_still_load():
    data = {k: v for k, v in Timing.from_samples([1.0, 2.0]).__dict__.items() if k != "iqr_ms"}
    assert math.isnan(Timing.from_dict(data).iqr_ms)


def test_lowest_takes_each_runner_s_least_disturbed_reading_over_the_passes():
    passes = [{"dense": 2.4, "half": 1.15, "gone": 9.0}, {"dense": 1.9, "half": 1.08}, {"dense": 3.0, "half": 1.06}]
    assert lowest(passes) == {"dense": 1.9, "half": 1.06}  # "gone" was not timed in every pass
    assert lowest(passes[:1]) == passes[0]
    with pytest.raises(ValueError):
        lowest([])


def test_spread_passes_waits_out_a_burst_of_load_and_stops_once_the_lowest_readings_hold():
    now = [0.0]
    readings = iter([3.0, 2.9, 3.0, 2.0, 2.0, 1.99, 2.0, 2.0] + [5.0] * 100)

    def clock() -> float:
        return now[0]

    def one_pass() -> dict[str, float]:
        now[0] += 4.0  # a pass takes 4 s of wall time
        return {"net": next(readings)}

    # 3.0 at 4 s; 2.9 (lower by >1%) at 8 s; 2.0 at 16 s restarts the wait; 1.99 is within 1%: 10 s after 16 s, stop
    done = spread_passes(one_pass, 10.0, 1, clock)
    assert [p["net"] for p in done] == [3.0, 2.9, 3.0, 2.0, 2.0, 1.99, 2.0] and now[0] == 28.0
    now[0] = 0.0
    assert len(spread_passes(one_pass, 0.0, 3, clock)) == 3  # no time asked: the least passes still run
    falling = iter(range(1000, 0, -10))

    def ever_lower() -> dict[str, float]:
        now[0] += 1.0
        return {"net": next(falling)}

    now[0] = 0.0
    assert len(spread_passes(ever_lower, 5.0, 1, clock)) == LONGEST * 5  # stopped after LONGEST x seconds
    with pytest.raises(ConfigError, match="least"):
        spread_passes(one_pass, 1.0, 0, clock)
    with pytest.raises(ConfigError, match="seconds"):
        spread_passes(one_pass, -1.0, 1, clock)
