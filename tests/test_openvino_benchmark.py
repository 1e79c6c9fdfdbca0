"""benchmarks/openvino.py: the verdict's wording from the ratios, and one model timed in both runtimes for real."""

import numpy as np
import pytest

from benchmarks.openvino import Case, time_case, verdict


def row(model: str, ratio: float) -> dict:
    return {"model": model, "resolution": 32, "precision": "fp32", "onnxruntime_ms": ratio, "openvino_ms": 1.0,
            "ort_over_openvino": ratio}


def test_verdict_splits_faster_tied_and_slower():
    text = verdict([row("a", 1.10), row("b", 1.01), row("c", 0.5), row("d", 0.8)])
    assert text == ("OpenVINO is faster on 1 of 4, by 10% (a 32 px fp32); ties (within 2%) on 1 (b 32 px fp32); "
                    "is slower on 2, by 25-100% (c 32 px fp32, d 32 px fp32).")


def test_verdict_when_every_row_ties():
    assert verdict([row("a", 0.99)]) == "ties (within 2%) on 1 (a 32 px fp32)."


def test_one_model_in_both_runtimes(tmp_path):
    pytest.importorskip("openvino")
    rows = time_case(Case("resnet20", 10, 8), tmp_path, 0.05)
    assert [r["precision"] for r in rows] == ["fp32", "int8"]
    for r in rows:
        assert r["onnxruntime_ms"] > 0 and r["openvino_ms"] > 0
        assert np.isclose(r["ort_over_openvino"], r["onnxruntime_ms"] / r["openvino_ms"])
