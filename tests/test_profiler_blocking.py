"""The runtime's channel blocking: the pure rule on exact latency curves, and one real ONNX Runtime measurement."""

import pytest

from iee_deploy.models import build_model
from profiler.blocking import (
    Blocking,
    blocking_from_latencies,
    measure_blocking,
    powers_of_two,
    round_channels,
    step_counts,
)
from profiler.layers import enumerate_layers, plan_rows, unique_signatures
from profiler.measurer import make_measurer, settings_for
from profiler.targets import load_target


def stair(block: int, unblocked_below: bool, top: int = 64) -> dict[int, float]:
    """Latency of a conv (work c^2) whose multiples of `block` run blocked and the other counts on a slower path
    (1.5 c^2); below one block linear in the channels when `unblocked_below`, else as slow as one block."""
    def ms(c: int) -> float:
        if c < block:
            return float(c * block if unblocked_below else block ** 2)
        return float(c * c if c % block == 0 else 1.5 * c * c)
    return {c: ms(c) for c in range(1, top + 1)}


def test_blocking_from_exact_curves():
    assert blocking_from_latencies(stair(16, unblocked_below=True)) == Blocking(8, 16)  # ONNX Runtime on AVX-512
    assert blocking_from_latencies(stair(16, unblocked_below=False)) == Blocking(16, 16)  # a pure stair: no half block
    assert blocking_from_latencies(stair(8, unblocked_below=True)) == Blocking(4, 8)  # AVX2's 8-channel block
    assert blocking_from_latencies({c: float(c * c) for c in range(1, 65)}) == Blocking(1, 1)  # no blocking
    noisy = stair(16, unblocked_below=True)
    noisy[20], noisy[36] = 2 * noisy[21], 2 * noisy[37]  # stray slow counts make stray steps at 21 and 37
    assert step_counts(noisy) == [21, 32, 37, 48, 64] and blocking_from_latencies(noisy) == Blocking(8, 16)


def test_round_channels_and_powers():
    assert round_channels([1, 8, 9, 16, 17, 24, 40, 64], 8, 16, 64).tolist() == [8, 8, 16, 16, 32, 32, 48, 64]
    assert round_channels([3, 70], 8, 16, 66).tolist() == [8, 66]  # never above the layer's width
    assert round_channels([5, 17], 1, 1, 99).tolist() == [5, 17]
    assert powers_of_two(32) == [2, 4, 8, 16, 32] and powers_of_two(1) == []
    with pytest.raises(ValueError, match="divide"):
        Blocking(16, 24)


def test_grid_of_a_half_block_reaches_below_one_block():
    # resnet20's 16-channel stage: on an 8-aligned grid its layers are measured at 8 channels too
    sigs = unique_signatures(enumerate_layers(build_model("resnet20", 10, 32), (1, 3, 32, 32)))
    rows = plan_rows(sigs.values(), 16, 8, 8)
    assert {c for _, c, _ in rows if c != 3} == {8, 16, 32, 48, 64}


def test_measured_blocking_on_this_cpu():
    """A real measurement (small: 24 one-layer sessions): the blocks found divide 16 or show no blocking."""
    measurer = make_measurer("onnxruntime", settings_for(load_target("cpu"), warmup=2, repeats=5))
    blocking, latency = measure_blocking(measurer, channels=24)
    assert sorted(latency) == list(range(1, 25)) and all(ms > 0 for ms in latency.values())
    assert blocking == blocking_from_latencies(latency) and 16 % blocking.block == 0


def test_measuring_the_blocking_prints_progress_without_a_terminal(capsys):
    """At a large batch the blocking probe takes minutes: it reports like every other long loop."""
    from types import SimpleNamespace

    class CountingMeasurer:
        def time_layer(self, sig, cin, cout, batch):  # type: ignore[no-untyped-def]
            return SimpleNamespace(min_ms=float(cin))

    measure_blocking(CountingMeasurer(), channels=4, progress=True)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "profile: measure the channel blocking: 1/4 count" in err and "4/4 count (100%)" in err
