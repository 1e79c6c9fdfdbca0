"""What the training loop needs from any sparse state: weight masks (`WeightSpace`) or channel masks (`ChannelSpace`).

The loop never looks inside a mask. Around each optimizer step it calls
`before_optimizer_step` (mask gradients, remember what is frozen) and `after_optimizer_step`
(restore frozen values, keep inactive weights at zero); it evaluates inside `active_only()`
and counts FLOPs from `active_weights()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from enum import Enum, StrEnum
from typing import Any, Protocol

import torch


class TrainableSet(str, Enum):
    """Which weights the optimizer may change on the current step."""

    ACTIVE = "active"  # Theta_K (Importance Estimation, Accuracy Improvement, ordinary sparse training)
    EXPLORATION = "exploration"  # Theta_P only; Theta_K and all other parameters frozen (Reactivate & Explore)
    ALL = "all"  # Theta_K and Theta_P (Reactivate & Explore without freezing: Table 4 ablation)


class GrowInit(StrEnum):
    """Value a weight takes when it re-enters training from Theta_P."""

    MRU = "mru"  # its most recently used value (IEE)
    ZERO = "zero"  # zero (RigL, SET; Table 4 ablation for IEE)


class SparseState(Protocol):
    """The sparse state as the training loop sees it."""

    trainable: TrainableSet

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None: ...

    def before_optimizer_step(self) -> None: ...

    def after_optimizer_step(self) -> None: ...

    def active_only(self) -> AbstractContextManager[None]: ...

    def active_weights(self) -> dict[str, int]:
        """Active weights of every prunable layer, by module name (FLOP counting)."""
        ...

    def total_weights(self) -> dict[str, int]:
        """All weights of every prunable layer, by module name."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def optimizer_tensors(optimizer: torch.optim.Optimizer | None, param: torch.Tensor) -> Iterator[torch.Tensor]:
    """The per-element optimizer state of `param` (SGD momentum, Adam moments)."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            yield value


def layer_sparsity(state: SparseState) -> dict[str, float]:
    """Share of inactive weights in every prunable layer."""
    active = state.active_weights()
    return {name: 1.0 - active[name] / total for name, total in state.total_weights().items()}


def overall_sparsity(state: SparseState) -> float:
    """Share of inactive weights over all prunable layers."""
    return 1.0 - sum(state.active_weights().values()) / sum(state.total_weights().values())
