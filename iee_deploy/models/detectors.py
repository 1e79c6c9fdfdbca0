"""Detectors by name for the detection task: torchvision's, with random weights, at the run's size.

Nothing is downloaded: every detector starts from random weights (backbone included), and its own
pre-processing resizes images to the run's resolution (`min_size = max_size = resolution`; SSDlite
to a fixed square). A user's detector is a ``package.module:factory`` as for classifiers. Every command
takes these names (`detector_spec`), though `iee-deploy models` lists only classifiers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from iee_deploy.models.registry import ModelSpec

FPN_LEVELS = [2, 3, 4]
"""ResNet stages the FPN reads (C3-C5), as torchvision's RetinaNet and FCOS read them."""


def ssdlite(num_classes: int, resolution: int) -> nn.Module:
    """SSDlite320 with a MobileNetV3-Large backbone, resizing to `resolution` px squares instead of 320."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    model.transform.min_size, model.transform.max_size = (resolution,), resolution
    model.transform.fixed_size = (resolution, resolution)
    return model


def _resnet18_fpn() -> nn.Module:
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return _resnet_fpn_extractor(resnet18(weights=None), 5, FPN_LEVELS, LastLevelP6P7(256, 256))


def retinanet_resnet18(num_classes: int, resolution: int) -> nn.Module:
    """RetinaNet on a ResNet-18 FPN (P3-P7, 256 channels)."""
    from torchvision.models.detection import RetinaNet

    return RetinaNet(_resnet18_fpn(), num_classes, min_size=resolution, max_size=resolution)


def fcos_resnet18(num_classes: int, resolution: int) -> nn.Module:
    """FCOS on a ResNet-18 FPN (P3-P7, 256 channels)."""
    from torchvision.models.detection import FCOS

    return FCOS(_resnet18_fpn(), num_classes, min_size=resolution, max_size=resolution)


DETECTORS: dict[str, Callable[[int, int], nn.Module]] = {
    "ssdlite": ssdlite, "retinanet_resnet18": retinanet_resnet18, "fcos_resnet18": fcos_resnet18,
}
"""Name -> factory(num_classes, resolution); num_classes counts the background (0)."""


def detector_spec(name: str) -> ModelSpec | None:
    """Built-in detector `name` as a model spec (None for any other name): every command builds a detector by its
    bare name, as the detection task trains it, though the classification zoo does not list it."""
    if name not in DETECTORS:
        return None
    # the default data's side and classes: a table profiled by default fits a run trained by default
    from iee_deploy.data.detection import DEFAULT_RESOLUTION
    from iee_deploy.data.scenes import NUM_CLASSES

    factory = DETECTORS[name]
    return ModelSpec(name, factory, DEFAULT_RESOLUTION, "detector", (inspect.getdoc(factory) or "").split("\n")[0],
                     default_classes=NUM_CLASSES)
