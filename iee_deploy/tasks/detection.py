"""Detection metrics: mAP@0.5 (Pascal VOC's threshold) and mAP@[.5:.95] (COCO's), from torchmetrics.

A thin adapter over torchmetrics' `MeanAveragePrecision` with its COCO backend (pycocotools), so the
figures a detector's validation reports are COCO's own evaluation, not a second copy of it:

- predictions and targets are torchvision's per-image dicts (`boxes` (n, 4) as x1, y1, x2, y2 in
  pixels, `labels` (n,), and for predictions `scores` (n,)), as a torchvision detector returns them;
- both figures use COCO's matching (greedy by score, at most 100 detections per image) and its
  101-point interpolated precision-recall curve; at IoU 0.5 that is VOC's threshold with COCO's
  interpolation (VOC 2007 samples 11 recalls, VOC 2010 on takes the exact area);
- mAP averages over the classes that have ground truth or detections; a split with no ground truth
  at all has no mAP (NaN, where COCO writes -1).

They need the `detection` extra (torchmetrics and pycocotools): `pip install iee-deploy[detection]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from iee_deploy.errors import UserError

INSTALL = "pip install iee-deploy[detection]"


@dataclass(frozen=True)
class DetectionScores:
    """mAP at IoU 0.5 and averaged over IoU 0.50, 0.55, ..., 0.95 (COCO's primary figure); NaN without ground truth."""

    map_50: float
    map: float

    def as_record(self, prefix: str = "val_") -> dict[str, float]:
        """The figures under their record names: {"val_map_50": ..., "val_map": ...}."""
        return {f"{prefix}map_50": self.map_50, f"{prefix}map": self.map}


def _metric_class() -> Any:
    try:
        import pycocotools  # noqa: F401  (the COCO backend torchmetrics evaluates with)
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as exc:
        raise UserError(f"detection metrics need torchmetrics and pycocotools ({exc.name} is not installed)",
                        INSTALL) from None
    return MeanAveragePrecision


class DetectionMetric:
    """mAP accumulated over batches: `update(predictions, targets)` per batch, then `compute()`.

    Across DDP ranks torchmetrics gathers every rank's images before it computes."""

    def __init__(self) -> None:
        self._metric = _metric_class()(box_format="xyxy", iou_type="bbox", backend="pycocotools")

    def update(self, predictions: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]]) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
        keep = ("boxes", "labels", "scores")
        self._metric.update([{k: p[k].detach().float().cpu() if k != "labels" else p[k].detach().cpu()
                              for k in keep} for p in predictions],
                            [{k: t[k].detach().cpu() for k in keep[:2]} for t in targets])

    def compute(self) -> DetectionScores:
        result = self._metric.compute()

        def value(key: str) -> float:
            v = float(result[key])
            return math.nan if v < 0 else v  # COCO writes -1 where there is nothing to score

        return DetectionScores(map_50=value("map_50"), map=value("map"))


def mean_average_precision(predictions: Sequence[dict[str, torch.Tensor]],
                           targets: Sequence[dict[str, torch.Tensor]]) -> DetectionScores:
    """mAP of `predictions` against `targets` (one dict per image, in the same order)."""
    metric = DetectionMetric()
    metric.update(predictions, targets)
    return metric.compute()
