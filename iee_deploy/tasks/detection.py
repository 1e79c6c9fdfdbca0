"""Detection: a detector's own loss in the one training loop, and its mAP (torchmetrics, COCO's evaluation).

`DetectionTask` trains a torchvision detector (`iee_deploy.models.detectors` by name, or a user's
factory) on `iee_deploy.data.detection`'s datasets: the loss of a batch is the sum of the loss dict
the detector returns in train mode; validation reports mAP@0.5 (Pascal VOC's threshold) and
mAP@[.5:.95] (COCO's).

The metrics are a thin adapter over torchmetrics' `MeanAveragePrecision` with its COCO backend
(pycocotools), so the figures are COCO's own evaluation, not a second copy of it:

- predictions and targets are torchvision's per-image dicts (`boxes` (n, 4) as x1, y1, x2, y2 in
  pixels, `labels` (n,), and for predictions `scores` (n,)), as a torchvision detector returns them;
- both figures use COCO's matching (greedy by score, at most 100 detections per image) and its
  101-point interpolated precision-recall curve; at IoU 0.5 that is VOC's threshold with COCO's
  interpolation (VOC 2007 samples 11 recalls, VOC 2010 on takes the exact area);
- mAP averages over the classes that have ground truth or detections; a split with no ground truth
  at all has no mAP (NaN, where COCO writes -1).

They need the `detection` extra (torchmetrics and pycocotools): `pip install 'iee-deploy[detection]'`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from iee_deploy.data import DataBundle
from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError, brief
from iee_deploy.tasks.base import Deployment, DeployScore, StepOutcome, Task

INSTALL = "pip install 'iee-deploy[detection]'"


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


PREDICTION_KEYS = ("boxes", "scores", "labels")
TARGET_KEYS = ("boxes", "labels")
_SHAPES = {"boxes": "float (n, 4)", "scores": "float (n,)", "labels": "integer (n,)"}


def _refuse(field: str, problem: str, fix: str | None = None) -> UserError:
    keys = PREDICTION_KEYS if field == "predictions" else TARGET_KEYS
    layout = "pass one dict per image of " + ", ".join(f"'{k}' {_SHAPES[k]}" for k in keys) + (
        ", boxes as x1, y1, x2, y2 in pixels, as a torchvision detector returns them in eval mode")
    return UserError(f"`{field}`{problem}", fix or layout, fields=(field,))


def _well_formed(tensor: torch.Tensor, key: str) -> bool:
    if key == "boxes":
        return tensor.dim() == 2 and tensor.shape[1] == 4 and tensor.is_floating_point()
    if key == "scores":
        return tensor.dim() == 1 and tensor.is_floating_point()
    return tensor.dim() == 1 and not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def _checked_images(field: str, images: Any, keys: tuple[str, ...]) -> list[dict[str, torch.Tensor]]:
    """`images` (the argument `field`: one dict per image) with their `keys` detached, or a UserError naming the
    image and what is wrong. Unchecked, torchmetrics raises a KeyError or IndexError, or scores wrong boxes
    silently: reversed boxes (x, y, w, h read as x1, y1, x2, y2) score 0, and a NaN box scored a perfect mAP."""
    if isinstance(images, (torch.Tensor, dict, str)) or not isinstance(images, Sequence):
        raise _refuse(field, f" is a {type(images).__name__}, not a list of per-image dicts")
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise _refuse(field, f"[{i}] is a {type(image).__name__}, not a dict")
        for key in keys:
            value = image.get(key)
            if not isinstance(value, torch.Tensor):
                raise _refuse(field, f"[{i}] has no '{key}'" if value is None else
                              f"[{i}]['{key}'] is a {type(value).__name__}, not a tensor")
            if not _well_formed(value, key):
                raise _refuse(field, f"[{i}]['{key}'] is {value.dtype} of shape {tuple(value.shape)}, not "
                              f"{_SHAPES[key]}")
        lengths = {key: len(image[key]) for key in keys}
        if len(set(lengths.values())) != 1:
            raise _refuse(field, f"[{i}] has " + ", ".join(f"{n} {key}" for key, n in lengths.items()),
                          f"pass one {' and one '.join(k[:-1] for k in keys[1:])} per box")
        for key in ("boxes", "scores"):
            if key in keys and not bool(torch.isfinite(image[key]).all()):
                raise _refuse(field, f"[{i}]['{key}'] holds NaN or inf", f"pass finite {key}")
        reversed_rows = (image["boxes"][:, 2:] < image["boxes"][:, :2]).any(dim=1).nonzero()
        if len(reversed_rows):
            row = int(reversed_rows[0])
            raise _refuse(field, f"[{i}]['boxes'][{row}] {[round(float(v), 2) for v in image['boxes'][row]]} ends "
                          "before it starts (x2 < x1 or y2 < y1)", "pass boxes as x1, y1, x2, y2 (convert x, y, w, "
                          "h with torchvision.ops.box_convert(boxes, 'xywh', 'xyxy'))")
        out.append({key: image[key].detach() for key in keys})
    return out


class DetectionMetric:
    """mAP accumulated over batches: `update(predictions, targets)` per batch, then `compute()`.

    Across DDP ranks torchmetrics gathers every rank's images (on `device`, where the detector runs) before it
    computes."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._metric = _metric_class()(box_format="xyxy", iou_type="bbox", backend="pycocotools").to(device)
        self._metric.warn_on_many_detections = False  # COCO scores each image's best 100, as documented above

    def update(self, predictions: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]]) -> None:
        """Adds one batch: `predictions` and `targets` one dict per image, in the same order (checked first)."""
        preds = _checked_images("predictions", predictions, PREDICTION_KEYS)
        truths = _checked_images("targets", targets, TARGET_KEYS)
        if len(preds) != len(truths):
            raise UserError(f"{len(preds)} `predictions` for {len(truths)} `targets`",
                            "pass one prediction dict per target image, in the same order",
                            fields=("predictions", "targets"))
        self._metric.update(preds, truths)

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


@dataclass(frozen=True)
class BoxTolerance:
    """When an engine's detection reproduces a reference detection: same label, IoU >= `iou`, score within `score`."""

    iou: float
    score: float


BOX_TOLERANCES = {"fp32": BoxTolerance(iou=0.99, score=1e-3), "fp16": BoxTolerance(iou=0.99, score=1e-2)}
"""Float engines: boxes within about 1% of their size, scores (probabilities) within float rounding of a few dozen
layers. Quantized engines (int8, fp8) are judged by mAP; their detections are compared with `QUANTIZED_BOXES`."""
QUANTIZED_BOXES = BoxTolerance(iou=0.5, score=0.1)
AGREEMENT_LIMIT = 1.0
"""The % of PyTorch's detections a float engine may miss. Rounding in the last bit can break a tie between two
overlapping candidates scored alike the other way (NMS then keeps the other one; an undertrained detector scores
many anchors alike, and 0.2% of its detections moved so in the suite's tests); a wrong output packing or box
decoding misses most detections, and raw outputs are checked elementwise besides."""


def matched_detections(actual: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                       tolerance: BoxTolerance) -> tuple[int, int]:
    """(matched, compared): the reference detections of one image that `actual` reproduces within `tolerance`.

    Compared are the reference detections scoring at least `tolerance.score` above the lowest score the reference
    kept: a detection at a cutoff (the score threshold, the per-image limit) may fall on either side of it within
    the tolerance. Each actual detection matches at most one reference detection, the best-scoring first."""
    from torchvision.ops import box_iou

    scores = reference["scores"]
    if len(scores) == 0:
        return 0, 0
    compared = (scores >= scores.min() + tolerance.score).nonzero().flatten()
    compared = compared[scores[compared].argsort(descending=True)]
    iou = box_iou(reference["boxes"][compared], actual["boxes"]) if len(actual["boxes"]) else None
    free = torch.ones(len(actual["boxes"]), dtype=torch.bool)
    matched = 0
    for row, index in enumerate(compared.tolist()):
        if iou is None:
            break
        fits = (free & (actual["labels"] == reference["labels"][index]) & (iou[row] >= tolerance.iou)
                & ((actual["scores"] - scores[index]).abs() <= tolerance.score))
        if bool(fits.any()):
            free[int(torch.where(fits, iou[row], -1.0).argmax())] = False
            matched += 1
    return matched, len(compared)


class DetectorDeployment(Deployment):
    """A one-stage detector as its engine runs it (`DetectorPipeline`): the detector's pre-processing to the
    engine's fixed size, the network part (packed outputs), then decoding and NMS as a stage of its own."""

    postprocessed = True

    def __init__(self, model: nn.Module, resolution: int) -> None:
        from iee_deploy.models.detection import detector_pipeline

        try:
            self.pipeline = detector_pipeline(model, resolution)
        except ValueError as exc:
            raise UserError(str(exc), "train a one-stage detector (ssdlite, retinanet_resnet18, fcos_resnet18, or "
                            "your own) to deploy it as an engine", fields=("model",)) from None
        self.network = self.pipeline.network

    def inputs(self, batch: Any) -> tuple[torch.Tensor, Any]:
        images, targets = batch
        x, sizes, original = self.pipeline.preprocess(list(images))
        return x, (sizes, original, targets)

    def predictions(self, outputs: torch.Tensor, context: Any) -> list[dict[str, torch.Tensor]]:
        sizes, original, _ = context
        return self.pipeline.postprocess(outputs, sizes, original)


class MapScore(DeployScore):
    """mAP@0.5 in percent (`DetectionMetric`) of one model's detections against the batch's targets."""

    def __init__(self) -> None:
        self.metric = DetectionMetric()

    def update(self, predictions: list[dict[str, torch.Tensor]], context: Any) -> None:
        self.metric.update(predictions, context[2])

    def compute(self) -> float:
        return 100.0 * self.metric.compute().map_50


def collate(items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A detection batch: the images and their targets as lists (images may differ in size)."""
    return [image for image, _ in items], [target for _, target in items]


class DetectionTask(Task):
    """Images to boxes: a torchvision detector's own loss dict (summed) in train mode, mAP on the validation set."""

    name = "detection"
    default_model = "ssdlite"
    score = "val_map_50"
    score_label = "mAP@0.5"
    counts_correct = False

    def datasets(self, config: Any) -> DataBundle:
        from iee_deploy.data.detection import check_scorable, detection_datasets

        bundle = detection_datasets(config.dataset, config.data_dir, config.resolution, config.subset, config.val_subset)
        check_scorable(bundle)
        return bundle

    def check_fits_data(self, config: Any, bundle: DataBundle) -> None:
        if config.num_classes is not None and config.num_classes < bundle.num_classes:
            raise UserError(f"`num_classes` {config.num_classes} is fewer than the {bundle.num_classes} classes of "
                            f"{bundle.name} (the background included)", f"pass at least {bundle.num_classes}, or leave "
                            "`num_classes` out", fields=("num_classes",))

    def check_model_name(self, name: str) -> None:
        from iee_deploy.models import model_spec
        from iee_deploy.models.detectors import DETECTORS

        if name not in DETECTORS and ":" not in name:
            raise UserError(f"'{name}' is not a detector", f"pass `model` {', '.join(DETECTORS)} or a "
                            "package.module:factory that builds a torchvision detector", fields=("model",))
        model_spec(name)  # a factory can be imported

    def build_model(self, name: str, num_classes: int, resolution: int, checkpoint: str | None) -> nn.Module:
        from iee_deploy.models import build_model

        self.check_model_name(name)
        return build_model(name, num_classes, resolution, checkpoint)  # the zoo builds the detectors by name too

    @torch.no_grad()
    def check_model(self, model: nn.Module, num_classes: int, resolution: int) -> None:
        """A detector (torchvision's, or one's own with `loss` and `postprocess`) that runs on one image of the run's
        size (checked before any training)."""
        from iee_deploy.graph.trace import eval_mode
        from iee_deploy.models.detection import network_part

        if network_part(model) is None:
            raise UserError(f"the model is a {type(model).__name__}, not a torchvision detector (SSD, RetinaNet, FCOS, "
                            "R-CNN)", "pass a factory that builds one, or give your detector `loss(outputs, targets)` "
                            "and `postprocess(outputs, image_sizes)` methods", fields=("model",))
        param = next(model.parameters())
        try:
            with eval_mode(model):
                model(self.example_input(resolution, param.device))
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"the detector fails on a {resolution} px image ({type(exc).__name__}: "
                            f"{brief(exc)})", "pass a larger `resolution`",
                            fields=("resolution",)) from None

    def train_batches(self, dataset: Any, sampler: Any, device: torch.device, config: Any) -> Iterable[Any]:
        from iee_deploy.train.data import train_loader

        return train_loader(dataset, sampler, config.workers, config.seed, collate)

    def val_batches(self, dataset: Any, config: Any, rank: int, world: int) -> DataLoader:
        from iee_deploy.train.data import val_loader

        return val_loader(dataset, config.batch_size, config.workers, rank, world, collate)

    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, targets = batch
        return ([image.to(device, non_blocking=True) for image in images],
                [{k: v.to(device, non_blocking=True) for k, v in target.items()} for target in targets])

    def batch_len(self, batch: Any) -> int:
        return len(batch[0])

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> StepOutcome:
        from iee_deploy.models.detection import detector_losses

        optimizer.zero_grad(set_to_none=True)
        loss = sum(detector_losses(net, *batch).values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        optimizer.step()
        return StepOutcome(float(loss.detach()))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, dist: Distributed) -> dict[str, float]:
        from iee_deploy.models.detection import detect

        was_training = model.training
        model.eval()
        metric = DetectionMetric(dist.device)
        for batch in loader:
            images, targets = self.to_device(batch, dist.device)
            metric.update(detect(model, images), targets)
        model.train(was_training)
        return metric.compute().as_record()

    def epoch_text(self, record: dict[str, Any]) -> str:
        return (f"train loss {record['train_loss']:.4f} | val mAP@0.5 {100 * record['val_map_50']:.2f}% "
                f"mAP@[.5:.95] {100 * record['val_map']:.2f}%")

    agreement_label = "detections matched"
    agreement_limit = AGREEMENT_LIMIT

    def deployment(self, model: nn.Module, resolution: int) -> Deployment:
        return DetectorDeployment(model, resolution)

    def deploy_score(self) -> DeployScore:
        return MapScore()

    def agreement(self, actual: Any, reference: Any, precision: str) -> tuple[int, int]:
        """Reference detections reproduced (`matched_detections`), summed over the batch's images."""
        tolerance = BOX_TOLERANCES.get(precision, QUANTIZED_BOXES)
        counts = [matched_detections(a, r, tolerance) for a, r in zip(actual, reference)]
        return sum(m for m, _ in counts), sum(n for _, n in counts)
