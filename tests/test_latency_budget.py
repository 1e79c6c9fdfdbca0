"""Latency budgets: never-negative predictions, and budgets below the smallest network refused before training."""

from __future__ import annotations

import pytest
from conftest import assert_user_error, run_cli
from synthetic_lut import write_synthetic_lut

from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.structured.budget import resolve_budget
from profiler.latency import Calibration, LatencyModel

SMALL = ("--model", "resnet20", "--resolution", "8", "--subset", "160", "--batch-size", "16", "--no-progress")
NEGATIVE_INTERCEPT = Calibration(a=1.0, b=-0.62, points=((1.0, 0.4), (2.77, 2.15)))  # as a real CPU fit can be


def test_resolve_budget_names_fields_and_refuses_the_impossible():
    assert resolve_budget(None, 0.5, 4.0, 1.0) == 2.0
    assert resolve_budget(1.5, None, 4.0, 1.0) == 1.5
    for args, words in (((None, None), "exactly one latency budget"), ((1.0, 0.5), "exactly one latency budget"),
                        ((None, 1.5), r"`latency_ratio` 1.5 is not a fraction"),
                        ((-1.0, None), r"`latency_ms` -1 is not a positive finite number"),
                        ((float("nan"), None), "is not a positive finite number"),
                        ((0.5, None), "below the smallest achievable network's latency 1 ms"),
                        ((None, 0.2), "below the smallest achievable")):
        with pytest.raises(UserError, match=words) as err:
            resolve_budget(*args, 4.0, 1.0)
        assert "--" not in str(err.value)  # the library names fields; the CLI names flags
    with pytest.raises(UserError, match="below the smallest"):
        resolve_budget(1e-4, None, 4.0, 0.0)  # a smallest latency of 0 is not a network


def test_a_negative_intercept_lut_predicts_no_negative_network(tmp_path):
    model = build_model("resnet20", 10, 8)
    lut = write_synthetic_lut(tmp_path / "neg.csv", "resnet20", model, 10, 8, calibration=NEGATIVE_INTERCEPT)
    latency = LatencyModel.load(lut)
    tiny = {name: (4 if i else 3, 4) for i, name in enumerate(latency.layers)}
    assert NEGATIVE_INTERCEPT.a * latency.sum_of_layers(tiny) + NEGATIVE_INTERCEPT.b < 0  # the raw line goes negative
    assert 0 < latency.predict(tiny) < latency.predict({})


def test_train_with_a_budget_below_the_smallest_network_fails_before_training(tmp_path):
    model = build_model("resnet20", 10, 8)
    lut = write_synthetic_lut(tmp_path / "neg.csv", "resnet20", model, 10, 8, calibration=NEGATIVE_INTERCEPT)
    out = tmp_path / "run"
    result = run_cli("train", *SMALL, "--target", "cpu", "--lut", str(lut), "--latency-ms", "0.0001", "--out", str(out))
    assert_user_error(result, "below the smallest achievable network's latency")
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()  # nothing trained


def test_a_calibration_names_the_dense_model_s_measured_latency():
    assert NEGATIVE_INTERCEPT.dense_ms == 0.4  # `calibrate` times the dense model first
    assert Calibration(1.0, 0.0).dense_ms is None and Calibration.from_dict(None).dense_ms is None
