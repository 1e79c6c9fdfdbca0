"""Model registry (timm-style): a name maps to a builder and the input sizes the model accepts.

Names are the zoo's own (`register_model`), ``timm:NAME`` and ``hf:CONFIG_OR_CLASS`` for the models of
timm and transformers (optional extras, see `external.py`), or ``package.module:factory`` for a
user's model: the factory is imported and called with ``num_classes`` (and ``resolution`` when it takes one).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from iee_deploy.errors import UserError, brief

Builder = Callable[[int, int], nn.Module]
"""builder(num_classes, resolution) -> model"""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: how to build it, what it is and which square input sizes it accepts.

    `native_resolution` is the size the model was designed for (its default). A model accepts
    a resolution r >= `min_resolution` with r % `resolution_step` == 0 (ViT: a multiple of its patch),
    and for which `probe(r)`, where set, returns None (else the reason it fails: models whose valid
    sizes no rule states, such as timm's and transformers', are probed on the meta device).
    """

    name: str
    builder: Builder
    native_resolution: int
    family: str
    description: str
    min_resolution: int = 1
    resolution_step: int = 1
    probe: Callable[[int], str | None] | None = None
    default_classes: int = 1000  # outputs when none are asked for: ImageNet's, a CIFAR model's 10, a detector its data's

    def check_resolution(self, resolution: int) -> None:
        """Raise a UserError naming the valid sizes when the model cannot take `resolution` px."""
        if resolution >= self.min_resolution and resolution % self.resolution_step == 0:
            probe = self.probe
            failure = probe(resolution) if probe is not None else None
            if failure is None or probe is None:
                return
            if resolution == self.native_resolution or probe(self.native_resolution) is not None:
                # its own size fails too: the model (its name's arguments), not the resolution
                raise UserError(f"model '{self.name}' cannot run even at its native {self.native_resolution} px: "
                                f"{failure}", "check the arguments in its name", fields=("model",))
            raise UserError(f"model '{self.name}' cannot take {resolution} px inputs (`resolution`): {failure}",
                            f"use another resolution (native {self.native_resolution})", fields=("resolution",))
        if self.resolution_step > 1:
            first = max(self.resolution_step, -(-self.min_resolution // self.resolution_step) * self.resolution_step)
            valid = f"a multiple of {self.resolution_step} from {first} px (native {self.native_resolution})"
        else:
            valid = f"at least {self.min_resolution} px (native {self.native_resolution})"
        raise UserError(f"model '{self.name}' cannot take {resolution} px inputs (`resolution`)", f"use a resolution {valid}",
                            fields=("resolution",))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, native_resolution: int, family: str, description: str, min_resolution: int = 1,
                   resolution_step: int = 1, default_classes: int = 1000) -> Callable[[Builder], Builder]:
    """Decorator adding `builder(num_classes, resolution)` to the zoo under `name` (`default_classes`: its outputs
    when a command asks for none, ImageNet's unless the model is made for a smaller dataset)."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, native_resolution, family, description, min_resolution,
                                    resolution_step, default_classes=default_classes)
        return builder

    return wrap


USER_DEFAULT_RESOLUTION = 224
"""Native resolution of a user factory without a `native_resolution` attribute."""


def _user_spec(name: str) -> ModelSpec:
    """The spec of ``package.module:factory``: the factory is imported (this runs the user's module)."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UserError(f"model '{name}' is not of the form package.module:factory", "e.g. mypkg.nets:build")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised by the user's module itself
        from iee_deploy.models.external import PREFIXES

        prefix = next((p for p in PREFIXES if p.rstrip(":").lower() == module_name.lower() or
                       difflib.get_close_matches(module_name.lower(), [p.rstrip(":")], cutoff=0.6)), None)
        fix = (f"did you mean '{prefix}{attr}'? (the prefix is '{prefix}', in lower case)" if prefix is not None else
               "make it importable (install the package or add its folder to PYTHONPATH)")
        raise UserError(f"cannot import module '{module_name}' of model '{name}' ({type(exc).__name__}: {exc})",
                        fix) from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)  # type: ignore[assignment]
        if factory is None:
            close = difflib.get_close_matches(part, [n for n in dir(module) if not n.startswith("_")], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "name a function or class that builds the model"
            raise UserError(f"module '{module_name}' has no '{attr}'", hint)
    if not callable(factory):
        raise UserError(f"'{name}' is not callable", "name a function or class that builds the model")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "num_classes" not in params and not var_kw:
        raise UserError(f"factory '{name}' takes no num_classes argument",
                        "give it a num_classes parameter (the classifier's outputs)")
    takes_resolution = "resolution" in params
    needs = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in
             ("num_classes", "resolution") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if needs:
        raise UserError(f"factory '{name}' needs argument(s) {', '.join(needs)} that the toolkit cannot give "
                        "(it passes num_classes, and resolution when taken)",
                        f"give {', '.join(needs)} a default, or wrap the factory in one that takes only num_classes")

    def builder(num_classes: int, resolution: int) -> nn.Module:
        kwargs = {"num_classes": num_classes, **({"resolution": resolution} if takes_resolution else {})}
        try:
            model = factory(**kwargs)
        except UserError:
            raise
        except Exception as exc:  # the factory's own error, or arguments it needs that we cannot give
            reason = brief(exc, 160)
            raise UserError(f"factory '{name}' failed when called with {', '.join(f'{k}={v}' for k, v in kwargs.items())} "
                            f"({type(exc).__name__}: {reason})", "fix the factory's own error, then run again") from None
        if isinstance(model, tuple) and any(isinstance(m, nn.Module) for m in model):
            raise UserError(f"factory '{name}' returned a tuple, not one nn.Module",
                            "return only the model (e.g. `return model`, not `return model, transforms`)")
        if not isinstance(model, nn.Module):
            raise UserError(f"factory '{name}' returned a {type(model).__name__}, not an nn.Module",
                            "return the model (a torch.nn.Module)")
        check_parameters(name, model)
        return model

    native = int(getattr(factory, "native_resolution", USER_DEFAULT_RESOLUTION))
    doc = (inspect.getdoc(factory) or "").split("\n")[0]
    return ModelSpec(name, builder, native, "user", doc or f"user model {name}")


def check_parameters(name: str, model: nn.Module) -> None:
    """A user's model the toolkit can train: every parameter sized (no Lazy module left uninitialised) and float32
    (training, masks and export work in float32; a half model failed at its first forward with a dtype traceback)."""
    for param_name, param in model.named_parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise UserError(f"factory '{name}' returned a model whose parameter '{param_name}' is not initialised "
                            "(a Lazy module)", "give the layer its sizes (e.g. nn.Linear, not nn.LazyLinear)")
        if param.is_floating_point() and param.dtype != torch.float32:
            raise UserError(f"factory '{name}' returned a model whose parameter '{param_name}' is {param.dtype}, "
                            "not torch.float32", "return the model in float32 (drop .half() or .to(dtype))")


def model_spec(name: str) -> ModelSpec:
    """The zoo entry for `name` (or a built-in detector's, or a user's ``package.module:factory``), or a UserError
    with the closest names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    # built-in detectors: by name, outside the classifiers' listing
    from iee_deploy.models.detectors import DETECTORS, detector_spec

    detector = detector_spec(name)
    if detector is not None:
        return detector
    from iee_deploy.models import external  # imports timm / transformers only for their names

    if external.is_external(name):
        return external.external_spec(name)
    if ":" in name:
        return _user_spec(name)
    close = difflib.get_close_matches(name, [*_REGISTRY, *DETECTORS], n=3)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "list the zoo with `iee-deploy models`, use timm:NAME or hf:CONFIG, or name your own factory as "
                 "package.module:factory")
    raise UserError(f"unknown model '{name}'", hint)


FAMILIES = ("torchvision", "paper", "timm", "hf")
"""The families of models `list_models` filters on: the zoo's own two and the two outside libraries."""


def list_models(pattern: str | Sequence[str] | None = None, family: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` filters with shell globs ('resnet*', ['vit_*', 'swin_*']).

    A ``timm:GLOB`` pattern lists timm's models (``timm.list_models(GLOB)``), ``hf:GLOB`` the
    transformers configs with an image-classification head; `family` "timm" or "hf" alone lists all of them.
    """
    from iee_deploy.models import external

    known = dict.fromkeys([*FAMILIES, *(spec.family for spec in _REGISTRY.values())])
    if family is not None and family not in known:
        raise UserError(f"unknown model family {family!r}", f"choose one of: {', '.join(known)} (or none for all)",
                        fields=("family",))
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    if family in ("timm", "hf") and not patterns:
        patterns = [f"{family}:*"]
    outside = [p for p in patterns if external.is_external(p)]
    own = [p for p in patterns if p not in outside]
    names = [] if outside and not own else sorted(
        name for name, spec in _REGISTRY.items()
        if (not own or any(fnmatch.fnmatchcase(name, p) for p in own)) and (family is None or spec.family == family))
    for p in outside:
        if family is None or p.startswith(f"{family}:"):
            names += [n for n in external.list_external(p) if n not in names]
    return names
