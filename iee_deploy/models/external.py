"""Models of timm and Hugging Face transformers by the names users type: ``timm:NAME`` and ``hf:CONFIG_OR_CLASS``.

- ``timm:resnet50`` is ``timm.create_model("resnet50", pretrained=False, num_classes=..., img_size=...)``
  (``img_size`` for the models that take one). Nothing is downloaded: the native resolution is
  the ``input_size`` of timm's pretrained config, read from timm's tables.
- ``hf:ViTConfig`` builds the class ``AutoModelForImageClassification`` maps the config to
  (``ViTForImageClassification(ViTConfig(...))``) offline;
  ``hf:ViTForImageClassification`` builds that class from its ``config_class``. ``num_labels`` is set
  to ``num_classes`` and ``image_size`` (where the config has one) to the resolution. The model is
  wrapped in `HFLogits`, whose forward returns the logits tensor: its state_dict keys are the
  transformers model's under the prefix ``hf.`` (``hf.vit.embeddings.cls_token``, ...).
- Overrides: ``NAME(key=value, ...)`` passes Python literals to ``timm.create_model`` (e.g.
  ``timm:vit_tiny_patch16_224(depth=2)``) or sets config fields (e.g.
  ``hf:ViTConfig(hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128)``);
  quote the name in a shell.

A resolution is checked before any real work: against the patch size (models with a position
embedding built for ``img_size``/``image_size`` take multiples of it), then by building the model on
PyTorch's meta device and running one forward pass there (shapes only, no memory, no compute).

timm and transformers are optional extras (``pip install 'iee-deploy[timm]'``, ``'iee-deploy[hf]'``),
imported only when such a name is used.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import functools
import importlib
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.models.registry import ModelSpec

PREFIXES = {"timm:": "timm", "hf:": "transformers"}
"""Name prefix -> the package that builds such models."""
_EXTRA = {"timm": "timm", "transformers": "hf"}
DEFAULT_RESOLUTION = 224
"""Native resolution of a model whose tables state none."""
_NAME = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\((.*)\))?$", re.S)


def similar_names(name: str, names: list[str], n: int = 3) -> list[str]:
    """Up to `n` of `names` like `name`: those equal but for case first ('vitconfig' is ViTConfig), then difflib's
    closest, compared in lower case (difflib alone ranks LevitConfig above ViTConfig for 'vitconfig')."""
    lower: dict[str, str] = {}
    for candidate in names:
        lower.setdefault(candidate.lower(), candidate)
    same = [candidate for candidate in names if candidate.lower() == name.lower()]
    close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=n)]
    return list(dict.fromkeys([*same, *close]))[:n]


def is_external(name: str) -> bool:
    """Whether `name` is a ``timm:`` or ``hf:`` name."""
    return name.startswith(tuple(PREFIXES))


def _package(name: str) -> ModuleType:
    """Import timm or transformers, or a one-line UserError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"{name} is not installed", f"pip install 'iee-deploy[{_EXTRA[name]}]'") from None


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """'vit_tiny(depth=2, drop_rate=0.1)' -> ('vit_tiny', {'depth': 2, 'drop_rate': 0.1}); literals only."""
    match = _NAME.match(name.strip())
    if not match:
        raise UserError(f"model name '{name}' is not NAME or NAME(key=value, ...)", "e.g. timm:resnet50 or "
                        "hf:ViTConfig(num_hidden_layers=2)")
    base, args = match.group(1), match.group(2)
    if not args or not args.strip():
        return base, {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        return base, {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
    except (SyntaxError, ValueError, AssertionError):
        raise UserError(f"cannot read the overrides '({args})' of model '{name}'",
                        "write key=value pairs of Python literals, e.g. (depth=2, drop_rate=0.1)") from None


def check_reserved(name: str, overrides: dict[str, Any], reserved: dict[str, tuple[str, str]]) -> None:
    """Refuse an override the tool sets itself ({key: (the field that sets it, how)}): the builder's own value
    would clash with it ("got multiple values for keyword argument") or silently replace it."""
    key = next((k for k in overrides if k in reserved), None)
    if key is not None:
        field, fix = reserved[key]
        raise UserError(f"model '{name}' sets '{key}', which the tool sets itself", fix, fields=("model", field))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0]
    return f"{type(exc).__name__}: {text}"[:200]


def _meta_probe(build: Callable[[int], nn.Module]) -> Callable[[int], str | None]:
    """A check that `build(resolution)` takes resolution x resolution images: one forward pass on the meta device.

    Returns the first line of the error, or None when it runs (or when the meta device itself cannot
    run the model: then the real build is the check).
    """

    def probe(resolution: int) -> str | None:
        try:
            with torch.device("meta"), torch.no_grad():
                build(resolution).eval()(torch.empty(1, 3, resolution, resolution))
        except ImportError as exc:  # a package the model needs, whatever the size
            raise UserError(f"the model needs a package that is not installed ({_first_line(exc)})",
                            "install it") from None
        except Exception as exc:  # any error of the model's own code at this size
            if "meta" in str(exc).lower() or isinstance(exc, NotImplementedError):
                return None
            return _first_line(exc)
        return None

    return probe


# ----------------------------------------------------------------------------------------------- timm


def _timm_names() -> list[str]:
    return list(_package("timm").list_models())


def _timm_native(timm: ModuleType, base: str) -> int:
    cfg = timm.models.get_pretrained_cfg(base)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else DEFAULT_RESOLUTION


def _takes_img_size(timm: ModuleType, base: str, overrides: dict[str, Any], native: int) -> tuple[bool, int]:
    """Whether timm's `base` takes `img_size` and its patch size (1 when it has none), from a meta-device build."""
    def meta(**kwargs: Any) -> nn.Module:
        with torch.device("meta"):
            return timm.create_model(base, pretrained=False, num_classes=1, **overrides, **kwargs)

    try:
        model = meta(img_size=native)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise UserError(f"timm model '{base}' cannot be built with {overrides} ({_first_line(exc)})",
                            "pass only arguments its constructor takes") from None
        meta()  # an override it does not take is reported as above
        return False, 1
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch = patch[0]
    return True, int(patch) if isinstance(patch, int) else 1


def timm_spec(name: str, inspect: bool = True) -> ModelSpec:
    """The spec of ``timm:NAME[(overrides)]``; `inspect` builds it on the meta device to learn its patch size
    (else on the first build: a listing builds nothing)."""
    timm = _package("timm")
    base, overrides = parse_name(name.removeprefix("timm:"))
    check_reserved(name, overrides, {
        "pretrained": ("init_checkpoint", "models are built offline with random weights: load trained ones with "
                                          "`init_checkpoint`"),
        "num_classes": ("num_classes", "give the class count as `num_classes`"),
        "img_size": ("resolution", "give the input size as `resolution`")})
    if not timm.is_model(base):
        close = similar_names(base, _timm_names())
        raise UserError(f"unknown timm model '{base}'", f"did you mean {', '.join(close)}?" if close
                        else "list them with `iee-deploy models 'timm:PATTERN'`, e.g. 'timm:resnet*'")
    native = _timm_native(timm, base)
    shape = functools.cache(lambda: _takes_img_size(timm, base, overrides, native))
    patch = shape()[1] if inspect else 1

    def builder(num_classes: int, resolution: int) -> nn.Module:
        size = {"img_size": resolution} if shape()[0] else {}
        model: nn.Module = timm.create_model(base, pretrained=False, num_classes=num_classes, **overrides, **size)
        return model

    return ModelSpec(name, builder, native, "timm", f"timm {base}, random init", min_resolution=patch,
                     resolution_step=patch, probe=_meta_probe(lambda r: builder(10, r)))


# ------------------------------------------------------------------------------------------ transformers


class HFLogits(nn.Module):
    """A transformers image classifier whose forward returns the logits tensor (its output's `.logits`).

    The rest of the toolkit expects a tensor, not a ModelOutput. The wrapped model is `self.hf`, so
    every state_dict key is the transformers model's own with the prefix ``hf.``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.hf(pixel_values=x).logits
        return logits


def _classification_configs(transformers: ModuleType) -> dict[str, str]:
    """Config class name -> the image-classification model class AutoModelForImageClassification builds from it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    found = {}
    for model_type, model_class in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items():
        config = CONFIG_MAPPING_NAMES.get(model_type)
        classes = model_class if isinstance(model_class, (tuple, list)) else (model_class,)
        if config and hasattr(transformers, config):
            found[config] = classes[0]
    return found


def _config_value(value: Any, resolution: int) -> Any:
    """`resolution` in the form of the config's own image_size (an int, or a pair)."""
    return [resolution, resolution] if isinstance(value, (list, tuple)) else resolution


def hf_spec(name: str, inspect: bool = True) -> ModelSpec:
    """The spec of ``hf:CONFIG_OR_CLASS[(config overrides)]``; `inspect` also checks the overrides' field names."""
    transformers = _package("transformers")
    base, overrides = parse_name(name.removeprefix("hf:"))
    check_reserved(name, overrides, {"num_labels": ("num_classes", "give the class count as `num_classes`")})
    heads = _classification_configs(transformers)
    obj = getattr(transformers, base, None) if base.isidentifier() else None
    if obj is None or not isinstance(obj, type):
        close = similar_names(base, [*heads, *heads.values()])
        raise UserError(f"unknown transformers config or model class '{base}'", f"did you mean {', '.join(close)}?"
                        if close else "list the image classifiers with `iee-deploy models 'hf:*'`")
    config_cls: type = obj
    model_cls: Any = None
    if not issubclass(obj, transformers.PretrainedConfig):
        config_cls = getattr(obj, "config_class", None)  # type: ignore[assignment]
        if config_cls is None:
            raise UserError(f"'{base}' is neither a transformers config nor a model class",
                            "name a config (hf:ViTConfig) or a model class (hf:ViTForImageClassification)")
        model_cls = obj
    elif base not in heads:
        raise UserError(f"transformers config '{base}' has no image-classification head",
                        "name a config of an image classifier (list them with `iee-deploy models 'hf:*'`)")
    if inspect:
        fields = config_cls().to_dict()
        for key in overrides:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=3)
                raise UserError(f"{config_cls.__name__} has no field '{key}'",
                                f"did you mean {', '.join(close)}?" if close else "name fields of the config")
    default = config_cls(**overrides)
    size = getattr(default, "image_size", None)
    native = int(size[0] if isinstance(size, (list, tuple)) else size) if size else DEFAULT_RESOLUTION
    patch = getattr(default, "patch_size", None) if size else None
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch) if isinstance(patch, (int, list, tuple)) else 1
    if native % patch and {"image_size", "patch_size"} & set(overrides):  # its own size cannot be cut into patches
        raise UserError(f"{config_cls.__name__}'s `image_size` {native} is not a multiple of its `patch_size` {patch}, "
                        "so the config cannot run at its own size",
                        "set `image_size` to a multiple of `patch_size` or a `patch_size` that divides `image_size`",
                        fields=("model",))

    def builder(num_classes: int, resolution: int) -> nn.Module:
        config = config_cls(**overrides)
        config.num_labels = num_classes
        if size is not None:
            config.image_size = _config_value(size, resolution)
        return HFLogits(model_cls(config))

    if model_cls is None:  # the class AutoModelForImageClassification maps the config to (its first, for LeViT)
        model_cls = getattr(transformers, heads[base])
    head = model_cls.__name__
    return ModelSpec(name, builder, native, "hf", f"transformers {head}, random init", min_resolution=patch,
                     resolution_step=patch, probe=_meta_probe(lambda r: builder(10, r)))


# ------------------------------------------------------------------------------------------------ both


@functools.lru_cache(maxsize=32)
def external_spec(name: str, inspect: bool = True) -> ModelSpec:
    """The spec of a ``timm:`` or ``hf:`` name (cached: the CLI asks once to check, once to build)."""
    return timm_spec(name, inspect) if name.startswith("timm:") else hf_spec(name, inspect)


def list_external(pattern: str) -> list[str]:
    """``timm:`` names matching a ``timm:GLOB`` (timm.list_models), or ``hf:`` config names matching ``hf:GLOB``."""
    if pattern.startswith("timm:"):
        return [f"timm:{n}" for n in _package("timm").list_models(pattern.removeprefix("timm:") or "*")]
    heads = _classification_configs(_package("transformers"))
    return sorted(f"hf:{n}" for n in heads if fnmatch.fnmatchcase(n, pattern.removeprefix("hf:") or "*"))
