"""Structured sparse state: Theta_K as unit masks over the prunable channel groups of the dependency graph.

A unit (one channel, or one block of channels that go together) of a group is active or not.
The masks of every tensor the group touches follow from the unit masks, exactly as
`iee_deploy.graph.mask_model` zeroes a removed channel:
- owner conv/linear layers: the output rows (weight[c], bias[c]) of the unit's channels;
- BatchNorm layers: gamma, beta AND the running mean and variance at those channels;
- consumer conv/linear layers: the input columns weight[:, c] (grouped convs lose whole conv
  groups through their own output rows).
An entry is active when every channel it belongs to is active, so a masked model computes what
the physically pruned one (`prune_model` with the active units) computes: an inactive channel's
BN outputs exactly 0 (gamma = beta = 0 in training and evaluation) and no consumer reads it.

Everything else (MRU values, gradient and momentum masking, freezing Theta_K during Reactivate &
Explore) is `TensorMasks`'s. Decisions for whole channels:
- never-used channels (the initial exploration set of a run from scratch) keep their initial
  values as MRU, not zero: a channel with zero filters and zero gamma gets no gradient on either
  and could never learn during exploration;
- BN running statistics are masked tensors: zeroed while inactive, stored as MRU and restored on
  reactivation; while exploring with Theta_K frozen, those of Theta_K are restored after every
  step (bitwise unchanged) and those of Theta_P keep what the exploration measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from iee_deploy.graph import ChannelGroup, DependencyGraph, layer_weight, removed_channels, weight_names
from iee_deploy.sparse.masks import TensorMasks
from iee_deploy.sparse.state import GrowInit

Tensor = torch.Tensor
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _masked_tensors(model: nn.Module, groups: Sequence[ChannelGroup]) -> list[tuple[str, str]]:
    """(layer, attribute) of every tensor whose entries some group's units switch."""
    modules = dict(model.named_modules())
    found: dict[tuple[str, str], None] = {}
    for group in groups:
        for role, refs in (("out", group.owners), ("bn", group.bn_layers), ("in", group.consumers)):
            for ref in refs:
                module = modules[ref.name]
                attrs = BN_TENSORS if role == "bn" else weight_names(module) if role == "out" else \
                    ("weight",) if getattr(module, "groups", 1) == 1 else ()
                for attr in attrs:
                    if isinstance(getattr(module, attr, None), Tensor):
                        found[(ref.name, attr)] = None
    return list(found)


class ChannelMasks(TensorMasks):
    """Theta_K over channel units of `groups` (prunable groups of `graph`), see the module docstring."""

    def __init__(self, model: nn.Module, graph: DependencyGraph, groups: Sequence[ChannelGroup],
                 units: Sequence[Tensor]) -> None:
        self.graph = graph
        self.groups = list(groups)
        self.modules = dict(model.named_modules())
        self.tensors = _masked_tensors(model, self.groups)
        device = next(model.parameters()).device
        self.units = [u.to(device=device, dtype=torch.bool).clone() for u in units]
        self._check(self.units)
        self.layers = [name for name, info in graph.layers.items()]
        super().__init__(model, [f"{layer}.{attr}" for layer, attr in self.tensors],
                         [getattr(self.modules[layer], attr) for layer, attr in self.tensors],
                         self.element_masks(self.units), never_used=GrowInit.MRU)

    def _check(self, units: Sequence[Tensor]) -> None:
        for group, u in zip(self.groups, units):
            if u.shape != (group.size,):
                raise ValueError(f"group '{group.id}': mask of shape {tuple(u.shape)} for {group.size} units")
            if int(u.sum()) < max(1, group.min_keep):
                raise ValueError(f"group '{group.id}' must keep at least {max(1, group.min_keep)} units")

    def element_masks(self, units: Sequence[Tensor]) -> list[Tensor]:
        """Masks of every masked tensor for these unit masks (an entry is active when all its channels are)."""
        removed = removed_channels(self.graph, {g.id: u.cpu().numpy() for g, u in zip(self.groups, units)})
        masks = []
        for layer, attr in self.tensors:
            module = self.modules[layer]
            tensor = getattr(module, attr)
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
                sides = [(0, "bn")]
            else:  # grouped convs lose whole conv groups through their own output rows
                sides = [(0, "out")] + ([(1, "in")] if attr == "weight" and getattr(module, "groups", 1) == 1 else [])
            mask = torch.ones(tensor.shape, dtype=torch.bool)
            for dim, side in sides:
                drop = removed.get((layer, side))
                if drop is not None and drop.size:
                    mask.index_fill_(dim, torch.from_numpy(np.asarray(drop, dtype=np.int64)), False)
            masks.append(mask.to(tensor.device))
        return masks

    # --- structure changes in units ----------------------------------------------------------
    def prune_units(self, removed: Sequence[Tensor]) -> None:
        """Move the `removed` units of Theta_K to Theta_P (their values become MRU)."""
        new = [u & ~r for u, r in zip(self.units, removed)]
        if any(bool((r & ~u).any()) for u, r in zip(self.units, removed)):
            raise ValueError("pruning a unit that is not active")
        self._check(new)
        after = self.element_masks(new)
        self.prune([m & ~a for m, a in zip(self.masks, after)])
        self.units = new

    def grow_units(self, added: Sequence[Tensor], init: GrowInit = GrowInit.MRU) -> None:
        """Move the `added` units of Theta_P to Theta_K (see `TensorMasks.grow` for their values)."""
        if any(bool((a & u).any()) for u, a in zip(self.units, added)):
            raise ValueError("growing a unit that is already active")
        new = [u | a for u, a in zip(self.units, added)]
        after = self.element_masks(new)
        self.grow([a & ~m for m, a in zip(self.masks, after)], init)
        self.units = new

    # --- what the loop and the latency model read ----------------------------------------------
    def counts(self) -> dict[str, int]:
        """Active units of every prunable group."""
        return {g.id: int(u.sum()) for g, u in zip(self.groups, self.units)}

    def keep(self) -> dict[str, Tensor]:
        """Indices of the active units of every prunable group (`prune_model`'s `keep`)."""
        return {g.id: torch.nonzero(u.cpu()).flatten() for g, u in zip(self.groups, self.units)}

    def active_weights(self) -> dict[str, int]:
        """Active weights of every conv/linear layer (FLOP counting), from the graph's channel counts."""
        channels = self.graph.layer_channels(self.counts())
        return {name: self._weights(name, *channels[name]) for name in self.layers}

    def total_weights(self) -> dict[str, int]:
        return {name: int(layer_weight(self.modules[name]).numel()) for name in self.layers}

    def _weights(self, name: str, cin: int, cout: int) -> int:
        info = self.graph.layers[name]
        kernel = int(np.prod(info.kernel)) if info.kind == "conv" else 1
        return cout * (info.in_per_group if info.groups > 1 else cin) * kernel

    def flat_active(self) -> Tensor:
        """Theta_K over all units of all groups, as one boolean vector (IoU, survival)."""
        return torch.cat(self.units)

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "units": [u.cpu() for u in self.units]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(dict(state))
        self.units = [v.to(u.device) for u, v in zip(self.units, state["units"])]
