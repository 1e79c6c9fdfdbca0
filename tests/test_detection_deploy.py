"""A detector deployed: its fixed-size pipeline (pre-processing, packed network, post-processing) equals the
detector's own forward, detections are matched exactly, and a trained detection run goes through build-engine
(the post-processing a timed stage of its own), validate (box parity, mAP, latency) and report (mAP)."""

from __future__ import annotations

import json

import detectors
import pytest
import torch
from click.testing import CliRunner
from synthetic_lut import write_synthetic_lut

from iee_deploy.cli import main
from iee_deploy.data.scenes import NUM_CLASSES
from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.models.detection import detector_pipeline, network_of
from iee_deploy.models.detectors import ssdlite
from iee_deploy.tasks.detection import AGREEMENT_LIMIT, BOX_TOLERANCES, DetectionTask, matched_detections

SIZE = 64


def scoring(model: torch.nn.Module) -> torch.nn.Module:
    model.score_thresh = 0.0  # every candidate box: the random-init heads score about 0.01
    return model.eval()


@pytest.mark.parametrize("factory", [lambda: detectors.retinanet_tiny(5), lambda: detectors.fcos_tiny(5),
                                     lambda: ssdlite(5, SIZE)], ids=["retinanet", "fcos", "ssdlite"])
def test_the_pipeline_computes_the_detectors_own_forward(factory):
    torch.manual_seed(0)
    model = scoring(factory())
    pipeline = detector_pipeline(model, SIZE)
    images = [torch.rand(3, SIZE, SIZE) for _ in range(2)]
    with torch.no_grad():
        expected = model(images)
        x, sizes, original = pipeline.preprocess(images)
        packed = pipeline.network(x)
        got = pipeline.postprocess(packed, sizes, original)
    assert x.shape == (2, 3, SIZE, SIZE) and packed.dim() == 2 and packed.shape[0] == 2
    for want, have in zip(expected, got):
        assert len(want["boxes"]) > 0 and want.keys() == have.keys()
        assert all(torch.equal(want[key], have[key]) for key in want)


def test_the_pipeline_pads_to_the_engine_size_and_maps_boxes_back():
    model = scoring(detectors.retinanet_tiny(5))
    pipeline = detector_pipeline(model, SIZE)
    x, sizes, original = pipeline.preprocess([torch.rand(3, 40, 64), torch.rand(3, 64, 30)])
    assert x.shape == (2, 3, SIZE, SIZE) and sizes == [(40, 64), (64, 30)] and original == sizes
    assert float(x[0, :, 40:].abs().sum()) == 0.0 and float(x[1, :, :, 30:].abs().sum()) == 0.0  # padded with zeros
    with torch.no_grad():
        detections = pipeline.postprocess(pipeline.network(x), sizes, original)
    boxes = detections[1]["boxes"]
    assert len(boxes) and float(boxes[:, 2].max()) <= 30 and float(boxes[:, 3].max()) <= 64  # clipped to the image


def test_two_stage_detectors_and_classifiers_are_not_deployed_as_detectors():
    with pytest.raises(UserError, match="FasterRCNN is a two-stage detector: engines are built for one-stage"):
        DetectionTask().deployment(detectors.fasterrcnn_tiny(5), SIZE)
    with pytest.raises(UserError, match="Sequential is not a detector"):
        DetectionTask().deployment(detectors.unpadded(5), SIZE)


def _dets(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_detections_match_by_label_iou_and_score():
    tol = BOX_TOLERANCES["fp32"]
    reference = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.9, 0.8, 0.1], [1, 2, 1])
    # the lowest-scoring reference box sits at the cutoff: it is not compared
    assert matched_detections(reference, reference, tol) == (2, 2)
    moved = _dets([[0, 0, 10, 10], [20, 20, 40, 41]], [0.9, 0.8], [1, 2])  # IoU 20*20 / (20*21) = 0.952
    assert matched_detections(moved, reference, tol) == (1, 2)
    relabelled = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 3])
    assert matched_detections(relabelled, reference, tol) == (1, 2)
    rescored = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8 + 2e-3], [1, 2])
    assert matched_detections(rescored, reference, tol) == (1, 2)
    within = _dets([[0, 0, 10, 10.05], [20, 20, 40, 40]], [0.9005, 0.8], [1, 2])  # IoU 0.995, score 5e-4 off
    assert matched_detections(within, reference, tol) == (2, 2)
    twins = _dets([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 1, 1]], [0.9, 0.9, 0.1], [1, 1, 1])
    one = _dets([[0, 0, 10, 10]], [0.9], [1])
    assert matched_detections(one, twins, tol) == (1, 2)  # one detection reproduces one reference detection
    nothing = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert matched_detections(nothing, reference, tol) == (0, 2) and matched_detections(reference, nothing, tol) == (0, 0)


@pytest.fixture(scope="module", params=["detectors:retinanet_tiny_scoring", "detectors:ssdlite_scoring", "detectors:yolo_tiny"],
                ids=["retinanet", "ssdlite", "yolo-style"])
def detection_engine(request, tmp_path_factory):
    """A detector trained under a latency budget with HALP (tiny), then built: (run folder, engine folder).
    A torchvision RetinaNet and SSDlite, and a YOLO-style detector of the user's own (`detectors.TinyYolo`)."""
    tmp = tmp_path_factory.mktemp("detection-deploy")
    torch.manual_seed(0)
    model = request.param
    lut = write_synthetic_lut(tmp / "lut.csv", model, network_of(build_model(model, NUM_CLASSES, SIZE)), NUM_CLASSES,
                              SIZE)
    run, engine = tmp / "run", tmp / "engine"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--task", "detection", "--model", model, "--resolution", str(SIZE),
                                  "--subset", "8", "--val-subset", "4", "--batch-size", "4", "--lr", "0.01",
                                  "--epochs", "2", "--method", "halp", "--latency-ratio", "0.6", "--lut", str(lut),
                                  "--delta-t", "1", "--update-end", "0.75", "--no-progress", "--out", str(run)],
                           prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["build-engine", "--run", str(run), "--out", str(engine), "--warmup-s", "0.05",
                                  "--min-iters", "5", "--min-seconds", "0.2"], prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    return run, engine


def test_build_engine_times_the_detectors_post_processing_as_its_own_stage(detection_engine):
    _, engine = detection_engine
    report = json.loads((engine / "engine.json").read_text())
    assert report["task"] == "detection" and report["pruned"]["params"] < report["dense"]["params"]
    post = report["postprocess"]
    assert post is not None and post["iterations"] >= 5 and post["min_ms"] > 0
    text = (engine / "engine.md").read_text()
    assert "post-processing (decoding, NMS; host)" in text and "end to end" in text


def test_validate_checks_boxes_map_and_latency_of_a_detector_engine(detection_engine):
    _, engine = detection_engine
    result = CliRunner().invoke(main, ["validate", "--engine", str(engine), "--latency-ms", "1000",
                                       "--budget-stage", "end-to-end", "--warmup-s", "0.05", "--min-iters", "5",
                                       "--min-seconds", "0.2"], prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    data = json.loads((engine / "validation.json").read_text())
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status == {"engine-vs-pytorch": "pass", "predictions-agree": "pass", "pruned-vs-masked": "pass",
                      "accuracy": "pass", "latency-budget": "pass", "latency-vs-lut": "info"}, data["checks"]
    assert data["score_label"] == "mAP@0.5" and data["budget_stage"] == "end-to-end" and data["postprocess_ms"] > 0
    compared = data["errors"]["engine_vs_pruned"]
    # dozens of detections or more, each reproduced but for a few ties that rounding breaks the other way in NMS
    assert compared["agreement"] >= 100.0 - AGREEMENT_LIMIT and compared["compared"] >= 50
    assert data["scores"]["engine"] == pytest.approx(data["scores"]["pruned"], abs=1e-6)
    budget = next(c for c in data["checks"] if c["name"] == "latency-budget")
    assert budget["measured"] == pytest.approx(data["latency_ms"] + data["postprocess_ms"])
    assert "plus post-processing" in budget["detail"]


def test_report_plots_a_detectors_map(detection_engine, tmp_path):
    run, engine = detection_engine
    result = CliRunner().invoke(main, ["report", str(run), str(engine), "--out", str(tmp_path / "report")],
                                prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    validation = json.loads((engine / "validation.json").read_text()) if (engine / "validation.json").is_file() else None
    point = data["engines"][0]
    assert point["score_label"] == "mAP@0.5" and data["runs"][0]["score_label"] == "mAP@0.5"
    summary = json.loads((run / "summary.json").read_text())
    assert data["runs"][0]["summary_score"] == pytest.approx(100 * summary["val_map_50"])
    assert point["score"] is not None and (validation is None or point["score"] == validation["scores"]["engine"])
