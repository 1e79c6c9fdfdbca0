"""The one interface every sparsification method implements, and its configuration.

The training loop (`iee_deploy.train.Trainer`) drives any method through these hooks, in this
order on every step, and never asks which method it is:

    records = method.on_step_start(step)      # structure updates scheduled before the forward pass
    loss.backward()
    records += method.after_backward(step)    # updates that need this step's dense gradients (RigL)
    method.before_optimizer_step(step)        # mask gradients to the trainable set
    optimizer.step()
    method.after_optimizer_step(step)         # keep inactive weights at zero / frozen weights frozen

The trainable set (Theta_K, Theta_P during Reactivate & Explore, or all) lives in the method's
sparse state (`iee_deploy.sparse.state.SparseState`); `step_cost` tells the loop how to count
the step's FLOPs and `evaluation()` shows the model only Theta_K.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from iee_deploy.flops import StepCost
from iee_deploy.sparse.state import SparseState
from iee_deploy.sparse.tracking import UpdateRecord


@dataclass
class SparsityConfig:
    """Everything that defines a sparsification method's run (saved in config.json).

    Fields a method does not read must stay at their defaults (see `SparsityMethod.options`).
    """

    method: str = "iee"
    sparsity: float = 0.9  # fraction of prunable weights removed (1 - N/M with `nm`)
    distribution: str = "erk"  # uniform | erk | global
    nm: str | None = None  # "N:M" along the input dimension, e.g. "2:4"
    hjq: tuple[int, int, int] | None = None  # IEE H, J, Q iterations; None: (150, 150, 150) or shorter for short runs
    delta_t: int | None = None  # RigL / SET / GMP update interval in steps; None: 100 or shorter for short runs
    omega0: float = 0.3  # Omega_0 (IEE) / alpha (RigL, SET): first update's share of the active budget
    omega_decay: str = "cosine"  # cosine | exponential
    update_end: float = 0.75  # structure updates stop after this fraction of training
    freeze: bool = True  # IEE: freeze Theta_K during Reactivate & Explore
    grow_init: str | None = None  # mru | zero; None: the method's own (IEE mru, RigL/SET zero)
    grow_criterion: str | None = None  # IEE: magnitude (the prune criterion) | random; None: magnitude
    gmp_start: float = 0.0  # GMP: pruning starts after this fraction of training

    @property
    def kind(self) -> str:
        """'unstructured' (weights, N:M) or 'structured' (channels under a latency budget)."""
        return "unstructured"

    def non_default(self) -> set[str]:
        """Names of the method-specific fields set away from their defaults."""
        default = SparsityConfig()
        shared = {"method", "sparsity", "distribution", "nm", "update_end"}
        return {f.name for f in dataclasses.fields(self)
                if f.name not in shared and getattr(self, f.name) != getattr(default, f.name)}


@dataclass
class TrainContext:
    """What a method learns from the loop before training starts."""

    total_steps: int
    optimizer: torch.optim.Optimizer


class Space(Protocol):
    """A sparsity space: the units a method moves between Theta_K and Theta_P, and their state."""

    @property
    def state(self) -> SparseState: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SparsityMethod(ABC):
    """Base class of IEE and the baselines; see the module docstring for the hook order."""

    name: ClassVar[str]
    options: ClassVar[frozenset[str]] = frozenset()
    """The method-specific `SparsityConfig` fields this method reads."""

    def __init__(self, space: Space, config: SparsityConfig) -> None:
        self.space = space
        self.state = space.state
        self.config = config

    def setup(self, ctx: TrainContext) -> None:
        """Called once before the first step (and before `load_state_dict` on resume)."""
        self.state.bind_optimizer(ctx.optimizer)

    def on_step_start(self, step: int) -> list[UpdateRecord]:
        return []

    def after_backward(self, step: int) -> list[UpdateRecord]:
        return []

    def before_optimizer_step(self, step: int) -> None:
        self.state.before_optimizer_step()

    def after_optimizer_step(self, step: int) -> None:
        self.state.after_optimizer_step()

    def step_cost(self, step: int) -> StepCost:
        """How step `step` is counted in training FLOPs."""
        return StepCost.SPARSE

    def stage_name(self, step: int) -> str:
        """A short label of what step `step` does, for the progress bar."""
        return "sparse"

    def evaluation(self) -> AbstractContextManager[None]:
        """Context in which the model computes with Theta_K only (evaluation, export)."""
        return self.state.active_only()

    def appendix_train_flops(self, zeta_p: float, zeta_d: float) -> float | None:
        """Appendix 3's closed-form average training FLOPs per sample, where the paper gives one."""
        return None

    def describe(self) -> dict[str, Any]:
        """The method's resolved settings (after `setup`), for the run summary."""
        return {}

    def pruned_model(self, model: nn.Module) -> nn.Module:
        """The deployable model: for unstructured sparsity the masked model itself (nothing shrinks)."""
        with self.evaluation():
            pruned = copy.deepcopy(model).cpu()
        for p in pruned.parameters():
            p.grad = None
        return pruned

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space.load_state_dict(state["space"])
