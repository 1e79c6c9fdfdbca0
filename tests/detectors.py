"""Small torchvision detectors for the tests (random weights, a small ResNet-like body, FPN 32 channels wide (FCOS's GroupNorm takes 32 groups), images
of 64 px), and a model
that cannot run on small inputs.

Factories in the `module:factory` form the CLI takes (`--model detectors:retinanet_tiny`)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

WIDTH = 32
SIZE = {"min_size": 64, "max_size": 64}
BODY = {1: 8, 2: 16, 3: 24, 4: 32}
"""The small body's stage widths (a ResNet's stage names: layer1 .. layer4, each halving the size)."""


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _body() -> nn.Module:
    body = nn.Sequential()
    body.add_module("stem", nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()))
    for k, cin in zip(BODY, (8, *BODY.values())):
        body.add_module(f"layer{k}", _stage(cin, BODY[k]))
    return body


def _fpn(extra: nn.Module, levels: tuple[int, ...] = (2, 3, 4)) -> BackboneWithFPN:
    return BackboneWithFPN(_body(), {f"layer{k}": str(i) for i, k in enumerate(levels)}, [BODY[k] for k in levels],
                           WIDTH, extra_blocks=extra)


def retinanet_tiny(num_classes: int = 5) -> nn.Module:
    return detection.RetinaNet(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)


def fcos_tiny(num_classes: int = 5) -> nn.Module:
    return detection.FCOS(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)


def fasterrcnn_tiny(num_classes: int = 5) -> nn.Module:
    return detection.FasterRCNN(_fpn(LastLevelMaxPool(), (1, 2, 3, 4)), num_classes, **SIZE)


def ssdlite(num_classes: int = 5) -> nn.Module:
    return detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def unpadded(num_classes: int = 5) -> nn.Module:
    """A classifier of three unpadded 3x3 convolutions: it cannot run on inputs under 7 px."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


def retinanet_tiny_scoring(num_classes: int = 5) -> nn.Module:
    """`retinanet_tiny` whose class scores spread over (0, 1) from the start (its classifier's last weights drawn
    wide, seeded, instead of RetinaNet's 0.01 prior everywhere): a barely trained detector that detects, with
    scores apart, for deployment's box checks to compare."""
    model = detection.RetinaNet(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)
    logits = model.head.classification_head.cls_logits
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits.weight.copy_(0.1 * torch.randn(logits.weight.shape, generator=generator))
        logits.bias.zero_()
    return model
