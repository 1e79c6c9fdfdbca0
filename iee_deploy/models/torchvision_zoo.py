"""Every torchvision classification model, registered under its torchvision name.

Each entry knows the input sizes the architecture accepts: a ViT takes multiples of its patch
(its position embedding is built for `resolution`), MaxViT multiples of 224 (7x7 partitions at every
stage), the others at least torchvision's `min_size`. GoogLeNet and Inception-v3 are built without
their auxiliary heads so that training sees one output, as for every other model. ImageNet ResNets
asked for at a small resolution (<= 64 px, e.g. CIFAR or Fashion-MNIST) get the usual CIFAR stem
(3x3 stride-1 conv, no max-pool) so that the feature maps are not reduced to 1x1 by the stem;
MobileNet-V2 and -V3 get their CIFAR form (stem and first stride-2 block at stride 1). Checkpoints of
these small-input forms load only into the same form.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torchvision
from torch import nn

from iee_deploy.models.registry import register_model

SMALL_INPUT = 64
"""Resolutions at or below this get small-input stems where the model family has one."""

_DESCRIPTIONS = {
    "resnet50": "ResNet-50, the HALP/IEE structured benchmark",
    "mobilenet_v2": "MobileNet-V2: inverted residuals, depthwise",
    "mobilenet_v3_large": "MobileNet-V3 large: squeeze-excitation, hardswish",
    "efficientnet_b0": "EfficientNet-B0: MBConv with squeeze-excitation",
    "regnet_y_400mf": "RegNetY-400MF: grouped convs with squeeze-excitation",
    "densenet121": "DenseNet-121: concatenation",
    "vgg16_bn": "VGG-16 with BatchNorm",
    "shufflenet_v2_x1_0": "ShuffleNet-V2 1.0x: channel split and shuffle",
}


def _cifar_stem(model: nn.Module) -> nn.Module:
    """Replace a torchvision ResNet's 7x7/2 stem and max-pool by a 3x3/1 conv (CIFAR practice)."""
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    model.conv1 = nn.Conv2d(3, conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _cifar_mobilenet(model: nn.Module) -> nn.Module:
    """MobileNet-V2 or -V3 for small inputs (CIFAR practice): the stem conv and the first stride-2 block's depthwise
    conv at stride 1, so that a 32 px image ends at 4x4 rather than 1x1 (the 224 px network's 1/32 becomes 1/8).
    At 1x1 the last blocks see one pixel: timm's MobileNetV3 trained so at 32 px stays near 35% top-1 on CIFAR-10."""
    assert isinstance(model, (torchvision.models.MobileNetV2, torchvision.models.MobileNetV3))
    stem = model.features[0][0]
    depthwise = next(m for m in model.features[1:].modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
                     and m.groups == m.in_channels > 1)
    assert isinstance(stem, nn.Conv2d) and stem.stride == (2, 2)
    stem.stride = depthwise.stride = (1, 1)
    return model


def _describe(name: str, builder: Any) -> str:
    """The first paragraph of the torchvision builder's docstring, without RST links."""
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    text = " ".join((inspect.getdoc(builder) or name).split("\n\n")[0].split())
    text = re.sub(r"`([^`<]+?)\s*<[^>]*>`_*", r"\1", text).replace("`", "").rstrip(".")
    return text if len(text) <= 100 else text[:97] + "..."


def _register(name: str) -> None:
    tv_builder = torchvision.models.get_model_builder(name)
    default = next(iter(torchvision.models.get_model_weights(name)))
    native = int(getattr(default.transforms, "keywords", {}).get("crop_size", 224))
    minimum, step = int(default.meta.get("min_size", (1, 1))[0]), 1
    extra: dict[str, Any] = {}
    size_arg: str | None = None
    if name.startswith("vit_"):  # the position embedding is built for image_size
        step = minimum = int(name.rsplit("_", 1)[1])
        size_arg = "image_size"
    elif name.startswith("maxvit"):  # 7x7 partitions of the 1/4 .. 1/32 feature maps
        step = minimum = 224
        size_arg = "input_size"
    elif name.startswith("swin"):  # windows are padded, any size from 32 px works (torchvision's 224 is the weights')
        minimum = 32
    elif name in ("googlenet", "inception_v3"):
        extra = {"aux_logits": False, "init_weights": True}

    def builder(num_classes: int, resolution: int) -> nn.Module:
        kwargs = dict(extra)
        if size_arg == "image_size":
            kwargs["image_size"] = resolution
        elif size_arg == "input_size":
            kwargs["input_size"] = (resolution, resolution)
        model: nn.Module = tv_builder(weights=None, num_classes=num_classes, **kwargs)
        if isinstance(model, torchvision.models.ResNet) and resolution <= SMALL_INPUT:
            model = _cifar_stem(model)
        if isinstance(model, (torchvision.models.MobileNetV2, torchvision.models.MobileNetV3)) and resolution <= SMALL_INPUT:
            model = _cifar_mobilenet(model)
        return model

    register_model(name, native_resolution=native, family="torchvision", description=_describe(name, tv_builder),
                   min_resolution=minimum, resolution_step=step)(builder)


TORCHVISION_MODELS: list[str] = torchvision.models.list_models(module=torchvision.models)
"""torchvision's classification models (detection, segmentation and video models are other modules)."""

for _name in TORCHVISION_MODELS:
    _register(_name)
