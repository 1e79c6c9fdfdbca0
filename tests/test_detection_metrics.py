"""Detection metrics: torchmetrics' COCO evaluation on cases computed by hand."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from iee_deploy.errors import UserError
from iee_deploy.tasks.detection import mean_average_precision


def boxes(rows, labels, scores=None) -> dict[str, torch.Tensor]:
    out = {"boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_one_perfect_detection_scores_one_and_one_miss_zero():
    target = [boxes([[0, 0, 10, 10]], [1])]
    perfect = mean_average_precision([boxes([[0, 0, 10, 10]], [1], [0.9])], target)
    assert (perfect.map_50, perfect.map) == (1.0, 1.0)
    missed = mean_average_precision([boxes([[20, 20, 30, 30]], [1], [0.9])], target)  # no overlap
    assert (missed.map_50, missed.map) == (0.0, 0.0)
    wrong_class = mean_average_precision([boxes([[0, 0, 10, 10]], [2], [0.9])], target)
    assert wrong_class.map_50 == 0.0  # class 1 found nothing, class 2 only a false positive


def test_two_detections_by_score_on_coco_101_recalls():
    """Two objects; detections by score: hit, a second box on the first object (false), hit.
    Recall 1/2 at precision 1, recall 1 at precision 2/3: COCO's 101 recalls give (51 * 1 + 50 * 2/3) / 101."""
    target = [boxes([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    pred = [boxes([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], [1, 1, 1], [0.9, 0.8, 0.7])]
    assert mean_average_precision(pred, target).map_50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)
    # IoU exactly 0.7 (0..10 against 0..7 in y): a hit at the thresholds 0.50 .. 0.70, 5 of COCO's 10
    shifted = mean_average_precision([boxes([[0, 0, 10, 7]], [1], [0.9])], [boxes([[0, 0, 10, 10]], [1])])
    assert (shifted.map_50, shifted.map) == (1.0, pytest.approx(0.5))


def test_no_ground_truth_has_no_map_and_mismatched_inputs_are_refused():
    empty = mean_average_precision([boxes([], [], [])], [boxes([], [])])
    assert math.isnan(empty.map_50) and math.isnan(empty.map)
    with pytest.raises(UserError, match=r"^0 `predictions` for 1 `targets`; pass one prediction dict per target"):
        mean_average_precision([], [boxes([], [])])


TARGET = [boxes([[0, 0, 10, 10]], [1])]
HIT = boxes([[0, 0, 10, 10]], [1], [0.9])


@pytest.mark.parametrize(("predictions", "targets", "message"), [
    (torch.zeros(1, 4), TARGET, r"^`predictions` is a Tensor, not a list of per-image dicts; pass one dict per image"),
    (HIT, TARGET, r"^`predictions` is a dict, not a list"),
    ([HIT], [torch.zeros(1, 4)], r"^`targets`\[0\] is a Tensor, not a dict"),
    ([boxes([[0, 0, 10, 10]], [1])], TARGET, r"^`predictions`\[0\] has no 'scores'"),
    ([{**HIT, "boxes": [[0, 0, 10, 10]]}], TARGET, r"^`predictions`\[0\]\['boxes'\] is a list, not a tensor"),
    ([HIT], [{**TARGET[0], "boxes": torch.zeros(1, 5)}], r"`targets`\[0\]\['boxes'\] is torch.float32 of shape \(1, 5\), "
     r"not float \(n, 4\)"),
    ([HIT], [{**TARGET[0], "labels": torch.ones(1)}], r"`targets`\[0\]\['labels'\] is torch.float32 .* not integer"),
    ([{**HIT, "labels": torch.tensor([1, 2])}], TARGET, r"`predictions`\[0\] has 1 boxes, 1 scores, 2 labels; pass "
     r"one score and one label per box$"),
    ([boxes([[0, 0, math.nan, 10]], [1], [0.9])], TARGET, r"`predictions`\[0\]\['boxes'\] holds NaN or inf"),
    ([boxes([[0, 0, 10, 10]], [1], [math.inf])], TARGET, r"`predictions`\[0\]\['scores'\] holds NaN or inf"),
    ([HIT, HIT], [*TARGET, boxes([[0, 0, 10, 10], [5, 5, 3, 4]], [1, 1])],  # x, y, w, h read as x1, y1, x2, y2
     r"`targets`\[1\]\['boxes'\]\[1\] \[5.0, 5.0, 3.0, 4.0\] ends before it starts .*box_convert"),
], ids=["tensor", "one-dict", "target-tensor", "no-scores", "list-boxes", "boxes-shape", "float-labels", "lengths",
        "nan-box", "inf-score", "reversed-box"])
def test_malformed_detections_are_refused_naming_the_argument_and_image(predictions, targets, message):
    """Unchecked, these raised KeyError or IndexError inside torchmetrics, or scored silently wrong: a NaN box
    scored mAP 1.0, a reversed box 0."""
    with pytest.raises(UserError, match=message):
        mean_average_precision(predictions, targets)


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"\(pycocotools is not installed\); pip install 'iee-deploy\[detection\]'"):
        mean_average_precision([], [])
