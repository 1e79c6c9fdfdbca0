"""The measured budget: Psi re-aimed until the pruned network, timed on this machine, meets the budget.

The re-aiming loop is checked exactly with a known latency function; the channel space and a
training run then time real networks with ONNX Runtime here (on a LUT naming this machine's CPU).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_user_error, run_cli
from synthetic_lut import write_synthetic_lut

from iee_deploy.errors import ConfigError, UserError
from iee_deploy.methods import SparsityConfig, build_method
from iee_deploy.models import build_model
from iee_deploy.structured.budget import open_latency_model
from iee_deploy.structured.measured import LEAST_PASSES, MEASURED_TRIES, MeasuredBudget, settle
from iee_deploy.structured.space import ChannelSpace, Start
from profiler.flops_table import flops_table
from profiler.latency import Calibration
from profiler.measurer import choose_measurer, settings_for
from profiler.targets import load_target
from runtime.machine import cpu_name
from solvers.aim import within

SMALL = ("--model", "resnet20", "--resolution", "8", "--subset", "160", "--batch-size", "16", "--no-progress")


def units(aim_ms: float) -> dict[str, int]:
    """A knapsack stand-in: the aim (ms, dense 1.0) in thousandths as one group's units."""
    return {"g": round(aim_ms * 1000)}


def test_settle_re_aims_a_steeper_than_predicted_latency_into_the_tolerance():
    timed: list[int] = []

    def timer(counts):  # the engine measures (aim)^1.5 of dense: the prediction is too slow for small networks
        timed.append(counts["g"])
        return 2.0, 2.0 * (counts["g"] / 1000) ** 1.5

    settled = settle(timer, units, psi=0.5, dense_ms=1.0, smallest_ms=0.1, tolerance=0.02)
    assert settled.target == 0.5 and settled.within
    assert settled.tries[0].aim == 0.5 and settled.ratio(settled.tries[0]) == pytest.approx(0.5 ** 1.5)
    assert settled.tries[1].aim == pytest.approx(0.5 * 0.5 / 0.5 ** 1.5)  # no bracket yet: the proportional step
    assert len(settled.tries) == len(timed) <= MEASURED_TRIES
    assert within(settled.ratio(settled.tries[-1]), 0.5, 0.02) and settled.aim_ms == settled.tries[-1].aim_ms
    assert settled.counts == units(settled.aim_ms)
    assert abs(settled.measured / 0.5 - 1) <= 0.02


def test_settle_keeps_a_first_aim_that_measures_within():
    settled = settle(lambda c: (1.0, c["g"] / 1000 * 1.01), units, psi=0.4, dense_ms=1.0, smallest_ms=0.1, tolerance=0.02)
    assert len(settled.tries) == 1 and settled.aim_ms == 0.4 and settled.within


def test_settle_stops_at_the_smallest_network_and_keeps_the_nearest():
    # the engine never gets below 0.45 of dense: the aims hit the floor, nothing is within, the nearest is kept
    settled = settle(lambda c: (1.0, max(0.45, c["g"] / 1000)), units, psi=0.3, dense_ms=1.0, smallest_ms=0.2,
                     tolerance=0.02)
    assert not settled.within and settled.measured == 0.45
    assert min(t.aim for t in settled.tries) == pytest.approx(0.2) and len(settled.tries) < MEASURED_TRIES


def test_settle_takes_every_ratio_over_the_dense_network_s_lowest_reading():
    # the first try is timed in a disturbed moment: the dense network reads 1.3 ms, not 1.0 (the pruned one holds),
    # so 0.55 reads as 0.423 and is re-aimed larger; the second try's quiet dense reading corrects the first
    readings = iter([(1.3, 0.55), (1.0, 0.60), (1.0, 0.50)])

    def timer(counts):
        return next(readings)

    settled = settle(timer, units, psi=0.5, dense_ms=1.0, smallest_ms=0.1, tolerance=0.02)
    assert settled.dense_ms == 1.0 and [settled.ratio(t) for t in settled.tries] == [0.55, 0.60, 0.50]
    assert settled.tries[1].aim == pytest.approx(0.5 * 0.5 / (0.55 / 1.3))  # re-aimed on the reading it then had
    assert settled.within and settled.measured == 0.50 and settled.kept == 2
    summary = settled.summary()
    assert summary["dense_ms"] == 1.0 and [t["measured_ratio"] for t in summary["tries"]] == [0.55, 0.60, 0.50]
    assert summary["tries"][0]["dense_ms"] == 1.3  # each try keeps the dense reading of its own passes


def test_the_lut_s_own_timing_of_the_dense_network_is_one_of_its_readings():
    # the machine is loaded for the whole try: the dense network reads 2.05 ms, so 1.018 reads as 0.497 (within);
    # the LUT's calibration timed it at 1.919 on this device, so the structure is 0.530 of dense and is re-aimed
    readings = iter([(2.05, 1.018), (2.06, 0.96)])
    settled = settle(lambda counts: next(readings), units, psi=0.5, dense_ms=1.0, smallest_ms=0.1, tolerance=0.02,
                     table_dense_ms=1.919)
    assert len(settled.tries) == 2 and settled.dense_ms == 1.919 and settled.kept == 1
    assert settled.tries[1].aim == pytest.approx(0.5 * 0.5 / (1.018 / 1.919))
    assert settled.within and settled.measured == pytest.approx(0.96 / 1.919)
    assert settled.summary()["table_dense_ms"] == 1.919
    quiet = settle(lambda counts: (1.90, 0.95), units, psi=0.5, dense_ms=1.0, smallest_ms=0.1, tolerance=0.02,
                   table_dense_ms=1.919)
    assert quiet.dense_ms == 1.90 and len(quiet.tries) == 1  # a quieter reading now is lower than the table's


class ScriptedMeasurer:
    """Returns (dense, candidate) readings pass by pass, as `Measurer.time_models` would."""

    def __init__(self, readings):
        self.readings = iter(readings)

    def time_models(self, models, input_shape):
        from runtime.timing import Timing

        return [Timing.from_samples([ms]) for ms in next(self.readings)]


def test_a_structure_counts_at_each_network_s_lowest_reading_over_its_passes():
    measured = MeasuredBudget(ScriptedMeasurer([(2.4, 1.15), (1.9, 1.12), (3.0, 1.06), (9.0, 9.0)]), "min",
                              (1, 3, 8, 8), 0.02, 0.0)
    assert measured.time(torch.nn.Identity(), torch.nn.Identity()) == (1.9, 1.06)  # LEAST_PASSES passes, no more
    assert LEAST_PASSES == 3


@pytest.fixture
def here_lut(tmp_path):
    """A LUT of resnet20 at 8 px naming this machine's CPU and libraries, so a measured budget may time networks here;
    its calibration says it timed the dense network at 1000 ms (never the lowest reading here)."""
    target = load_target("cpu")
    versions = choose_measurer(target, settings_for(target, precision="fp32")).versions()
    return write_synthetic_lut(tmp_path / "here.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8,
                               device=cpu_name(), versions=versions,
                               calibration=Calibration(1.0, 0.05, ((1.0, 1000.0), (0.5, 500.0))))


def importance_of(model: torch.nn.Module, space: ChannelSpace) -> None:
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    space.accumulate_importance()


def test_a_descent_s_last_prune_is_timed_here_and_keeps_its_best_structure(here_lut, one_thread):
    model = build_model("resnet20", 10, 8).train()
    source = open_latency_model(str(here_lut), "cpu", model)
    space = ChannelSpace(model, source, latency_ratio=0.6, start=Start.DENSE,
                         measured=MeasuredBudget.on_target(source, 0.02, 0.0))
    asked = space.psi
    importance_of(model, space)
    space.prune_to_psi(step=10, t=0)
    record = space.measured_record
    assert record is not None and model.training  # timing copies the network in eval mode; the model keeps training
    assert 1 <= len(record["tries"]) <= MEASURED_TRIES and record["target_ratio"] == pytest.approx(0.6)
    assert all(t["dense_ms"] > 0 and t["network_ms"] > 0 for t in record["tries"])
    kept = min(record["tries"], key=lambda t: (not within(t["measured_ratio"], 0.6, 0.02), abs(t["measured_ratio"] - 0.6)))
    assert space.psi == kept["aim_ms"] == record["aim_ms"] and space.asked_psi == asked
    assert space.predicted_ms() <= space.psi + 1e-9  # the applied structure is the kept aim's knapsack solution
    assert record["within"] == within(record["measured_ratio"], 0.6, 0.02)
    summary = space.summary()["latency"]
    assert summary["measured_budget"] == record and summary["budget_ms"] == asked and summary["aim_ms"] == space.psi
    assert space.run_facts()["budget_ms"] == asked  # what validate checks the engine against: the budget as given
    # once settled, a later prune to Psi is the plain knapsack at the kept aim, and a checkpoint keeps both
    again = ChannelSpace(build_model("resnet20", 10, 8), source, latency_ratio=0.6, start=Start.DENSE)
    again.load_state_dict(space.state_dict())
    assert again.psi == space.psi and again.measured_record == record


def test_a_random_start_is_settled_before_training(here_lut, one_thread):
    model = build_model("resnet20", 10, 8)
    source = open_latency_model(str(here_lut), "cpu", model)
    space = ChannelSpace(model, source, latency_ratio=0.5, start=Start.SCRATCH,
                         measured=MeasuredBudget.on_target(source, 0.02, 0.0))
    assert space.measured_record is not None and space.psi == space.measured_record["aim_ms"]
    assert space.initial_ms <= space.psi + 1e-9


def test_train_under_a_measured_budget_records_it(here_lut, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *SMALL, "--method", "halp", "--target", "cpu", "--lut", str(here_lut), "--latency-ratio",
                     "0.6", "--measure-budget", "--measure-seconds", "0.5", "--epochs", "1", "--update-end", "0.5",
                     "--delta-t", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    latency = json.loads((out / "summary.json").read_text())["latency"]
    measured = latency["measured_budget"]
    assert measured["target_ratio"] == pytest.approx(0.6) and latency["aim_ms"] == measured["aim_ms"]
    table = Calibration.from_dict(json.loads(here_lut.with_suffix(".json").read_text())["calibration"]).dense_ms
    assert measured["table_dense_ms"] == table is not None
    assert measured["dense_ms"] == min([t["dense_ms"] for t in measured["tries"]] + [table])
    assert latency["budget_ms"] == pytest.approx(0.6 * latency["dense_ms"])  # the budget as given, not the aim
    assert json.loads((out / "run.json").read_text())["budget_ms"] == latency["budget_ms"]
    assert "measured" in result.stdout and "structures timed" in result.stdout
    assert "## Measured budget" in (out / "summary.md").read_text()


def test_a_measured_budget_refuses_what_it_cannot_time(tmp_path, here_lut):
    elsewhere = write_synthetic_lut(tmp_path / "elsewhere.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8)
    result = run_cli("train", *SMALL, "--method", "halp", "--target", "cpu", "--lut", str(elsewhere), "--latency-ratio",
                     "0.6", "--measure-budget", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_user_error(result, "was measured on synthetic", "--measure-budget off")
    result = run_cli("train", *SMALL, "--measure-budget", "--out", str(tmp_path / "run2"))
    assert_user_error(result, "--measure-budget needs a latency budget")
    with pytest.raises(ConfigError, match="measure_budget"):
        SparsityConfig(latency_ratio=0.5, lut=str(here_lut), budget_tolerance=0.05)
    with pytest.raises(ConfigError, match="`measure_seconds` is the measured budget's"):
        SparsityConfig(latency_ratio=0.5, lut=str(here_lut), measure_seconds=5.0)
    with pytest.raises(ConfigError, match="measure_seconds"):
        SparsityConfig(latency_ratio=0.5, lut=str(here_lut), measure_budget=True, measure_seconds=-1.0)
    with pytest.raises(UserError, match="does not use `measure_budget`"):
        build_method(SparsityConfig(method="rigl", measure_budget=True), build_model("resnet20", 10, 8))
    source = open_latency_model(str(here_lut), "cpu", build_model("resnet20", 10, 8))
    with pytest.raises(UserError, match="one process"):
        MeasuredBudget.on_target(source, 0.02, 0.0, processes=2)


def test_a_flops_table_is_timed_on_this_machine_with_the_target_s_settings(tmp_path):
    elsewhere = write_synthetic_lut(tmp_path / "elsewhere.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8)
    table = flops_table(elsewhere, tmp_path / "flops.csv")  # derived from a LUT of another device: measured nowhere
    measured = MeasuredBudget.on_target(open_latency_model(str(table), "cpu", build_model("resnet20", 10, 8)), 0.02, 0.0)
    target = load_target("cpu")
    assert measured.measurer.settings.network_repeats == target.timing.network_repeats
    assert measured.measurer.settings.warmup == target.timing.warmup
    assert measured.table_dense_ms is None  # a FLOPs table timed no network
