"""Channel masks over groups and physical pruning.

`keep` maps a group id to the indices (0 .. size-1) of the units to keep; groups not named keep
everything. `mask_model` zeroes the removed channels in place (the structured active set Theta_K as
a mask); `prune_model` builds a new, smaller model with the same forward code and the same outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph.attention import attention_layout, prune_attention, weight_names
from iee_deploy.graph.dependency import DependencyGraph
from iee_deploy.graph.layer_calls import row_parameters

Keep = Mapping[str, Sequence[int] | torch.Tensor | np.ndarray]


def unit_masks(g: DependencyGraph, keep: Keep) -> dict[str, np.ndarray]:
    """Validated boolean masks (True = kept) for the groups that lose units."""
    if not isinstance(g, DependencyGraph):
        raise UserError(f"`g` must be the model's DependencyGraph, got {type(g).__name__}",
                        "pass build_dependency_graph(model, example_input)", fields=("g",))
    if not isinstance(keep, Mapping):
        raise UserError(f"`keep` must map group ids to the unit indices to keep, got {type(keep).__name__}",
                        "pass e.g. {group.id: [0, 2, 5]} (groups left out keep every unit)", fields=("keep",))
    masks: dict[str, np.ndarray] = {}
    for gid, idx in keep.items():
        group = g.group(gid)
        values = np.asarray(idx.detach().cpu() if isinstance(idx, torch.Tensor) else idx)
        if values.dtype == bool or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
            raise UserError(f"keep for group '{gid}' must hold whole unit indices, got "
                            f"{'a boolean mask' if values.dtype == bool else f'{values.dtype} values'}",
                            "pass the indices of the units to keep (a mask m: m.nonzero())", fields=("keep",))
        if values.ndim > 1 and not (values.ndim == 2 and values.shape[1] == 1):  # m.nonzero()'s (K, 1) is one list
            raise UserError(f"keep for group '{gid}' must be one list of unit indices, got an array of shape "
                            f"{tuple(values.shape)}", "pass a flat list, e.g. [0, 2, 5]", fields=("keep",))
        kept = values.astype(np.int64).ravel()
        if kept.size and (kept.min() < 0 or kept.max() >= group.size):
            raise UserError(f"keep indices for group '{gid}' must lie in 0..{group.size - 1}",
                            "pass unit indices of that group")
        mask = np.zeros(group.size, dtype=bool)
        mask[kept] = True
        count = int(mask.sum())
        if count == group.size:
            continue
        if not group.prunable:
            raise UserError(f"group '{gid}' cannot be pruned (model input/output or pinned channels)",
                            "keep all of its units")
        if count < group.min_keep:
            raise UserError(f"group '{gid}' must keep at least {group.min_keep} of {group.size} units, got {count}",
                            "keep more units")
        masks[gid] = mask
    return masks


def removed_channels(g: DependencyGraph, masks: Mapping[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """(layer, "out" | "in" | "bn" | "attn") -> channel positions to remove, for validated unit masks
    (`unit_masks`); "attn" positions are an attention module's inner channels (head * head_dim + dim)."""
    removed: dict[tuple[str, str], list[np.ndarray]] = {}
    for gid, mask in masks.items():
        group = g.group(gid)
        for role, refs in (("out", group.owners), ("in", group.consumers), ("bn", group.bn_layers),
                           ("attn", group.attention)):
            for ref in refs:
                removed.setdefault((ref.name, role), []).append(ref.index[~mask].ravel())
    return {key: np.unique(np.concatenate(parts)) for key, parts in removed.items()}


def _removed_in(model: nn.Module, g: DependencyGraph, keep: Keep) -> dict[tuple[str, str], np.ndarray]:
    """`removed_channels` for `keep`, once `model` is checked to be a module holding every layer they name."""
    if not isinstance(model, nn.Module):
        raise UserError(f"`model` must be a torch.nn.Module, got {type(model).__name__}", "pass the model itself",
                        fields=("model",))
    if isinstance(model, torch.jit.ScriptModule):  # its layers are compiled: they cannot be sliced or swapped
        raise UserError("`model` is a TorchScript module, whose layers cannot be pruned",
                        "prune the Python model, then script (or export) the pruned one", fields=("model",))
    removed = removed_channels(g, unit_masks(g, keep))
    modules = dict(model.named_modules())
    missing = sorted({name for name, _ in removed} - modules.keys())
    if missing:
        raise UserError(f"the graph does not match `model`: it has no layer '{missing[0]}'",
                        "build the graph from this model (build_dependency_graph(model, example_input))",
                        fields=("g",))
    for name, layer in g.layers.items():  # the same names on another width (a copy built wider) would prune wrong
        module = modules.get(name)
        widths = _widths(module) if module is not None else None
        if widths is not None and widths != (layer.in_channels, layer.out_channels):
            raise UserError(f"the graph does not match `model`: its layer '{name}' is {layer.in_channels} -> "
                            f"{layer.out_channels} channels, the model's {widths[0]} -> {widths[1]}",
                            "build the graph from this model (build_dependency_graph(model, example_input))",
                            fields=("g",))
    return removed


def _widths(module: nn.Module) -> tuple[int, int] | None:
    """(input, output) channels of a conv or linear layer as the graph records them; None for other modules."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return None


def _kept(full: int, drop: np.ndarray | None) -> torch.Tensor:
    keep = np.ones(full, dtype=bool)
    if drop is not None:
        keep[drop] = False
    return torch.from_numpy(np.flatnonzero(keep))


def _select(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, sliced)


def _select_rows(module: nn.Module, out_idx: torch.Tensor) -> None:
    for name in row_parameters(module):
        _select(module, name, 0, out_idx)


def prune_model(model: nn.Module, g: DependencyGraph, keep: Keep) -> nn.Module:
    """A new model with only the kept units of each group: sliced weights, biases and BN statistics.

    The original model is left untouched; the copy keeps its class and forward code, with
    `in_channels`/`out_channels`/`groups`/`num_features`/`in_features`/`out_features` updated. An
    attention module that loses heads or head dims becomes its pruned subclass, with `num_heads` and
    `head_dim` updated (see attention.py).
    """
    removed = _removed_in(model, g, keep)
    pruned = copy.deepcopy(model)
    attention = {name: (pruned.get_submodule(name), drop) for (name, role), drop in removed.items() if role == "attn"}
    layouts = {name: attention_layout(module) for name, (module, _) in attention.items()}  # before slicing
    layers = {name for name, role in removed if role != "attn"}
    for name in sorted(layers):
        module = pruned.get_submodule(name)
        drop_out = removed.get((name, "out"))
        drop_in = removed.get((name, "in"))
        if isinstance(module, nn.modules.conv._ConvNd):
            per_group = module.in_channels // module.groups
            out_idx = _kept(module.out_channels, drop_out)
            in_idx = _kept(module.in_channels, drop_in)
            _select_rows(module, out_idx)
            # weight (out, in/groups, k...) or, transposed, (in, out/groups, k...)
            out_dim, in_dim = (1, 0) if module.transposed else (0, 1)
            if module.groups == 1:
                _select(module, "weight", out_dim, out_idx)
                _select(module, "weight", in_dim, in_idx)
            else:  # whole conv groups go (their inputs and outputs are one unit)
                _select(module, "weight", 0, out_idx if not module.transposed else in_idx)
                module.groups = in_idx.numel() // per_group
            module.out_channels, module.in_channels = out_idx.numel(), in_idx.numel()
        elif isinstance(module, nn.Linear):
            out_idx = _kept(module.out_features, drop_out)
            in_idx = _kept(module.in_features, drop_in)
            _select_rows(module, out_idx)
            _select(module, "weight", 0, out_idx)
            _select(module, "weight", 1, in_idx)
            module.out_features, module.in_features = out_idx.numel(), in_idx.numel()
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            idx = _kept(module.num_features, removed.get((name, "bn")))
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _select(module, attr, 0, idx)
            module.num_features = idx.numel()
        elif isinstance(module, nn.GroupNorm):  # whole groups go (each group's channels are one unit)
            per_group = module.num_channels // module.num_groups
            idx = _kept(module.num_channels, removed.get((name, "bn")))
            for attr in ("weight", "bias"):
                _select(module, attr, 0, idx)
            module.num_channels, module.num_groups = idx.numel(), idx.numel() // per_group
        elif isinstance(module, nn.MultiheadAttention) and drop_out is not None:  # q/k/v rows of the heads
            out_idx = _kept(module.in_proj_weight.shape[0], drop_out)
            for attr in weight_names(module):
                _select(module, attr, 0, out_idx)
    for name, (module, drop) in attention.items():
        layout = layouts[name]
        assert layout is not None
        prune_attention(module, layout, drop)
    return pruned


@torch.no_grad()
def mask_model(model: nn.Module, g: DependencyGraph, keep: Keep) -> nn.Module:
    """Zero the removed units in place: owner rows and biases, BN gamma/beta, consumer input columns.

    With gamma = beta = 0 a BN outputs exactly 0 for the channel, and zeroed input columns make every
    consumer ignore it, so the masked model computes what the pruned one does.
    """
    removed = _removed_in(model, g, keep)
    for (name, role), drop in removed.items():
        if role == "attn":  # an attention module's heads are zeroed through its projections
            continue
        module = model.get_submodule(name)
        index = torch.from_numpy(drop)
        weight, bias = (getattr(module, attr, None) for attr in weight_names(module))
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            _mask_transposed(module, role, index)
            continue
        if role in ("bn", "out"):  # BN / GroupNorm gamma and beta, or a conv/linear's output rows
            for tensor in (weight, bias):
                if isinstance(tensor, torch.Tensor):
                    tensor[index] = 0
        elif getattr(module, "groups", 1) == 1 and isinstance(weight, torch.Tensor):
            weight[:, index] = 0  # grouped convs: the group's own output rows are already zero
    return model


def _mask_transposed(module: nn.modules.conv._ConvTransposeNd, role: str, index: torch.Tensor) -> None:
    """Zero a transposed conv's output channels (weight (in, out/groups, k...): column o % (out/groups) of
    group o's input rows, and the bias) or, ungrouped, its input rows."""
    weight = module.weight.data
    if role == "out":
        per_out = module.out_channels // module.groups
        grouped = weight.view(module.groups, -1, *weight.shape[1:])
        grouped[index // per_out, :, index % per_out] = 0
        if module.bias is not None:
            module.bias.data[index] = 0
    elif module.groups == 1:
        weight[index] = 0
