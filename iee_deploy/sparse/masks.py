"""Sparse state over tensors: per masked tensor, the active set Theta_K and its MRU values.

`TensorMasks` holds, for a list of a model's tensors, a boolean mask (Theta_K) and an MRU
tensor each. The tensor itself holds the values the forward pass uses: active entries, and
zeros for the exploration set Theta_P. The MRU tensor keeps the most recently used value of
every entry in Theta_P, so that Reactivate & Explore (and MRU grow) can restore it.
`WeightMasks` is the unstructured state: every Conv2d and Linear `.weight`, element by element.
The structured (channel) state builds its masks from channel groups over weights, biases, BN
parameters and BN running statistics (`iee_deploy.structured.masks`).

A weight that has never been active has never been used: by default its MRU value is zero, not
its random initial value: reactivating ~90% untrained random weights swamps the exploration (one
Fashion-MNIST run, resnet20 at 90% ERK, 5 epochs: 79.1% top-1 with initial values as MRU,
81.1% with zero). `never_used=GrowInit.MRU` keeps the initial values instead (whole channels:
an all-zero channel gets no gradient on its filter or BN scale and could never learn).

Nothing inactive leaks into training:
- gradients are masked to the trainable set before every optimizer step;
- optimizer state (momentum) of an entry is zeroed when it leaves the trainable set;
- after every step inactive entries are set to zero again;
- while exploring with Theta_K frozen, Theta_K's values and optimizer state are restored after
  every step (weight decay and momentum would otherwise move them), every parameter outside the
  masked tensors (BN, biases of the unstructured state) gets no gradient, and module buffers
  outside the masked tensors are restored (masked buffers, e.g. BN running statistics of the
  structured state, are restored on Theta_K only), so Theta_K's network is bitwise unchanged by
  the exploration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.sparse.state import GrowInit, TrainableSet, optimizer_tensors

Tensor = torch.Tensor
PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer whose weight is sparsified: all Conv2d and Linear layers whose weight trains.

    A frozen weight (`requires_grad=False`) stays dense: pruned, it could never retrain nor regrow. A weight shared with
    another module (tied weights) is refused: each sharer would mask it on its own, so the tensor would end sparser
    than either mask says and the reported sparsity would be wrong."""
    layers: list[tuple[str, nn.Module]] = [(name, m) for name, m in model.named_modules()
              if isinstance(m, PRUNABLE_TYPES) and m.weight.requires_grad]
    users: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for attr, param in module.named_parameters(recurse=False):
            users.setdefault(id(param), []).append(f"{name}.{attr}" if name else attr)
    for name, module in layers:
        tied = users[id(module.weight)]
        if len(tied) > 1:
            raise UserError(f"'{tied[0]}' and '{tied[1]}' are one tensor (tied weights): sparsifying it per layer would "
                            "mask it twice and misreport its sparsity",
                            f"give '{name}' its own copy (e.g. `layer.weight = nn.Parameter(layer.weight.detach().clone())`), "
                            "or freeze it (`requires_grad=False`) to keep it dense", fields=("model",))
    return layers


class TensorMasks:
    """Theta_K masks and MRU values of named tensors of a model (see the module docstring)."""

    def __init__(self, model: nn.Module, names: Sequence[str], tensors: Sequence[Tensor], masks: Sequence[Tensor],
                 never_used: GrowInit = GrowInit.ZERO) -> None:
        if not len(names) == len(tensors) == len(masks):
            raise ValueError(f"{len(masks)} masks for {len(tensors)} tensors ({len(names)} names)")
        self.model = model
        self.names = list(names)
        self.params: list[Tensor] = list(tensors)
        masked = {id(p) for p in self.params}
        self.other_params = [p for p in model.parameters() if id(p) not in masked]
        self.other_buffers = [b for b in model.buffers() if id(b) not in masked]
        self.masked_buffers = [i for i, p in enumerate(self.params) if not isinstance(p, nn.Parameter)]
        self.masks = [m.to(device=p.device, dtype=torch.bool).clone() for m, p in zip(masks, self.params)]
        self.mru = [torch.where(m, p.detach(), 0) if never_used is GrowInit.ZERO else p.detach().clone()
                    for m, p in zip(self.masks, self.params)]
        self.trainable = TrainableSet.ACTIVE
        self.optimizer: torch.optim.Optimizer | None = None
        self._frozen: list[tuple[Tensor, list[Tensor]]] = []
        self._buffers: list[Tensor] | None = None
        with torch.no_grad():
            for p, m in zip(self.params, self.masks):
                p.mul_(m)

    # --- the loop's protocol -------------------------------------------------------------
    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Mask gradients to the trainable set; remember frozen values when exploring."""
        if self.trainable is TrainableSet.ALL:
            return
        exploring = self.trainable is TrainableSet.EXPLORATION
        for p, m in zip(self.params, self.masks):
            if p.grad is not None:
                p.grad.mul_(~m if exploring else m)
        if exploring:
            for p in self.other_params:
                p.grad = None  # the optimizer skips them: no update, no weight decay, no momentum
            self._frozen = [(p.clone(), [s.clone() for s in optimizer_tensors(self.optimizer, p)]) for p in self.params]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Keep inactive weights at zero, or restore frozen Theta_K and buffers when exploring."""
        if self.trainable is TrainableSet.ACTIVE:
            for p, m in zip(self.params, self.masks):
                p.mul_(m)
        elif self.trainable is TrainableSet.EXPLORATION:
            for (p, m), (value, states) in zip(zip(self.params, self.masks), self._frozen):
                p.copy_(torch.where(m, value, p))
                now = list(optimizer_tensors(self.optimizer, p))
                if len(states) == len(now):
                    for s, before in zip(now, states):
                        s.copy_(torch.where(m, before, s))
                else:  # the optimizer created its state on this step: Theta_K gets none
                    for s in now:
                        s.masked_fill_(m, 0)
            self._frozen = []
            assert self._buffers is not None  # as at reactivate: the forward pass updated BN statistics
            for b, saved in zip(self.other_buffers, self._buffers):
                b.copy_(saved)
            for i, saved in zip(self.masked_buffers, self._buffers[len(self.other_buffers):]):
                self.params[i].copy_(torch.where(self.masks[i], saved, self.params[i]))

    def _snapshot_targets(self) -> list[Tensor]:
        """The buffers a frozen exploration restores after every step (masked ones on Theta_K only)."""
        return self.other_buffers + [self.params[i] for i in self.masked_buffers]

    @contextmanager
    def active_only(self) -> Iterator[None]:
        """Temporarily show the model only Theta_K (evaluation while exploring)."""
        if self.trainable is TrainableSet.ACTIVE:
            yield
            return
        with torch.no_grad():
            stash = [p.clone() for p in self.params]
            for p, m in zip(self.params, self.masks):
                p.mul_(m)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.params, stash):
                    p.copy_(saved)

    def active_weights(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in zip(self.names, self.masks)}

    def total_weights(self) -> dict[str, int]:
        return {n: m.numel() for n, m in zip(self.names, self.masks)}

    # --- structure changes ---------------------------------------------------------------
    def _zero_state(self, p: Tensor, where: Tensor) -> None:
        for s in optimizer_tensors(self.optimizer, p):
            s.masked_fill_(where, 0)

    @torch.no_grad()
    def prune(self, removed: Sequence[Tensor]) -> None:
        """Move `removed` weights from Theta_K to Theta_P, keeping their values as MRU."""
        if self.trainable is not TrainableSet.ACTIVE:
            raise RuntimeError("prune while exploring")
        for p, m, mru, r in zip(self.params, self.masks, self.mru, removed):
            if bool((r & ~m).any()):
                raise ValueError("pruning a weight that is not active")
            mru[r] = p[r]
            p.masked_fill_(r, 0)
            self._zero_state(p, r)
            m &= ~r

    @torch.no_grad()
    def grow(self, added: Sequence[Tensor], init: GrowInit = GrowInit.MRU) -> None:
        """Move `added` weights from Theta_P to Theta_K.

        Outside exploration a grown weight starts at `init` (its MRU value, or zero). At the end
        of Reactivate & Explore it keeps the value it was explored with; every other weight of
        Theta_P stores that explored value as its MRU and becomes inactive again.
        """
        exploring = self.trainable is not TrainableSet.ACTIVE
        for p, m, mru, a in zip(self.params, self.masks, self.mru, added):
            if bool((a & m).any()):
                raise ValueError("growing a weight that is already active")
            m |= a
            if exploring:
                leaving = ~m
                mru[leaving] = p[leaving]
                p.masked_fill_(leaving, 0)
                self._zero_state(p, leaving)
            elif init is GrowInit.MRU:
                p[a] = mru[a]
            else:
                p.masked_fill_(a, 0)
        self.trainable = TrainableSet.ACTIVE
        self._buffers = None

    @torch.no_grad()
    def reactivate(self, init: GrowInit, freeze: bool) -> None:
        """Reactivate & Explore: every weight active, Theta_P at its MRU value (or zero).

        With `freeze`, only Theta_P trains from now until `grow`; otherwise all weights do.
        """
        if self.trainable is not TrainableSet.ACTIVE:
            raise RuntimeError("already exploring")
        for p, m, mru in zip(self.params, self.masks, self.mru):
            p.copy_(torch.where(m, p, mru if init is GrowInit.MRU else torch.zeros_like(p)))
        self.trainable = TrainableSet.EXPLORATION if freeze else TrainableSet.ALL
        self._buffers = [b.clone() for b in self._snapshot_targets()] if freeze else None

    def flat_active(self) -> Tensor:
        """Theta_K of all layers as one boolean vector."""
        return torch.cat([m.flatten() for m in self.masks])

    # --- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"masks": [m.cpu() for m in self.masks], "mru": [v.cpu() for v in self.mru],
                "trainable": self.trainable.value,
                "buffers": None if self._buffers is None else [b.cpu() for b in self._buffers]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, v in zip(self.masks, state["masks"]):
            m.copy_(v)
        for mru, v in zip(self.mru, state["mru"]):
            mru.copy_(v)
        self.trainable = TrainableSet(state["trainable"])
        self._buffers = None if state["buffers"] is None else \
            [v.to(b.device) for v, b in zip(state["buffers"], self._snapshot_targets())]


class WeightMasks(TensorMasks):
    """The unstructured state: every Conv2d and Linear `.weight`, masked element by element."""

    def __init__(self, model: nn.Module, masks: Sequence[Tensor]) -> None:
        layers = prunable_layers(model)
        if len(layers) != len(masks):
            raise ValueError(f"{len(masks)} masks for {len(layers)} prunable layers")
        super().__init__(model, [name for name, _ in layers], [m.weight for _, m in layers], masks)  # type: ignore[misc]
