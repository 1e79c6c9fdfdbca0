"""Detection metrics: average precision per class and its mean (mAP), as Pascal VOC and COCO define them.

Pure functions on numpy arrays (boxes as x1, y1, x2, y2 in pixels), so that the numbers a detector's
validation reports are exact and testable by hand:

- detections of one class are taken in falling score order, over all images; each is a true positive
  when it overlaps an unmatched ground-truth box of its class and image by at least the IoU threshold
  (the best such box), else a false positive (a second detection of one object is a false positive);
- AP is the area under the precision-recall curve with precision made monotone (every point takes the
  best precision at its recall or beyond): "all-point" AP, VOC 2010 onwards. COCO samples that curve
  at 101 recalls instead (`points=101`);
- mAP averages AP over the classes that have ground truth; COCO's mAP@[.5:.95] averages it over the IoU
  thresholds 0.50, 0.55, ..., 0.95 as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class Detections:
    """One image's boxes (n, 4), their classes (n,) and, for predictions, scores (n,)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    @staticmethod
    def of(boxes: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[int] | np.ndarray,
           scores: Sequence[float] | np.ndarray | None = None) -> Detections:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        s = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(lab) != len(b) or (s is not None and len(s) != len(b)):
            raise ValueError(f"{len(b)} boxes, {len(lab)} labels and {None if s is None else len(s)} scores differ")
        return Detections(b, lab, s)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (n, 4) with every box of `b` (m, 4): (n, m); boxes of no area overlap nothing."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def average_precision(recall: np.ndarray, precision: np.ndarray, points: int | None = None) -> float:
    """Area under the precision-recall curve (recall rising), precision made monotone (each point takes the best
    precision at its recall or beyond); `points`: the mean of that precision at so many evenly spaced recalls from
    0 to 1 (COCO: 101; a recall never reached counts 0) instead of the exact area."""
    rec = np.asarray(recall, np.float64)
    best = np.maximum.accumulate(np.asarray(precision, np.float64)[::-1])[::-1]
    if points is not None:
        at = np.searchsorted(rec, np.linspace(0.0, 1.0, points), side="left")
        reached = at < len(rec)
        return float(np.where(reached, best[np.minimum(at, len(rec) - 1)] if len(rec) else 0.0, 0.0).mean())
    widths = np.diff(np.concatenate([[0.0], rec]))
    return float(np.sum(widths * best))


def class_average_precision(predictions: Sequence[Detections], targets: Sequence[Detections], label: int,
                            iou_threshold: float, points: int | None = None) -> float | None:
    """AP of class `label` over images (predictions[i] against targets[i]); None when no image holds that class."""
    truth = [t.boxes[t.labels == label] for t in targets]
    total = sum(len(t) for t in truth)
    if total == 0:
        return None
    found = []  # (score, image, box)
    for i, p in enumerate(predictions):
        assert p.scores is not None, "predictions need scores"
        for j in np.flatnonzero(p.labels == label):
            found.append((float(p.scores[j]), i, p.boxes[j]))
    found.sort(key=lambda f: -f[0])  # stable: equal scores keep image order
    matched = [np.zeros(len(t), bool) for t in truth]
    hits = np.zeros(len(found), bool)
    for k, (_, i, box) in enumerate(found):
        if not len(truth[i]):
            continue
        iou = box_iou(box[None], truth[i])[0]
        iou[matched[i]] = -1.0
        best = int(np.argmax(iou))
        if iou[best] >= iou_threshold:
            matched[i][best] = True
            hits[k] = True
    tp = np.cumsum(hits)
    recall = tp / total
    precision = tp / np.arange(1, len(found) + 1)
    return average_precision(recall, precision, points)


def mean_average_precision(predictions: Sequence[Detections], targets: Sequence[Detections],
                           iou_thresholds: Sequence[float] = (0.5,), points: int | None = None) -> dict[str, object]:
    """mAP over the classes with ground truth, averaged over `iou_thresholds`; with each class's AP (same average)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    labels = sorted({int(x) for t in targets for x in t.labels})
    per_class: dict[int, float] = {}
    for label in labels:
        aps = [class_average_precision(predictions, targets, label, thr, points) for thr in iou_thresholds]
        per_class[label] = float(np.mean([a for a in aps if a is not None]))
    return {"map": float(np.mean(list(per_class.values()))) if per_class else float("nan"), "per_class": per_class,
            "iou_thresholds": list(iou_thresholds), "points": points or "all"}
