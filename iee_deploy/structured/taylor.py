"""Taylor importance of channel units (Molchanov et al. 2019, as HALP computes it).

For a unit of a channel group, on one iteration:
- groups with BatchNorm: |sum over the group's BN layers of (dL/dgamma * gamma + dL/dbeta * beta)|
  at the unit's channel; a unit of several channels (a conv group) sums the per-channel scores;
- groups without BatchNorm: |sum over the owner layers of sum(w * dL/dw)| over the unit's output rows.
Scores are averaged over the iterations since the last `reset()` (the space resets at every prune,
reactivate and grow, so Prune reads the H importance-estimation iterations of Theta_K and Grow the
Q explore iterations of Theta_P); an iteration whose scores contain NaN or Inf is skipped whole.
Missing gradients count as zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph import ChannelGroup, ChannelRef, layer_weight

Tensor = torch.Tensor


def _grad(p: Tensor) -> Tensor:
    return torch.zeros_like(p) if p.grad is None else p.grad


def _per_unit(channel_scores: list[tuple[Tensor, ChannelRef]]) -> Tensor:
    """Sum channel scores over the layers, take |.| per channel position of a unit, then sum within the unit."""
    gathered = [scores[torch.as_tensor(ref.index, device=scores.device)] for scores, ref in channel_scores]
    if all(g.shape == gathered[0].shape for g in gathered):
        return torch.stack(gathered).sum(0).abs().sum(1)
    return torch.stack([g.sum(1) for g in gathered]).sum(0).abs()  # layers with different channels per unit


class TaylorImportance:
    """Accumulates the per-unit Taylor scores of `groups` of `model` (see the module docstring)."""

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
        self.groups = list(groups)
        modules = dict(model.named_modules())
        device = next(model.parameters()).device
        self._bn: list[list[tuple[Tensor, Tensor, ChannelRef]]] = []
        self._owners: list[list[tuple[Tensor, ChannelRef]]] = []
        for group in self.groups:
            bns = [(modules[r.name].weight, modules[r.name].bias, r) for r in group.bn_layers
                   if getattr(modules[r.name], "affine", False)]
            self._bn.append(bns)  # type: ignore[arg-type]
            self._owners.append([(layer_weight(modules[r.name]), r) for r in group.owners])
        self.sums = [torch.zeros(g.size, dtype=torch.float64, device=device) for g in self.groups]
        self.iterations = 0
        self.skipped = 0
        self._skipped_at_reset = 0

    @torch.no_grad()
    def scores(self) -> list[Tensor]:
        """This iteration's score of every unit of every group, from the current gradients."""
        out = []
        for bns, owners in zip(self._bn, self._owners):
            if bns:
                terms = [((_grad(g) * g + _grad(b) * b).double(), r) for g, b, r in bns]
            else:
                terms = [((_grad(w) * w).double().flatten(1).sum(1), r) for w, r in owners]
            out.append(_per_unit(terms))
        return out

    def accumulate(self) -> None:
        """Add this iteration's scores (called after every backward), unless any is NaN or Inf."""
        scores = self.scores()
        if not all(bool(torch.isfinite(s).all()) for s in scores):
            self.skipped += 1
            return
        for total, s in zip(self.sums, scores):
            total += s
        self.iterations += 1

    def average(self) -> list[Tensor]:
        """Mean score of every unit over the accumulated iterations (zeros before any).

        Zeros because every gradient since the last reset was NaN or inf would rank units arbitrarily: refused.
        """
        if self.iterations == 0 and self.skipped > self._skipped_at_reset:
            raise UserError(f"every gradient of the last {self.skipped - self._skipped_at_reset} step(s) held NaN or inf, "
                            "so no unit has an importance score: training diverged",
                            "lower the learning rate, or check the loss and the starting weights for NaN")
        return [s / max(self.iterations, 1) for s in self.sums]

    def reset(self) -> None:
        for s in self.sums:
            s.zero_()
        self.iterations = 0
        self._skipped_at_reset = self.skipped

    def state_dict(self) -> dict[str, Any]:
        return {"sums": [s.cpu() for s in self.sums], "iterations": self.iterations, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, v in zip(self.sums, state["sums"]):
            s.copy_(v)
        self.iterations, self.skipped = int(state["iterations"]), int(state["skipped"])
        self._skipped_at_reset = self.skipped
