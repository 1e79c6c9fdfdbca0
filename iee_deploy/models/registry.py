"""Model registry: a name maps to a builder and the resolution the model was designed for."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from iee_deploy.errors import UserError

Builder = Callable[[int, int], nn.Module]
"""builder(num_classes, resolution) -> model"""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: how to build it and what it is."""

    name: str
    builder: Builder
    native_resolution: int
    family: str
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, native_resolution: int, family: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator adding `builder(num_classes, resolution)` to the zoo under `name`."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, native_resolution, family, description)
        return builder

    return wrap


def model_spec(name: str) -> ModelSpec:
    """The zoo entry for `name`, or a UserError listing the closest names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(list_models())}"
        raise UserError(f"unknown model '{name}'", hint)
    return _REGISTRY[name]


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)
