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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LEFT_OUT = "pre-processing (resize, normalise), anchors, box decoding and NMS, which couple no channels"


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
    """The network part of a torchvision detector, None for any other model (which is its own network)."""
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
    return None


def network_of(model: nn.Module) -> nn.Module:
    """What the graph prunes and the table times: a detector's network part, or the model itself."""
    part = network_part(model)
    return part.module if part is not None else model
