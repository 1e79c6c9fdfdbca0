"""Detection metrics: AP and mAP on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iee_deploy.tasks.detection import (
    COCO_THRESHOLDS,
    Detections,
    average_precision,
    box_iou,
    class_average_precision,
    mean_average_precision,
)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [2, 2, 2, 8]])
    assert box_iou(a, b).tolist() == [[1.0, 50 / 150, 0.0, 0.0]]  # identical, half, touching corner, no area


def test_all_point_and_101_point_average_precision():
    """Two objects; detections by score: hit, miss, hit. Recall 0.5, 0.5, 1; precision 1, 1/2, 2/3."""
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert average_precision(recall, precision) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(recall, precision, points=101) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert average_precision(np.array([0.5]), np.array([1.0])) == 0.5  # half the objects found, at precision 1
    assert average_precision(np.array([0.5]), np.array([1.0]), points=101) == pytest.approx(51 / 101)
    assert average_precision(np.array([]), np.array([])) == 0.0


def test_class_ap_matches_greedily_by_score_and_counts_a_second_detection_as_false():
    target = [Detections.of([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    pred = [Detections.of([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 31]], [1, 1, 1], [0.9, 0.8, 0.7])]
    # hit (IoU 1), the same object again (a false positive), hit (IoU 100/110)
    assert class_average_precision(pred, target, 1, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert class_average_precision(pred, target, 1, 0.95) == pytest.approx(0.5)  # 100/110 < 0.95: one hit in three
    assert class_average_precision(pred, target, 2, 0.5) is None  # no ground truth of class 2


def test_map_over_classes_images_and_coco_thresholds():
    targets = [Detections.of([[0, 0, 10, 10]], [1]), Detections.of([[0, 0, 10, 10]], [2])]
    perfect = [Detections.of([[0, 0, 10, 10]], [1], [0.9]), Detections.of([[0, 0, 10, 10]], [2], [0.8])]
    assert mean_average_precision(perfect, targets)["map"] == 1.0
    # a class-3 detection where no class 3 exists: a class without ground truth takes no part
    extra = [Detections.of([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 3], [0.9, 0.99]), perfect[1]]
    result = mean_average_precision(extra, targets)
    assert result["map"] == 1.0 and set(result["per_class"]) == {1, 2}
    # IoU exactly 0.7 (box 0..10 against 0..7 in y): a hit at 0.50..0.70 (5 of the 10 COCO thresholds)
    shifted = [Detections.of([[0, 0, 10, 7]], [1], [0.9]), perfect[1]]
    coco = mean_average_precision(shifted, targets, COCO_THRESHOLDS)
    assert coco["per_class"][1] == pytest.approx(0.5) and coco["per_class"][2] == 1.0 and coco["map"] == pytest.approx(0.75)
    assert math.isnan(mean_average_precision([Detections.of([], [], [])], [Detections.of([], [])])["map"])


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="differ"):
        Detections.of([[0, 0, 1, 1]], [1, 2])
    with pytest.raises(ValueError, match="predictions for"):
        mean_average_precision([], [Detections.of([], [])])
