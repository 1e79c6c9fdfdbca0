"""Model zoo: torchvision classifiers by name plus the paper's models torchvision lacks.

`build_model(name, num_classes, resolution, checkpoint)` is the one factory. ImageNet ResNets
asked for at a small resolution (<= 64 px, e.g. CIFAR or Fashion-MNIST) get the usual CIFAR stem
(3x3 stride-1 conv, no max-pool) so that the feature maps are not reduced to 1x1 by the stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.models.cifar_resnet import CifarResNet
from iee_deploy.models.mobilenet_v1 import MobileNetV1
from iee_deploy.models.registry import ModelSpec, list_models, model_spec, register_model
from iee_deploy.models.wide_resnet import WideResNet

__all__ = ["ModelSpec", "build_model", "list_models", "load_checkpoint", "load_state", "model_spec", "register_model"]

SMALL_INPUT = 64
"""Resolutions at or below this get small-input stems where the model family has one."""


def _cifar_stem(model: nn.Module) -> nn.Module:
    """Replace a torchvision ResNet's 7x7/2 stem and max-pool by a 3x3/1 conv (CIFAR practice)."""
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    model.conv1 = nn.Conv2d(3, conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _torchvision(name: str, description: str, *, small_stem: bool = False) -> None:
    def builder(num_classes: int, resolution: int) -> nn.Module:
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if small_stem and resolution <= SMALL_INPUT:
            model = _cifar_stem(model)
        return model

    register_model(name, native_resolution=224, family="torchvision", description=description)(builder)


for _name, _desc in [
    ("resnet18", "ResNet-18 (torchvision)"),
    ("resnet34", "ResNet-34 (torchvision)"),
    ("resnet50", "ResNet-50 (torchvision), the HALP/IEE structured benchmark"),
]:
    _torchvision(_name, _desc, small_stem=True)
for _name, _desc in [
    ("mobilenet_v2", "MobileNet-V2 (torchvision): inverted residuals, depthwise"),
    ("mobilenet_v3_large", "MobileNet-V3 large (torchvision): squeeze-excitation, hardswish"),
    ("efficientnet_b0", "EfficientNet-B0 (torchvision): MBConv with squeeze-excitation"),
    ("regnet_y_400mf", "RegNetY-400MF (torchvision): grouped convs with squeeze-excitation"),
    ("densenet121", "DenseNet-121 (torchvision): concatenation"),
    ("vgg16_bn", "VGG-16 with BatchNorm (torchvision)"),
    ("shufflenet_v2_x1_0", "ShuffleNet-V2 1.0x (torchvision): channel split and shuffle"),
]:
    _torchvision(_name, _desc)


@register_model("mobilenet_v1", native_resolution=224, family="paper", description="MobileNet-V1, ImageNet layout")
def _mobilenet_v1(num_classes: int, resolution: int) -> nn.Module:
    return MobileNetV1(num_classes)


@register_model("wrn22_2", native_resolution=32, family="paper", description="WideResNet-22-2 for 32x32 inputs")
def _wrn22_2(num_classes: int, resolution: int) -> nn.Module:
    return WideResNet(22, 2, num_classes)


def _cifar_resnet(depth: int) -> None:
    def builder(num_classes: int, resolution: int) -> nn.Module:
        return CifarResNet(depth, num_classes)

    register_model(f"resnet{depth}", native_resolution=32, family="paper",
                   description=f"CIFAR ResNet-{depth} (16-32-64 channels)")(builder)


for _depth in (20, 56):
    _cifar_resnet(_depth)


def load_state(model: nn.Module, state: dict[str, Any], source: str) -> nn.Module:
    """Load `state` (a state_dict, 'module.' prefixes allowed) into `model`, or a one-line UserError
    naming the first tensor that is missing, unexpected or of another shape."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise UserError(f"checkpoint '{source}' does not match the model: it has no tensor '{name}'",
                            "use the model and class count the checkpoint was trained with")
        value = state[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"checkpoint '{source}' does not match the model: '{name}' is {shape} in the checkpoint, "
                            f"{tuple(tensor.shape)} in the model", "use the model and class count the checkpoint was trained with")
    extra = sorted(set(state) - set(own))
    if extra:
        raise UserError(f"checkpoint '{source}' does not match the model: unexpected tensor '{extra[0]}'",
                        "use the model and class count the checkpoint was trained with")
    model.load_state_dict(state)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a user checkpoint: a state_dict, {'model': ...}, {'state_dict': ...} or {'model_state': ...}.

    Read with `weights_only=True`: a pickled module or any other code is refused, never run.
    """
    from iee_deploy.runs import load_weights

    obj = load_weights(path)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        return load_state(model, obj, str(path))
    raise UserError(f"checkpoint '{path}' holds a {type(obj).__name__}, not weights", "save a state_dict")


def build_model(
    name: str, num_classes: int = 1000, resolution: int | None = None, checkpoint: str | Path | None = None
) -> nn.Module:
    """Build zoo model `name` for `num_classes` outputs at `resolution` px, optionally loading weights."""
    spec = model_spec(name)
    if num_classes < 1:
        raise UserError(f"--num-classes must be positive, got {num_classes}", "pass the number of classes")
    model = spec.builder(num_classes, resolution or spec.native_resolution)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model
