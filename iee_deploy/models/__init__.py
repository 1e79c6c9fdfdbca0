"""Model zoo: every torchvision classifier by name, the paper's models torchvision lacks, and yours.

`build_model(name, num_classes, resolution, checkpoint)` is the one factory. `name` is a zoo name
(`list_models("resnet*")`, `iee-deploy models`) or ``package.module:factory`` for a user's model,
called as ``factory(num_classes=..., resolution=...)`` (resolution only when it takes one).
See `torchvision_zoo.py` for the sizes each torchvision model accepts and its small-input stems.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.models.cifar_resnet import CifarResNet
from iee_deploy.models.mobilenet_v1 import MobileNetV1
from iee_deploy.models.registry import ModelSpec, list_models, model_spec, register_model
from iee_deploy.models.torchvision_zoo import TORCHVISION_MODELS
from iee_deploy.models.wide_resnet import WideResNet

__all__ = ["TORCHVISION_MODELS", "ModelSpec", "build_model", "first_non_finite", "list_models", "load_checkpoint",
           "load_state", "model_spec", "register_model"]


@register_model("mobilenet_v1", native_resolution=224, family="paper", description="MobileNet-V1, ImageNet layout")
def _mobilenet_v1(num_classes: int, resolution: int) -> nn.Module:
    return MobileNetV1(num_classes)


@register_model("wrn22_2", native_resolution=32, family="paper", description="WideResNet-22-2 for 32x32 inputs",
                default_classes=10)
def _wrn22_2(num_classes: int, resolution: int) -> nn.Module:
    return WideResNet(22, 2, num_classes)


def _cifar_resnet(depth: int) -> None:
    def builder(num_classes: int, resolution: int) -> nn.Module:
        return CifarResNet(depth, num_classes)

    register_model(f"resnet{depth}", native_resolution=32, family="paper",
                   description=f"CIFAR ResNet-{depth} (16-32-64 channels)", default_classes=10)(builder)


for _depth in (20, 56):
    _cifar_resnet(_depth)


def first_non_finite(model: nn.Module) -> str | None:
    """The name of `model`'s first floating-point parameter or buffer that holds NaN or inf, or None."""
    return next((name for name, tensor in (*model.named_parameters(), *model.named_buffers())
                 if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())), None)


def load_state(model: nn.Module, state: dict[str, Any], source: str) -> nn.Module:
    """Load `state` (a state_dict, 'module.' prefixes allowed) into `model`, or a one-line UserError
    naming the first tensor that is missing, unexpected or of another shape."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if {"progress", "optimizer"} <= state.keys() and not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint '{source}' is a training checkpoint (a run's checkpoint.pt: optimizer state and "
                        "progress), not a model's weights",
                        "pass a model's weights (a run's final_model.pt), or continue that run with `resume`")
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise UserError(f"checkpoint '{source}' does not match the model: it has no tensor '{name}'",
                            "pass the `model` and `num_classes` the checkpoint was trained with", fields=("model", "num_classes"))
        value = state[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"checkpoint '{source}' does not match the model: '{name}' is {shape} in the checkpoint, "
                            f"{tuple(tensor.shape)} in the model", "pass the `model` and `num_classes` the checkpoint was trained with", fields=("model", "num_classes"))
    extra = sorted(set(state) - set(own))
    if extra:
        raise UserError(f"checkpoint '{source}' does not match the model: unexpected tensor '{extra[0]}'",
                        "pass the `model` and `num_classes` the checkpoint was trained with", fields=("model", "num_classes"))
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
    """Build model `name` (zoo name or package.module:factory) for `num_classes` outputs at `resolution` px.

    `resolution` defaults to the model's native size; one it cannot take is a UserError naming the
    valid sizes. `checkpoint` optionally loads weights.
    """
    if not isinstance(name, str):
        raise UserError(f"`model` must be a model's name, got {type(name).__name__}",
                        "pass a name `iee-deploy models` lists, e.g. 'resnet20'", fields=("model",))
    spec = model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise UserError(f"`num_classes` must be a positive whole number, got {num_classes!r}", "pass the number of classes",
                        fields=("num_classes",))
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral)
                                   or resolution < 1):
        raise UserError(f"`resolution` must be a positive whole number of pixels, got {resolution!r}",
                        "pass the input size, e.g. 32", fields=("resolution",))
    num_classes = int(num_classes)
    size = int(resolution) if resolution else spec.native_resolution
    spec.check_resolution(size)
    model = spec.builder(num_classes, size)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model
