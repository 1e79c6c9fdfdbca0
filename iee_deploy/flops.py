"""Forward and training FLOPs (paper appendix 3), counted from the model.

Forward FLOPs count the multiplications and additions of every Conv2d and Linear layer:
2 x (output positions per sample) x (active weights), so a layer's cost scales with its active
weights whether they were removed one by one (unstructured) or by whole channels (structured:
pass the active weight count of the narrowed layer). BN, activations, pooling and biases are
not counted, as in RigL and the paper. zeta_D is the dense model's forward FLOPs and zeta_P the
sparse model's.

Training a sample costs one forward and a backward of about twice the forward (appendix 3):
- sparse step (train Theta_K):                         3 zeta_P
- dense forward, sparse gradients (IEE Reactivate & Explore with Theta_K frozen, RigL's
  dense-gradient update step):                          2 zeta_P + zeta_D
- dense step (everything trains, e.g. explore without freezing, or a dense model): 3 zeta_D
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

COUNTED = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerCost:
    """A counted layer: its weight size and how many output positions each weight is used at."""

    weights: int
    positions: int  # output height x width for a conv, 1 for a linear layer

    def flops(self, active: int | None = None) -> int:
        return 2 * self.positions * (self.weights if active is None else active)


@torch.no_grad()
def layer_costs(model: nn.Module, resolution: int, channels: int = 3) -> dict[str, LayerCost]:
    """Cost of every Conv2d / Linear layer of `model` on one `channels` x R x R input, by module name."""
    costs: dict[str, LayerCost] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, COUNTED):
            def hook(mod: nn.Module, _inp: object, out: torch.Tensor, name: str = name) -> None:
                positions = out.shape[2] * out.shape[3] if out.dim() == 4 else out[0].numel() // out.shape[-1]
                costs[name] = LayerCost(mod.weight.numel(), int(positions))  # type: ignore[operator]
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, channels, resolution, resolution, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return costs


def forward_flops(costs: Mapping[str, LayerCost], active: Mapping[str, int] | None = None) -> int:
    """Forward FLOPs of one sample: dense when `active` is None, else with `active[name]` weights per layer."""
    return sum(c.flops(None if active is None else active.get(name, c.weights)) for name, c in costs.items())


class StepCost(str, Enum):
    """The kind of training step, for its FLOPs (see the module docstring)."""

    SPARSE = "sparse"
    DENSE_FORWARD = "dense_forward"
    DENSE = "dense"


def train_step_flops(kind: StepCost, zeta_p: float, zeta_d: float) -> float:
    """FLOPs to train one sample on a step of `kind`."""
    if kind is StepCost.SPARSE:
        return 3 * zeta_p
    if kind is StepCost.DENSE_FORWARD:
        return 2 * zeta_p + zeta_d
    return 3 * zeta_d


def iee_train_flops(h: int, j: int, q: int, zeta_p: float, zeta_d: float, update_end: float = 0.75) -> float:
    """Appendix 3: average per-sample training FLOPs of IEE (updates during the first `update_end`)."""
    period = ((h + j) * 3 * zeta_p + q * (2 * zeta_p + zeta_d)) / (h + j + q)
    return update_end * period + (1 - update_end) * 3 * zeta_p


def rigl_train_flops(delta_t: int, zeta_p: float, zeta_d: float, update_end: float = 0.75) -> float:
    """Appendix 3 for RigL: one dense-gradient step per `delta_t` sparse ones, during the first `update_end`."""
    period = (delta_t * 3 * zeta_p + 2 * zeta_p + zeta_d) / (delta_t + 1)
    return update_end * period + (1 - update_end) * 3 * zeta_p
