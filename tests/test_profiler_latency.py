"""The latency model's maths: exact expectations on hand-made tables (no measurement)."""

import time

import numpy as np
import pytest

from iee_deploy.profiling import mape, spearman
from iee_deploy.subnets import keep_counts, snap
from profiler.blocking import round_channels
from profiler.latency import (
    Calibration,
    LatencyModel,
    LayerTable,
    bilinear,
    fit_calibration,
    linear,
)


def plane(cin, cout):
    """A bilinear function: interpolation of its grid samples must reproduce it everywhere."""
    return 0.5 + 0.01 * cin + 0.02 * cout + 0.001 * cin * cout


def test_bilinear_is_exact_on_bilinear_functions_inside_and_outside_the_grid():
    cins, couts = np.array([8.0, 32, 64]), np.array([8.0, 16, 48, 64])
    table = plane(cins[:, None], couts[None, :])
    queries = np.array([[8, 8], [20, 30], [64, 64], [33, 47], [70, 60], [4, 10]], float)
    got = bilinear(cins, couts, table, queries[:, 0], queries[:, 1])
    np.testing.assert_allclose(got, plane(queries[:, 0], queries[:, 1]), rtol=1e-12)


def test_bilinear_hand_computed_cell_and_one_point_axes():
    table = np.array([[1.0, 2.0], [3.0, 5.0]])
    # centre of the cell: mean of the corners
    assert bilinear([0, 10], [0, 10], table, 5, 5) == pytest.approx(11 / 4)
    # a fixed input count (e.g. the RGB stem): constant along cin, linear along cout
    assert bilinear([3], [16, 32], [[1.0, 3.0]], 999, 24) == pytest.approx(2.0)
    assert bilinear([3], [64], [[7.0]], [1, 2], [5, 6]).tolist() == [7.0, 7.0]
    # extrapolation below zero is floored
    assert bilinear([8, 16], [8, 16], [[1.0, 1.0], [9.0, 9.0]], 0, 8) == 0.0


def test_channels_round_up_to_the_hardware_block_before_interpolation():
    assert round_channels([1, 16, 17, 40, 100], 16, 16, 96).tolist() == [16, 16, 32, 48, 96]
    assert round_channels([5, 7], 1, 1, 4).tolist() == [5, 7]
    g = np.array([16.0, 32, 64])
    table = LayerTable(g, g, plane(g[:, None], g[None, :]), align=16)
    # 40 channels run as 48: the value of the block top, interpolated between the 32 and 64 grid points
    assert table(40, 33) == pytest.approx(plane(48, 48))
    assert table(64, 64) == pytest.approx(plane(64, 64))


def test_linear_for_depthwise_diagonal():
    assert linear([8, 16, 32], [1.0, 2.0, 4.0], [12, 32, 40]).tolist() == [1.5, 4.0, 5.0]


def test_layer_latency_is_vectorised():
    """10,000 queries in one call cost far less per query than one query per call (a ratio, timed side by side)."""
    grid = np.arange(8, 513, 32, dtype=float)
    model = LatencyModel({"conv": LayerTable(grid, grid, plane(grid[:, None], grid[None, :]))}, {"conv": (512, 512)})
    rng = np.random.default_rng(0)
    cin, cout = rng.integers(1, 513, 10_000), rng.integers(1, 513, 10_000)
    model.layer_latency("conv", cin, cout)  # warm
    start = time.perf_counter()
    got = model.layer_latency("conv", cin, cout)
    vectorised_per_query = (time.perf_counter() - start) / 10_000
    start = time.perf_counter()
    for i in range(200):
        model.layer_latency("conv", cin[i], cout[i])
    one_by_one_per_query = (time.perf_counter() - start) / 200
    np.testing.assert_allclose(got, plane(cin, cout))
    assert vectorised_per_query * 20 < one_by_one_per_query


def test_fit_calibration_exact_cases():
    fit = fit_calibration([1.0, 2.0, 4.0], [3.5, 6.5, 12.5])  # measured = 3 * sum + 0.5
    assert (fit.a, fit.b) == (pytest.approx(3.0), pytest.approx(0.5))
    assert fit.points == ((1.0, 3.5), (2.0, 6.5), (4.0, 12.5))
    one = fit_calibration([4.0], [10.0])
    assert (one.a, one.b) == (2.5, 0.0)
    # a decreasing free fit is meaningless: fall back to the scale through the origin
    falling = fit_calibration([1.0, 2.0], [4.0, 2.0])
    assert (falling.a, falling.b) == (pytest.approx(8 / 5), 0.0)
    with pytest.raises(ValueError):
        fit_calibration([], [])
    assert Calibration.from_dict(fit.to_dict()) == fit


def test_predict_sums_layers_applies_calibration_and_defaults_to_full_width():
    g = np.array([8.0, 16.0])
    tables = {"a": LayerTable(g, g, np.array([[1.0, 2.0], [3.0, 4.0]])),
              "dw": LayerTable(g, g, np.array([0.5, 1.5]), diagonal=True)}
    model = LatencyModel(tables, {"a": (16, 16), "dw": (16, 16)}, Calibration(2.0, 0.25))
    assert model.sum_of_layers({}) == 4.0 + 1.5
    assert model.sum_of_layers({"a": (8, 8), "dw": (12, 12)}) == 1.0 + 1.0
    assert model.predict({"a": (8, 8), "dw": (12, 12)}) == 2.0 * 2.0 + 0.25
    assert model.predict({"a": (8, 16)}) == pytest.approx(sum(model.layer_latency(n, *c) for n, c in
                                                              {"a": (8, 16), "dw": (16, 16)}.items()) + 0.25)
    with pytest.raises(Exception, match="no layer 'fc'"):
        model.predict({"fc": (8, 8)})


def test_mape_and_spearman_exact():
    assert mape([110, 90], [100, 100]) == pytest.approx(10.0)
    assert spearman([10, 30, 20, 20], [1, 4, 2.5, 2.5]) == pytest.approx(1.0)  # ties share their average rank
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(1 - 6 * 2 / (5 * 24))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_predictions_are_never_negative_and_increase():
    """A negative calibration intercept must not make small networks negative (issue: -0.0017 ms predicted)."""
    cal = Calibration(a=1.2, b=-0.62, points=((1.0, 0.6), (3.0, 3.0), (5.0, 5.4)))
    sums = np.linspace(0.0, 6.0, 61)
    values = [cal.apply(s) for s in sums]
    assert cal.apply(0.0) == 0.0 and all(v > 0 for v in values[1:])
    assert all(b >= a for a, b in zip(values, values[1:]))  # increasing
    assert cal.apply(3.0) == pytest.approx(1.2 * 3.0 - 0.62)  # the fitted line where it was fitted
    assert cal.apply(0.5) == pytest.approx(0.5 * (1.2 * 1.0 - 0.62) / 1.0)  # proportional below the smallest point
    assert Calibration(a=2.0, b=0.5).apply(1.0) == 2.5 and Calibration().apply(0.0) == 0.0


def test_keep_counts_stay_in_range_and_span_sizes():
    rng = np.random.default_rng(0)
    sizes = {f"g{i}": s for i, s in enumerate([3, 16, 64, 512, 2048])}
    levels = []
    for _ in range(200):
        level, counts = keep_counts(sizes, rng, 0.3, 1.0)
        levels.append(level)
        for g, n in counts.items():
            assert 1 <= n <= sizes[g]
            if sizes[g] >= 64:
                assert 0.3 - 1 / sizes[g] <= n / sizes[g] <= 1.0
                assert abs(n / sizes[g] - level) <= 0.15 + 1 / sizes[g]
    assert min(levels) < 0.4 and max(levels) > 0.9
    _, counts = keep_counts({"g": 10}, rng, 0.3, 0.3, minimum={"g": 5})
    assert counts == {"g": 5}
    for _ in range(50):  # hardware-friendly: multiples of 16 channels, or the whole group, and still >= 30 %
        _, counts = keep_counts({"a": 64, "b": 24, "c": 10}, rng, 0.3, 1.0, multiple={"a": 16, "b": 16, "c": 16})
        assert counts["a"] in (32, 48, 64) and counts["b"] in (16, 24) and counts["c"] == 10


def test_snap_to_hardware_friendly_counts():
    assert snap(19, 64, 20, 16) == 32
    assert snap(40, 64, 20, 16) == 32  # ties go to the smaller count
    assert snap(44, 64, 20, 16) == 48
    assert snap(5, 24, 8, 16) == 16
    assert snap(3, 10, 3, 16) == 10
    assert snap(7.4, 10, 3, 1) == 7


def test_calibration_formula_reads_as_written():
    from profiler.latency import Calibration

    assert Calibration(0.91071, -0.08849).formula() == "0.9107 x sum_of_layers - 0.0885 ms"
    assert Calibration(1.5, 0.25).formula(2) == "1.50 x sum_of_layers + 0.25 ms"
