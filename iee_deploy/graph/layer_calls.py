"""Layers whose forward calls the functional form on their own parameters become layer nodes.

A module is classified by what it computes, not by its class name. timm's BatchNormAct2d subclasses
nn.BatchNorm2d and calls ``F.batch_norm`` on its own running statistics and affine parameters (then an
activation); timm's Linear calls ``F.linear(x, self.weight, self.bias)``. Such a call is the layer: its
node is rewritten into the node of the enclosing nn.BatchNorm*/nn.Linear/nn.Conv*/nn.ConvTranspose*
module, so its channels are pruned like the plain layer's (the rest of its forward, the activation,
stays traced op by op).

A conv whose weight is *computed* from its own parameters (weight standardisation: timm's StdConv2d
and ScaledStdConv2d normalise each output row over its inputs, then ``F.conv2d``) is also that layer,
with its input channels pinned: a row's statistics mix its input channels, so removing one would
change the kept ones. Its output channels stay prunable only when the computation is row by row:
proved from its ops (`row_axes`: reshapes, per-channel batch norm, broadcasting arithmetic), or else
verified on the real parameters (changing one row of every per-row parameter changes that row alone);
otherwise they are pinned too, as are the outputs of a call whose bias is not the layer's own.
Every other functional layer call (a fixed filter held in a buffer, a weight computed from the input,
other groups or statistics than its module's, or the standardisation itself) is a "mixing" op: the
channels it touches are kept, which is always exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_leaves

from iee_deploy.graph.ops import Category
from iee_deploy.graph.trace import Node, Ref, Trace

_LAYERS: dict[Any, tuple[type[nn.Module], int, str]] = {
    F.conv1d: (nn.Conv1d, 1, "weight"), F.conv2d: (nn.Conv2d, 1, "weight"), F.conv3d: (nn.Conv3d, 1, "weight"),
    F.conv_transpose1d: (nn.ConvTranspose1d, 1, "weight"), F.conv_transpose2d: (nn.ConvTranspose2d, 1, "weight"),
    F.conv_transpose3d: (nn.ConvTranspose3d, 1, "weight"),
    F.linear: (nn.Linear, 1, "weight"),
    F.batch_norm: (nn.modules.batchnorm._BatchNorm, 1, "running_mean"),
}
"""Functional layer -> (its module class, position and name of the argument identifying the module)."""

_GROUPS_POSITION = {F.conv1d: 6, F.conv2d: 6, F.conv3d: 6, F.conv_transpose1d: 6, F.conv_transpose2d: 6,
                    F.conv_transpose3d: 6}


def row_parameters(module: nn.Module) -> list[str]:
    """Names of a conv/linear layer's parameters besides its weight with one row per output channel: the bias,
    and a per-channel gain such as a scaled weight-standardised conv's (the graph prunes those output
    channels only where the weight is computed row by row, see layer_calls.py)."""
    rows = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else getattr(module, "out_features", 0)
    return [name for name, p in module._parameters.items()  # the module's own, as named_parameters(recurse=False)
            if p is not None and name != "weight" and p.dim() >= 1 and p.shape[0] == rows]


def _arg(node: Node, position: int, name: str) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name)


def _owner(model: nn.Module, target: str, cls: type[nn.Module]) -> tuple[str, nn.Module] | None:
    """(path, module) when `target` names a tensor attribute of a module of class `cls`."""
    path, _, attr = target.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return (path, module) if isinstance(module, cls) and isinstance(getattr(module, attr, None), torch.Tensor) else None


def _evaluate(model: nn.Module, trace: Trace, index: int, replace: dict[str, torch.Tensor],
              memo: dict[int, Any]) -> Any:
    """The real value of node `index`, computed from the model's parameters (`replace`: path -> tensor)."""
    if index in memo:
        return memo[index]
    node = trace.nodes[index]

    def value(arg: Any) -> Any:
        if isinstance(arg, Ref):
            return _evaluate(model, trace, arg.index, replace, memo)
        if isinstance(arg, (tuple, list)):
            return type(arg)(value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: value(v) for k, v in arg.items()}
        if isinstance(arg, slice):
            return slice(value(arg.start), value(arg.stop), value(arg.step))
        return arg

    if node.kind == "attr":
        result: Any = replace.get(node.target)
        if result is None:
            result = model
            for part in node.target.split("."):
                result = getattr(result, part)
    else:
        assert node.fn is not None
        result = node.fn(*value(node.args), **value(node.kwargs))
    memo[index] = result
    return result


@torch.no_grad()
def _row_wise(model: nn.Module, trace: Trace, index: int, path: str, module: nn.Module) -> bool:
    """Whether the weight computed at node `index` depends on the module's parameters row by row:
    perturbing row r of every parameter with one row per output channel changes row r alone."""
    weight = module.get_parameter("weight")
    rows = int(weight.shape[0])
    per_row = {f"{path}.{name}": p for name, p in module.named_parameters(recurse=False)
               if p.dim() >= 1 and p.shape[0] == rows}
    value = trace.nodes[index].value
    if isinstance(value, torch.Tensor) and value.shape == weight.shape and row_axes(trace, index, set(per_row),
                                                                                    rows) == 0:
        return True  # by construction: no evaluation (on a ResNet-50-sized BiT, three evaluations took 0.4 s)
    base = _evaluate(model, trace, index, {}, {})
    if not isinstance(base, torch.Tensor) or base.shape != weight.shape:
        return False
    gen = torch.Generator().manual_seed(0)
    for r in sorted({0, rows - 1}):
        replace = {}
        for name, p in per_row.items():
            q = p.detach().clone()
            q[r] += torch.randn(q[r].shape, generator=gen, dtype=q.dtype) + 1.0
            replace[name] = q
        changed = (_evaluate(model, trace, index, replace, {}) != base).reshape(rows, -1).any(1)
        changed[r] = False
        if bool(changed.any()):
            return False
    return True


_REGROUPS = frozenset(("reshape", "view", "flatten", "squeeze", "unsqueeze", "reshape_as", "view_as"))
"""Movement ops that keep the elements' row-major order (only the shape changes): a row axis survives them."""


class _Unproven(Exception):
    """An op `row_axes` has no rule for, or a row axis an op mixes."""


def row_axes(trace: Trace, index: int, per_row: set[str], rows: int) -> int | None:
    """The dim of node `index`'s value indexed by the output row, where the value is computed row by row from the
    `per_row` parameters (targets whose dim 0 is the row) by construction; None where that is not proven.

    The rules, per op: a regrouping reshape keeps the row axis where the elements before it number the same; a
    pointwise or broadcasting elementwise op keeps it where every row input's row axis lands on the same output
    dim; F.batch_norm normalises each dim-1 channel alone (per-channel statistics and affine parameters); a size
    read carries no row. Any other op on a row-dependent tensor leaves it unproven (`_row_wise` then checks
    numerically). Exact for weight standardisation (timm's StdConv2d and ScaledStdConv2d, BiT's
    WeightStandardizedConv2d): a reshape to (1, rows, -1), F.batch_norm over dim 1, a reshape back."""
    axes: dict[int, int | None] = {}  # node -> its row axis; None: independent of the row parameters
    try:
        for i in sorted(_ancestors(trace, index)):
            node = trace.nodes[i]
            if node.kind == "attr":
                axes[i] = 0 if node.target in per_row else None
            elif all(axes[j] is None for j in node.inputs):
                axes[i] = None
            elif isinstance(node.value, torch.Tensor):
                axes[i] = _row_axis(trace, node, axes, rows)
            elif any(isinstance(v, torch.Tensor) for v in tree_leaves(node.value)):
                raise _Unproven  # tensors in a tuple (var_mean's, a chunk's): no rule follows them
            else:
                axes[i] = None  # a size read is no value of the rows
    except _Unproven:
        return None
    return axes[index]


def _row_axis(trace: Trace, node: Node, axes: dict[int, int | None], rows: int) -> int:
    """The row axis of `node`'s tensor value from its inputs' (`axes`, one at least not None); `_Unproven`
    where no rule proves one."""
    carried: list[tuple[int, torch.Size, int]] = []  # (argument position, shape, row axis) of each row input
    for position, a in enumerate((*node.args, *node.kwargs.values())):
        if isinstance(a, Ref) and (axis := axes[a.index]) is not None:
            carried.append((position, trace.nodes[a.index].value.shape, axis))
    if len(carried) != sum(axes[j] is not None for j in node.inputs):
        raise _Unproven  # a row input inside a list or dict argument
    out = node.value.shape
    if node.category == "movement" and node.op in _REGROUPS:
        # reshape_as/view_as read their second argument's shape alone
        position, shape, row = carried[0]
        if position != 0 or len(carried) > 1 and node.op not in ("reshape_as", "view_as"):
            raise _Unproven
        for b in range(len(out)):
            if out[:b].numel() == shape[:row].numel() and out[b] == rows:
                return b
    elif node.category in ("pointwise", "elementwise"):  # broadcasting aligns the trailing dims
        landed = {axis + len(out) - len(shape) for _, shape, axis in carried}
        if len(landed) == 1 and out[next(iter(landed))] == rows:
            return landed.pop()
    elif node.fn is F.batch_norm and carried[0][0] == 0 and carried[0][2] == 1 and all(
            axis == 0 and len(shape) == 1 for _, shape, axis in carried[1:]):
        return 1  # (input, running_mean, running_var, weight, bias): each dim-1 channel alone
    raise _Unproven


def _computation(trace: Trace, index: int) -> tuple[Any, ...] | None:
    """What node `index` computes from the model's tensors, by op and shape, not by which tensors: equal for
    two layers whose weights are standardised by the same code at the same shapes (every conv of a BiT or NFNet
    stage), so that `_row_wise` runs once for them. None where a constant tensor takes part (no key)."""
    ancestors = sorted(_ancestors(trace, index))
    position = {i: k for k, i in enumerate(ancestors)}

    def key(arg: Any) -> Any:
        if isinstance(arg, Ref):
            return ("ref", position[arg.index])
        if isinstance(arg, (tuple, list)):
            return (type(arg).__name__, *(key(a) for a in arg))
        if isinstance(arg, dict):
            return ("dict", *((k, key(v)) for k, v in sorted(arg.items())))
        if isinstance(arg, slice):
            return ("slice", key(arg.start), key(arg.stop), key(arg.step))
        if isinstance(arg, torch.Tensor):
            raise TypeError  # a constant tensor: its values, not only its shape, decide
        return arg

    items: list[Any] = []
    try:
        for i in ancestors:
            node = trace.nodes[i]
            if node.kind == "attr":
                value = node.value
                shape = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else None
                items.append(("attr", node.target.rpartition(".")[2], shape))
            else:
                items.append((node.kind, node.op, node.fn, key(node.args), key(node.kwargs)))
        hash(tuple(items))
    except TypeError:
        return None
    return tuple(items)


def _constant(trace: Trace) -> list[bool]:
    """Per node: whether its value is computed from parameters and constants alone (not from an input)."""
    constant: list[bool] = []
    for node in trace.nodes:
        if node.kind == "input":
            constant.append(False)
        else:
            constant.append(all(constant[i] for i in node.inputs))
    return constant


_OTHER_PARAMETERS: dict[Any, tuple[tuple[int, str], ...]] = {F.batch_norm: ((2, "running_var"), (3, "weight"), (4, "bias"))}
"""Further arguments that must be the module's own tensors for the call to be that layer (or pinned)."""


def _own(trace: Trace, arg: Any, path: str, module: nn.Module, attr: str) -> bool:
    """Whether a call argument is the module's own `attr` (None where the module has none)."""
    if arg is None:
        return getattr(module, attr, None) is None
    return isinstance(arg, Ref) and trace.nodes[arg.index].kind == "attr" and trace.nodes[arg.index].target == (
        f"{path}.{attr}" if path else attr)


def _resolve(model: nn.Module, trace: Trace, node: Node, constant: list[bool],
             row_wise: dict[tuple[Any, ...], bool]) -> Node:
    """The layer node for a functional layer call, or the call as a "mixing" op (its channels kept)."""
    kept = dataclasses.replace(node, category="mixing")
    cls, position, name = _LAYERS[node.fn]
    x = node.args[0] if node.args else node.kwargs.get("input")
    key = _arg(node, position, name)
    if not isinstance(x, Ref) or constant[x.index] or not isinstance(key, Ref):
        return kept  # on parameters alone (weight standardisation's statistics), or no tensor to identify
    pinned: tuple[str, ...] = ()
    source = trace.nodes[key.index]
    direct = source.kind == "attr" and source.target.rpartition(".")[2] == name
    owner = _owner(model, source.target, cls) if direct else None
    if owner is None and constant[key.index]:  # a computed weight: find the layer whose weight it reads
        sources = {trace.nodes[i].target for i in _ancestors(trace, key.index) if trace.nodes[i].kind == "attr"}
        owners = {o[0]: o for o in (_owner(model, t, cls) for t in sources if t.endswith(f".{name}")) if o}
        if len(owners) == 1:
            owner = next(iter(owners.values()))
            computation = _computation(trace, key.index)
            rows = row_wise.get(computation) if computation is not None else None
            if rows is None:
                rows = _row_wise(model, trace, key.index, *owner)
                if computation is not None:
                    row_wise[computation] = rows
            pinned = ("in",) if rows else ("in", "out")
    if owner is None:
        return kept  # a fixed filter (a blur kernel buffer), or a weight computed from the input (dynamic conv)
    path, module = owner
    if not all(_own(trace, _arg(node, i, attr), path, module, attr) for i, attr in _OTHER_PARAMETERS.get(node.fn, ())):
        return kept  # a batch norm with statistics or affine parameters from elsewhere
    if node.fn in _GROUPS_POSITION and (_arg(node, _GROUPS_POSITION[node.fn], "groups") or 1) != getattr(
            module, "groups", 1):
        return kept
    if node.fn is not F.batch_norm and not _own(trace, _arg(node, 2, "bias"), path, module, "bias"):
        pinned = (*pinned, "out")  # a bias from elsewhere (EVA's q/v biases) is not sliced with the rows
    category: Category = "conv" if issubclass(cls, nn.modules.conv._ConvNd) else "linear" if cls is nn.Linear else "bn"
    return Node(node.name, "module", type(module).__name__, category, (x,), {}, f"'{path}' ({type(module).__name__})",
                node.value, module=module, target=path, pinned=pinned)


def _ancestors(trace: Trace, index: int) -> set[int]:
    seen: set[int] = set()
    stack = [index]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(trace.nodes[i].inputs)
    return seen


def resolve_layer_calls(model: nn.Module, trace: Trace) -> Trace:
    """`trace` with every functional conv/linear/batch_norm call made on the parameters of a matching nn
    layer replaced by that layer's node (see the module docstring); the channels of other such calls are kept."""
    constant: list[bool] | None = None
    row_wise: dict[tuple[Any, ...], bool] = {}  # computation -> whether it is row-wise (`_computation`)
    for i, node in enumerate(trace.nodes):
        if node.kind == "call" and node.category in ("conv", "linear", "bn"):
            constant = constant or _constant(trace)
            trace.nodes[i] = _resolve(model, trace, node, constant, row_wise)
    return trace
