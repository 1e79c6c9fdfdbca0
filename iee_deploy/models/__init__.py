"""Model zoo: every torchvision classifier by name, the paper's models torchvision lacks, and yours.

`build_model(name, num_classes, resolution, checkpoint)` is the one factory. `name` is a zoo name
(`list_models("resnet*")`, `iee-deploy models`) or ``package.module:factory`` for a user's model,
called as ``factory(num_classes=..., resolution=...)`` (resolution only when it takes one).
See `torchvision_zoo.py` for the sizes each torchvision model accepts and its small-input stems.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.models.cifar_resnet import CifarResNet
from iee_deploy.models.mobilenet_v1 import MobileNetV1
from iee_deploy.models.registry import ModelSpec, list_models, model_spec, register_model
from iee_deploy.models.torchvision_zoo import TORCHVISION_MODELS
from iee_deploy.models.wide_resnet import WideResNet

__all__ = ["TORCHVISION_MODELS", "ModelSpec", "build_model", "list_models", "load_checkpoint",
           "model_spec", "register_model"]


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


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a user checkpoint: a state_dict, {'model': state_dict}, {'state_dict': ...} or a whole saved module."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint '{file}' does not exist", "pass the path of a .pt/.pth file")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or not a torch file
        raise UserError(f"checkpoint '{file}' cannot be read ({type(exc).__name__})", "pass a file saved with torch.save") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        state = {k.removeprefix("module."): v for k, v in obj.items()}
        own = model.state_dict()
        other = [k for k, v in state.items() if k in own and getattr(v, "shape", None) != own[k].shape]
        if other:  # load_state_dict would raise with one line per tensor
            raise UserError(f"checkpoint '{file}' does not match the model ({len(other)} tensors of another shape, e.g. "
                            f"{other[0]} {list(state[other[0]].shape)} vs {list(own[other[0]].shape)})",
                            "pass the same `model` and `num_classes` the checkpoint was trained with",
                            fields=("model", "num_classes"))
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(
                f"checkpoint '{file}' does not match the model ({len(result.missing_keys)} missing, "
                f"{len(result.unexpected_keys)} unexpected keys, e.g. "
                f"{(result.missing_keys + result.unexpected_keys)[0]})",
                "pass the same `model` and `num_classes` the checkpoint was trained with", fields=("model", "num_classes"),
            )
        return model
    raise UserError(f"checkpoint '{file}' holds a {type(obj).__name__}, not weights", "save a state_dict or a module")


def build_model(
    name: str, num_classes: int = 1000, resolution: int | None = None, checkpoint: str | Path | None = None
) -> nn.Module:
    """Build model `name` (zoo name or package.module:factory) for `num_classes` outputs at `resolution` px.

    `resolution` defaults to the model's native size; one it cannot take is a UserError naming the
    valid sizes. `checkpoint` optionally loads weights.
    """
    spec = model_spec(name)
    if num_classes < 1:
        raise UserError(f"`num_classes` must be positive, got {num_classes}", "pass the number of classes", fields=("num_classes",))
    size = resolution or spec.native_resolution
    spec.check_resolution(size)
    model = spec.builder(num_classes, size)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model
