"""The operations the dependency graph understands, and how each one treats channels.

Every traced operation gets one *category*; the channel analysis (`channels.py`) has one rule per
category. An operation missing from these tables is refused with a `UserError` naming it and its
module, because guessing (Torch-Pruning treats unknown ops as element-wise) can silently couple the
wrong channels. Users can declare their own functions with `register_op`.

Categories:
- ``conv`` / ``linear``: layers with weights (nn.Conv*, nn.ConvTranspose*, nn.Linear); their output
  channels are new, their input channels are consumed (a grouped or depthwise conv also ties each
  group's input channels to its output channels). The functional forms called on such a layer's own
  parameters (timm's Linear, StdConv2d) are that layer (`layer_calls.py`).
- ``bn``: per-channel affine normalisation (BatchNorm, and F.batch_norm on a BatchNorm's own
  parameters, as timm's BatchNormAct2d calls it); its gamma/beta give Taylor importance.
- ``pointwise``: same shape out, channel c depends only on channel c (activations, dropout, copies).
- ``elementwise``: several tensors broadcast together (add, mul): equal positions are coupled.
- ``spatial``: per-channel ops that change the other dimensions (pooling, interpolation, padding).
- ``movement``: rearranges elements (view, flatten, transpose, cat, chunk, indexing); applied to
  channel ids so that concat offsets, flatten spans and channel shuffles come out exactly.
- ``reduce``: reduces or normalises along given dims (mean, sum, softmax); per-channel unless the dims
  cross channels, in which case every channel involved is fixed (never pruned).
- ``norm``: normalises across the given dims (LayerNorm over channels, also channels-last as in Swin
  and ConvNeXt's LayerNorm2d, F.group_norm, F.normalize). Removing a channel there changes the statistics
  of the kept ones, which zeroing it would not, so the channels normalised together are fixed (never
  pruned); a norm over dims that hold one channel each (e.g. spatial) is per-channel. The nn.GroupNorm
  module is the exception: its groups are normalised apart, so each group is one unit, pruned whole.
- ``attention``: a multi-head attention module the graph knows (nn.MultiheadAttention, torchvision's
  Swin ShiftedWindowAttention and V2, MaxViT's attention, and their pruned forms): its heads, or the
  same dims of every head, are channel units (see `attention.py`). A configuration it does not support
  is kept whole.
- ``mixing``: every output may depend on every channel of every tensor operand in ways the graph does
  not follow (matmul/einsum and scaled_dot_product_attention outside those modules): the channels of
  all operands and outputs are fixed. It is the safe declaration for an op you cannot classify.
- ``constant``: creates a tensor whose values do not depend on the model input (torch.zeros with a shape
  read from the input, arange, eye), or any op computed from such tensors and parameters alone: its
  channels are fixed where they meet the model's.
- ``meta``: returns sizes, ranks, integer arithmetic or assertions, no tensor data.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph.attention import ATTENTION_MODULES

Category = Literal["conv", "linear", "bn", "pointwise", "elementwise", "spatial", "movement", "reduce", "norm",
                   "attention", "mixing", "constant", "meta"]
CATEGORIES: tuple[str, ...] = ("pointwise", "elementwise", "spatial", "movement", "reduce", "norm", "mixing", "constant",
                               "meta")
"""The categories `register_op` accepts (layers must be nn.Conv*/nn.Linear/nn.BatchNorm* modules)."""

_MODULES: dict[type[nn.Module], Category] = {
    nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv", nn.ConvTranspose2d: "conv", nn.ConvTranspose3d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn", nn.BatchNorm3d: "bn", nn.SyncBatchNorm: "bn",
    **{cls: "pointwise" for cls in (
        nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
        nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d,
        nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)},
    **{cls: "spatial" for cls in (
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
        nn.ZeroPad2d, nn.ConstantPad2d)},
    nn.Flatten: "movement",
    nn.Softmax: "reduce", nn.LogSoftmax: "reduce",
    nn.LayerNorm: "norm", nn.GroupNorm: "norm",
    # recurrent layers and im2col mix every input feature into every output: their channels are kept
    **{cls: "mixing" for cls in (nn.LSTM, nn.GRU, nn.RNN, nn.Unfold, nn.Fold)},
    **{cls: "attention" for cls in ATTENTION_MODULES},
}

_FUNCTIONS: dict[Any, tuple[str, Category]] = {}
_METHODS: dict[str, tuple[str, Category]] = {}


def _add(category: Category, functions: tuple[Any, ...] = (), methods: tuple[str, ...] = ()) -> None:
    for fn in functions:
        _FUNCTIONS[fn] = (getattr(fn, "__name__", str(fn)).strip("_"), category)
    for name in methods:
        _METHODS[name] = (name.strip("_").removesuffix("_"), category)


_add("pointwise",
     (F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.hardtanh, F.silu, F.gelu, F.hardswish, F.hardsigmoid,
      F.sigmoid, torch.sigmoid, F.tanh, torch.tanh, F.leaky_relu, F.elu, F.selu, F.mish, F.softplus, F.dropout,
      F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.abs, torch.exp, torch.sqrt, torch.clamp,
      torch.neg, operator.neg, operator.pos),
     ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "detach", "float", "abs",
      "exp", "sqrt", "neg", "clamp", "clamp_", "clamp_min", "clamp_min_", "__neg__", "__pos__"))
_add("elementwise",
     (operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul, operator.truediv,
      operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.where,
      operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, torch.eq, torch.ne, torch.lt,
      torch.le, torch.gt, torch.ge),
     ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__iadd__", "__radd__", "__sub__",
      "__isub__", "__rsub__", "__mul__", "__imul__", "__rmul__", "__truediv__", "__itruediv__", "__rtruediv__",
      "eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"))
_add("spatial",
     (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
      F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d,
      F.max_pool2d, F.max_pool3d, F.interpolate, F.pad))
_add("movement",
     (torch.flatten, torch.cat, torch.concat, torch.concatenate, torch.stack, torch.transpose, torch.permute,
      torch.reshape, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, torch.unbind, operator.getitem),
     ("view", "reshape", "flatten", "transpose", "permute", "chunk", "split", "squeeze", "unsqueeze", "expand",
      "repeat", "unbind", "__getitem__", "roll"))
_add("movement", (torch.roll, torch.swapaxes, torch.swapdims), ("swapaxes", "swapdims"))
# shapes taken from another traced tensor: they follow its pruned sizes, as sizes read with x.size() do
_add("movement", methods=("reshape_as", "view_as", "expand_as"))
_add("movement", (torch.repeat_interleave, torch.tile, torch.narrow, torch.select, torch.flip),
     ("repeat_interleave", "tile", "unfold", "narrow", "select", "flip"))
_add("norm", (F.layer_norm, F.group_norm, F.normalize, F.rms_norm))
_add("pointwise",  # same shape as the input, values independent of which channel they sit in
     (torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
      torch.rsqrt, torch.log, torch.sin, torch.cos, torch.erf, torch.reciprocal, torch.square, torch.sign,
      torch.floor, torch.round, torch.nan_to_num, operator.invert, torch.logical_not, F.logsigmoid, F.softsign, F.tanhshrink, F.threshold),
     ("type_as", "to", "half", "double", "bool", "rsqrt", "log", "sin", "cos", "erf", "reciprocal", "square", "sign",
      "floor", "round", "__invert__", "logical_not", "exp_", "sqrt_", "nan_to_num"))
_add("elementwise",
     (torch.pow, operator.pow, torch.addcmul, torch.addcdiv, torch.lerp, torch.logical_and, torch.logical_or,
      operator.and_, operator.or_, torch.clamp_min, torch.clamp_max),
     ("pow", "__pow__", "__rpow__", "addcmul", "addcdiv", "lerp", "masked_fill", "masked_fill_", "__and__",
      "__or__", "logical_and", "logical_or", "clamp_max", "clamp_max_", "where"))
_add("constant",
     (torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.linspace, torch.eye, torch.tensor,
      torch.rand, torch.randn, torch.as_tensor),
     ("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"))
# The functional forms of the layers: a call on the parameters of an nn layer of the matching class (a
# subclass whose forward calls them, as timm's BatchNormAct2d, Linear and StdConv2d do) becomes that
# layer's node; any other call is refused or, on parameters alone, pinned (see layer_calls.py).
_add("conv", (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d))
_add("linear", (F.linear,))
_add("bn", (F.batch_norm,))
_add("mixing", (torch.matmul, operator.matmul, torch.bmm, torch.einsum, F.scaled_dot_product_attention),
     ("matmul", "bmm", "__matmul__"))
# an in-place write x[index] = y: later reads of x do not see it, so the channels of both are kept
_add("mixing", (operator.setitem,), ("__setitem__",))
_add("mixing", (F.unfold, F.fold))
_add("reduce",
     (torch.mean, torch.sum, torch.amax, torch.amin, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
      torch.var, torch.std, torch.norm, torch.linalg.vector_norm, torch.logsumexp, torch.max, torch.min),
     ("mean", "sum", "amax", "amin", "softmax", "log_softmax", "var", "std", "norm", "logsumexp", "max", "min"))
_add("meta", (getattr, len, operator.floordiv, operator.mod, torch._assert),
     ("size", "dim", "numel", "__len__", "__format__", "__bool__"))

try:  # torchvision marks stochastic_depth as an fx leaf function; it scales whole samples (per channel safe)
    from torchvision.ops import stochastic_depth

    _add("pointwise", (stochastic_depth,))
    from torchvision.models import swin_transformer as _swin

    # torchvision marks these fx leaf functions: patch merging's channels-last pad and 4-way concat, and
    # the attention kernel and relative position bias, met only when called outside ShiftedWindowAttention
    # (that module is itself one traced op of category "attention").
    _add("mixing", (_swin.shifted_window_attention, _swin._get_relative_position_bias, _swin._patch_merging_pad))
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def register_op(target: Callable[..., Any] | str | type[nn.Module], category: Category) -> None:
    """Declare how a custom function, Tensor method name or parameter-free module treats channels.

    Use it for an op the graph refuses, once you know which category it belongs to; e.g.
    ``register_op(my_swish, "pointwise")`` for an activation acting on each channel alone, or
    ``register_op(my_attention, "mixing")`` to keep every channel it touches (always safe). The
    categories are listed in this module's docstring. Modules outside torch.nn are traced through,
    so declare the functions their forward calls; a whole module can be declared only as a
    parameter-free per-channel op ("pointwise", "spatial") or as "mixing".
    """
    if category not in CATEGORIES:
        raise UserError(f"cannot register an op as '{category}'", f"choose one of: {', '.join(CATEGORIES)}")
    if isinstance(target, str):
        if not callable(getattr(torch.Tensor, target, None)):
            raise UserError(f"torch.Tensor has no method '{target}' to register", "give a Tensor method's name, e.g. "
                            "'my_op' as x.my_op(...) calls it, or register the function itself", fields=("target",))
        _METHODS[target] = (target, category)
    elif isinstance(target, type) and issubclass(target, nn.Module):
        if category not in ("pointwise", "spatial", "mixing"):
            raise UserError(f"a module can be registered as pointwise, spatial or mixing, not '{category}'",
                            "register the functions its forward calls instead (modules outside torch.nn are "
                            "traced through)")
        known = next((cls for cls in target.__mro__ if cls in _MODULES and _MODULES[cls] in ("conv", "linear", "bn",
                                                                                            "norm", "attention")), None)
        if known is not None:  # declared parameter-free, its weights would never be sliced: every graph wrong
            raise UserError(f"{target.__name__} is a {known.__module__}.{known.__name__}, a layer with weights the graph "
                            f"prunes itself: it cannot be declared '{category}'",
                            "leave it to the graph; register only parameter-free modules", fields=("target",))
        _MODULES[target] = category
    elif callable(target) and not isinstance(target, nn.Module):
        _FUNCTIONS[target] = (getattr(target, "__name__", str(target)), category)
    else:  # a number, or a module instance (its class is what the graph meets)
        instance = isinstance(target, nn.Module)
        raise UserError(f"cannot register {target!r:.60}: an op is a function, a Tensor method's name or a module class",
                        f"register its class, {type(target).__name__}" if instance else
                        "pass e.g. my_swish, 'my_method' or MyModule", fields=("target",))


def makes_data(op: str, category: Category | None, first_reads_data: bool) -> bool:
    """Whether an op that reads the model input computes from it: not a constant (x.new_zeros(...)), and
    x.type_as(y) / x.to(y) take only a dtype and device from y."""
    if category == "constant":
        return False
    return first_reads_data if op in ("type_as", "to") else True


_NORM_ACTS = frozenset({"timm.layers.norm_act.BatchNormAct2d", "timm.layers.norm_act.SyncBatchNormAct"})
"""Subclasses of a torch.nn batch norm whose forward is known to be that norm on their own parameters and buffers,
then their children in turn (timm's BatchNormAct2d and SyncBatchNormAct: batch norm, dropout, activation). Named, not
imported, so that the graph never imports timm."""

PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                                             nn.AlphaDropout)
"""Layers that return their input's channels unchanged, one for one (as identities to the channels): the tracer
passes their input on without recording them, as they couple no channels and hold no weights."""


def is_norm_act(module: nn.Module) -> bool:
    """Whether `module` is a batch norm followed only by per-channel, parameter-free layers (a `_NORM_ACTS` class
    whose children are all such layers): the graph then takes it as one op of category ``bn``, which is what it
    computes for the channels, instead of tracing its ten or so calls (a third of a timm CNN's trace). Any other
    child (an activation with a weight per channel, an unknown layer) leaves it traced through."""
    kind = type(module)
    if f"{kind.__module__}.{kind.__qualname__}" not in _NORM_ACTS:
        return False
    return all(not _holds_tensors(child) and _category(child) == "pointwise" for child in module.children())


def _holds_tensors(module: nn.Module, buffers: bool = True) -> bool:
    """Whether `module` or a module inside it holds a parameter, or (`buffers`) a buffer: its own dicts read directly,
    without nn.Module's generators (this runs for every activation and norm-and-activation layer at every trace)."""
    return (any(t is not None for t in module._parameters.values())
            or buffers and any(t is not None for t in module._buffers.values())
            or any(child is not None and _holds_tensors(child, buffers) for child in module._modules.values()))


def is_declared_leaf(module: nn.Module) -> bool:
    """Whether a module outside torch.nn is one traced op, not traced through: declared with `register_op`,
    an attention module listed here (torchvision's Swin attention, the pruned attention modules), or a known
    norm-and-activation layer (`is_norm_act`)."""
    return type(module) in _MODULES and not type(module).__module__.startswith("torch.nn") or is_norm_act(module)


def _unsupported(what: str, where: str) -> UserError:
    return UserError(
        f"the dependency graph does not support {what} in module {where}: it cannot tell which channels it couples",
        "rewrite it with supported ops, or declare it with iee_deploy.graph.register_op(op, category) "
        f"(categories: {', '.join(CATEGORIES)})",
    )


def describe(fn: Any) -> str:
    """A readable name for a traced function (e.g. 'torch.cumsum', 'operator.add')."""
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if module in ("", "builtins", "torch._C._VariableFunctions") or name.startswith("_VariableFunctionsClass"):
        module = "torch" if "VariableFunctions" in name or module.startswith("torch") else module
        name = getattr(fn, "__name__", name)
    if module == "_operator":
        module = "operator"
    return f"{module}.{name}" if module else name


def _category(module: nn.Module) -> Category | None:
    """The category of the nearest class of `module` the tables know (None: none of them)."""
    return next((_MODULES[cls] for cls in type(module).__mro__ if cls in _MODULES), None)


def classify_module(module: nn.Module, where: str) -> Category:
    """Category of a leaf module, or a UserError naming its type and path."""
    category = _category(module)
    if category is None:
        raise _unsupported(f"layer {type(module).__module__}.{type(module).__name__}", where)
    if category in ("pointwise", "spatial") and _holds_tensors(module, buffers=False):
        raise UserError(f"module {where} is declared {category} (register_op), but it holds parameters, which the graph "
                        "would never slice", f"register {type(module).__name__} as 'mixing' (its channels kept), or "
                        "declare the functions its forward calls instead", fields=("target",))
    return category


def classify_function(fn: Any, where: str, constant: bool = False) -> tuple[str, Category]:
    """(canonical name, category) of a traced free function, or a UserError naming it and the module.

    `constant`: the call reads no model input (only parameters and constants), so an unknown function
    is a ``constant`` op rather than refused."""
    try:
        found = _FUNCTIONS.get(fn)
    except TypeError:  # unhashable callables
        found = None
    if found is None:
        if constant:
            return describe(fn), "constant"
        raise _unsupported(f"op {describe(fn)}", where)
    return found


def classify_method(name: str, where: str, constant: bool = False) -> tuple[str, Category]:
    """(canonical name, category) of a Tensor method called by name, or a UserError (`constant`: see
    `classify_function`)."""
    found = _METHODS.get(name)
    if found is None and constant:
        return name, "constant"
    if found is None:
        raise _unsupported(f"op Tensor.{name}", where)
    return found
