"""The network part of a detector: what the dependency graph prunes and the latency table times.

A torchvision detector is three stages: pre-processing (`GeneralizedRCNNTransform`: resize and
normalise each image), the network (backbone, neck such as an FPN, heads) and post-processing
(anchors, box decoding, score thresholds, NMS). Only the network holds channels that couple; the
stages around it take the head outputs as they are, so they stay outside the graph, whole. The
network part here is the detector's own modules (shared, not copied) in one module whose forward
maps a normalised image batch to the raw head outputs. Its layers have the names they have in the
detector, so a graph built on the network part prunes and masks the detector itself by those names
(`prune_model(detector, graph, keep)` is the pruned detector, pre- and post-processing included):

- one-stage detectors (SSD, SSDlite, RetinaNet, FCOS): backbone with its neck, then the head; the
  outputs are the head's tensors in the order of their names (`bbox_ctrness`, `bbox_regression`,
  `cls_logits`). Their last convolutions, whose widths encode anchors x classes or box coordinates,
  are outputs of the network, so the graph keeps them whole; the head's inner convolutions prune.
- two-stage detectors (Faster, Mask and Keypoint R-CNN): backbone with its FPN, then the region
  proposal head (objectness and box deltas per level). Their RoI heads run on pooled features of
  proposals that depend on the image (RoIAlign over data-dependent boxes): they stay whole, and so
  do the FPN widths they pool (the features are outputs of the network part too).

A detector of your own in YOLO's style is its own network part: its `forward(images)` maps an image
batch (N, 3, H, W) to the raw head outputs (a tensor or a tuple of them), and two methods do the
rest (`is_own_stages`):

- `loss(outputs, targets) -> dict[str, Tensor]`: the training losses, targets as torchvision's
  (per image `boxes` x1, y1, x2, y2 in pixels and `labels`);
- `postprocess(outputs, image_sizes) -> list[dict]`: decoding, score threshold and NMS, one dict per
  image of `boxes`, `scores` and `labels`, boxes clipped to each image's (height, width).

Images reach it as they are, zero-padded at the bottom and right to a common size divisible by 32
(`pad_images`); a fixed-size engine pads them to its side after resizing the longer side to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iee_deploy.errors import UserError

LEFT_OUT = "pre-processing (resize, normalise), anchors, box decoding and NMS, which couple no channels"
OWN_LEFT_OUT = "its own box decoding and NMS (its `postprocess`), which couple no channels"
SIZE_DIVISOR = 32  # padded image sizes of an own-stages detector: a multiple of the largest stride of common detectors


def is_own_stages(model: nn.Module) -> bool:
    """Whether `model` is a detector in YOLO's style (see the module docstring): it has `loss` and `postprocess`."""
    return callable(getattr(model, "loss", None)) and callable(getattr(model, "postprocess", None))


def pad_images(images: list[torch.Tensor], side: int | None = None) -> torch.Tensor:
    """`images` (C, H, W) in one batch, zero-padded at the bottom and right to `side` x `side`, or by default to
    the largest height and width rounded up to a multiple of `SIZE_DIVISOR`."""
    height = side or -(-max(int(image.shape[-2]) for image in images) // SIZE_DIVISOR) * SIZE_DIVISOR
    width = side or -(-max(int(image.shape[-1]) for image in images) // SIZE_DIVISOR) * SIZE_DIVISOR
    return torch.stack([F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2])) for image in images])


def _sizes(images: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(int(image.shape[-2]), int(image.shape[-1])) for image in images]


def detector_losses(net: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
                    ) -> dict[str, torch.Tensor]:
    """A detector's training losses for a batch: torchvision's `net(images, targets)`, or an own-stages detector's
    `loss` on its outputs for the padded batch (`net` may wrap the detector, as DDP does)."""
    model: Any = getattr(net, "module", net)
    if is_own_stages(model):
        losses: dict[str, torch.Tensor] = model.loss(net(pad_images(images)), targets)
        return losses
    result: dict[str, torch.Tensor] = net(images, targets)
    return result


def detect(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Detections per image (eval mode): torchvision's `model(images)`, or an own-stages detector's `postprocess`
    of its outputs for the padded batch."""
    if is_own_stages(model):
        own: Any = model
        return list(own.postprocess(model(pad_images(images)), _sizes(images)))
    result: list[dict[str, torch.Tensor]] = model(images)
    return result


def feature_levels(backbone: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The backbone's feature maps as the heads take them: a list, one per level (an FPN returns a dict)."""
    features = backbone(images)
    return list(features.values()) if isinstance(features, dict) else [features]


class OneStageNetwork(nn.Module):
    """Backbone (with its neck) and head of a one-stage detector: images -> raw head outputs, by name."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.head(feature_levels(self.backbone, images))
        return tuple(outputs[name] for name in sorted(outputs))


class ProposalNetwork(nn.Module):
    """Backbone (with its FPN) and region proposal head of a two-stage detector: images -> objectness and box
    deltas of every level, then the features themselves (the RoI heads pool them, so their widths stay whole).

    It holds the detector's whole `rpn` (its anchor generator has no parameters) and calls only its head, so
    every layer has the name it has in the detector."""

    def __init__(self, backbone: nn.Module, rpn: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = feature_levels(self.backbone, images)
        head = self.rpn.head
        assert isinstance(head, nn.Module)
        objectness, deltas = head(levels)
        return (*objectness, *deltas, *levels)


@dataclass(frozen=True)
class NetworkPart:
    """A detector's network part (`module`) and, in words, what the detector runs around it (`left_out`)."""

    module: nn.Module
    left_out: str

    def describe(self, name: str) -> str:
        """One line for the user: what the graph covers and what it leaves out."""
        return (f"{name} is a detector: the graph covers its network part ({type(self.module).__name__}: backbone, "
                f"neck and heads, to the raw head outputs) and leaves out {self.left_out}")


def network_part(model: nn.Module) -> NetworkPart | None:
    """The network part of a torchvision detector, or of an own-stages detector (the detector itself); None for any
    other model (which is its own network)."""
    if not isinstance(model, nn.Module):
        raise UserError(f"`model` must be a torch.nn.Module, got {type(model).__name__}", "pass the detector itself",
                        fields=("model",))
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, (SSD, RetinaNet, FCOS)):
        return NetworkPart(OneStageNetwork(model.backbone, model.head), LEFT_OUT)
    if isinstance(model, GeneralizedRCNN):
        rpn = model.rpn
        assert isinstance(rpn, nn.Module)
        return NetworkPart(ProposalNetwork(model.backbone, rpn),
                           LEFT_OUT + "; and the RoI heads, which run on image-dependent proposals (kept whole)")
    if is_own_stages(model):
        return NetworkPart(model, OWN_LEFT_OUT)
    return None


def network_of(model: nn.Module) -> nn.Module:
    """What the graph prunes and the table times: a detector's network part, or the model itself."""
    part = network_part(model)
    return part.module if part is not None else model



class PackedNetwork(nn.Module):
    """A network part whose outputs are packed into one (N, K) tensor (each output flattened per image, in order),
    so an engine has one output, as a classifier's has; `DetectorPipeline.unpack` splits it again."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([output.flatten(1) for output in self.network(images)], 1)


class DetectorPipeline:
    """A one-stage detector as a fixed-size engine runs it: pre-processing, network, post-processing.

    - pre-processing (`preprocess`): the detector's own resize (and normalisation), then zero padding to
      `resolution` x `resolution`, the one input size the engine, the latency table and the budget speak of;
    - network (`network`): the network part with its outputs packed into one tensor (`PackedNetwork`);
    - post-processing (`postprocess`): the packed outputs unpacked (`unpack`), then the detector's own box
      decoding, score threshold and NMS, and the boxes mapped back to the original image sizes.

    `detector_pipeline` builds the one for a detector: `TorchvisionPipeline` or `OwnStagesPipeline`.
    """

    def __init__(self, network: nn.Module, resolution: int, shapes: list[tuple[int, ...]]) -> None:
        self.network = PackedNetwork(network)
        self.resolution = resolution
        self.shapes = shapes  # per image, of each output in order

    def unpack(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """The network's outputs, in order, from a packed (N, K) engine output."""
        parts = packed.split([math.prod(shape) for shape in self.shapes], dim=1)
        return [part.reshape(len(packed), *shape) for part, shape in zip(parts, self.shapes)]

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        """The engine's input batch for `images` (C, H, W in [0, 1]), with their sizes after the detector's resize
        and before it (what `postprocess` needs)."""
        raise NotImplementedError

    def postprocess(self, packed: torch.Tensor, image_sizes: list[tuple[int, int]],
                    original_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Detections per image (boxes as x1, y1, x2, y2 in original pixels, scores, labels) from packed outputs."""
        raise NotImplementedError


class TorchvisionPipeline(DetectorPipeline):
    """A torchvision SSD, SSDlite, RetinaNet or FCOS: its transform, then its network part, then its own
    `postprocess_detections` and `transform.postprocess`, with the anchors of the fixed input size computed once
    (anchors depend on sizes only). On images the detector itself pads to that size (square images at
    `resolution`; any image for SSD, which resizes to a fixed square) this computes the detector's own forward."""

    def __init__(self, detector: nn.Module, resolution: int) -> None:
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.ssd import SSD

        part = network_part(detector)
        assert part is not None and isinstance(part.module, OneStageNetwork)
        self.detector = detector.eval()
        self.per_level = not isinstance(detector, SSD)  # RetinaNet and FCOS post-process per pyramid level
        with torch.no_grad():
            # two images: GroupNorm (FCOS's head) refuses one image of a 1 x 1 pyramid level
            example = torch.zeros(2, 3, resolution, resolution, device=next(detector.parameters()).device)
            levels = feature_levels(part.module.backbone, example)
            head_outputs = part.module.head(levels)
            anchor_generator = detector.anchor_generator
            assert isinstance(anchor_generator, nn.Module)
            self.anchors: torch.Tensor = anchor_generator(ImageList(example, [(resolution, resolution)] * 2), levels)[0]
        self.names = sorted(head_outputs)
        super().__init__(part.module, resolution, [tuple(head_outputs[name].shape[1:]) for name in self.names])
        self.locations = [level.shape[-2] * level.shape[-1] for level in levels]

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        transform = self.detector.transform
        assert isinstance(transform, nn.Module)
        batch, _ = transform(images)
        height, width = batch.tensors.shape[-2:]
        if height > self.resolution or width > self.resolution:
            raise ValueError(f"the detector's pre-processing makes {height} x {width} px inputs, larger than the "
                             f"engine's {self.resolution} px")
        padded = F.pad(batch.tensors, (0, self.resolution - width, 0, self.resolution - height))
        return padded, [(int(h), int(w)) for h, w in batch.image_sizes], _sizes(images)

    @torch.no_grad()
    def postprocess(self, packed: torch.Tensor, image_sizes: list[tuple[int, int]],
                    original_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        outputs = dict(zip(self.names, self.unpack(packed)))
        anchors = [self.anchors] * len(packed)
        detector: Any = self.detector
        if self.per_level:
            # anchors per location at each level: the head's outputs hold A anchors per feature-map location
            per_location = outputs["cls_logits"].shape[1] // sum(self.locations)
            counts = [n * per_location for n in self.locations]
            split = {name: list(output.split(counts, dim=1)) for name, output in outputs.items()}
            detections = detector.postprocess_detections(split, [list(a.split(counts)) for a in anchors], image_sizes)
        else:
            detections = detector.postprocess_detections(outputs, anchors, image_sizes)
        result: list[dict[str, torch.Tensor]] = detector.transform.postprocess(detections, image_sizes, original_sizes)
        return result


class OwnStagesPipeline(DetectorPipeline):
    """An own-stages (YOLO-style) detector: each image resized so its longer side is `resolution` (bilinear; as it
    is when it fits already), zero-padded to the square; the detector itself as the network; its `postprocess`,
    then the boxes scaled back to the original sizes."""

    def __init__(self, detector: nn.Module, resolution: int) -> None:
        self.detector = detector.eval()
        with torch.no_grad():
            outputs = detector(torch.zeros(1, 3, resolution, resolution, device=next(detector.parameters()).device))
        outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
        super().__init__(detector, resolution, [tuple(output.shape[1:]) for output in outputs])

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        resized = []
        for image in images:
            height, width = image.shape[-2:]
            scale = self.resolution / max(height, width)
            if scale < 1:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            resized.append(image)
        return pad_images(resized, self.resolution), _sizes(resized), _sizes(images)

    @torch.no_grad()
    def postprocess(self, packed: torch.Tensor, image_sizes: list[tuple[int, int]],
                    original_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        from torchvision.models.detection.transform import resize_boxes

        outputs = self.unpack(packed)
        detector: Any = self.detector
        detections: list[dict[str, torch.Tensor]] = list(detector.postprocess(
            outputs[0] if len(outputs) == 1 else tuple(outputs), image_sizes))
        for detection, size, original in zip(detections, image_sizes, original_sizes):
            detection["boxes"] = resize_boxes(detection["boxes"], size, original)
        return detections


def detector_pipeline(detector: nn.Module, resolution: int) -> DetectorPipeline:
    """The fixed-size pipeline of a one-stage detector (see `DetectorPipeline`); a ValueError for any other model."""
    if is_own_stages(detector):
        return OwnStagesPipeline(detector, resolution)
    part = network_part(detector)
    if part is None or not isinstance(part.module, OneStageNetwork):
        kind = "not a detector" if part is None else "a two-stage detector"
        raise ValueError(f"{type(detector).__name__} is {kind}: engines are built for one-stage detectors (SSD, "
                         "SSDlite, RetinaNet, FCOS, or your own with `loss` and `postprocess`)")
    return TorchvisionPipeline(detector, resolution)
