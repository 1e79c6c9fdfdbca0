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
the step's FLOPs and `evaluation()` shows the model only Theta_K. What the run folder records
about the budget (`run_facts`, `summary`, `artifacts`) and the deployable model (`pruned_model`)
come from the method's space: weights (`WeightSpace`) or channels under a latency budget
(`iee_deploy.structured.ChannelSpace`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from iee_deploy.errors import ConfigError, check_fraction, check_positive, is_whole
from iee_deploy.flops import StepCost
from iee_deploy.methods.schedule import STRUCTURED_UPDATE_END, UNSTRUCTURED_UPDATE_END, Decay
from iee_deploy.sparse.distributions import Distribution
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.state import GrowInit, SparseState
from iee_deploy.sparse.tracking import UpdateRecord
from iee_deploy.structured.space import Start


class GrowCriterion(StrEnum):
    """How Grow ranks Theta_P (Table 4)."""

    MAGNITUDE = "magnitude"  # the importance criterion of Prune (|w| unstructured, Taylor structured)
    RANDOM = "random"  # uniformly random, as SET


E = TypeVar("E", bound=Enum)


def _choice(field: str, enum: type[E], value: E | str) -> E:
    """`value` as a member of `enum`, or a ConfigError listing the choices."""
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(field, f"`{field}` '{value}' is not one of {', '.join(m.value for m in enum)}",
                          f"choose one of {', '.join(m.value for m in enum)}") from None


def parse_nm(text: str) -> NMPattern:
    """'2:4' -> NMPattern(2, 4); the one parser of N:M patterns (a ConfigError naming `nm` otherwise)."""
    try:
        n, m = (int(p) for p in text.split(":"))
        return NMPattern(n, m)
    except ValueError:
        raise ConfigError("nm", f"`nm` '{text}' is not an N:M pattern with 0 < N < M", "pass e.g. 2:4") from None


@dataclass
class SparsityConfig:
    """Everything that defines a sparsification method's run (saved in config.json).

    Fields a method does not read must stay at their defaults (see `SparsityMethod.options`).
    Strings are accepted for the enum fields (as config.json stores them) and converted; every
    field is checked here, so an impossible value fails at construction with a `ConfigError`
    naming the field. Unstructured N:M: `SparsityConfig(nm="2:4", sparsity=0.5)`; structured:
    `SparsityConfig(latency_ratio=0.5, lut="luts/cpu-resnet20.csv")`.
    """

    method: str = "iee"  # a name in iee_deploy.methods.METHODS (or STRUCTURED_METHODS under a latency budget)
    sparsity: float = 0.9  # unstructured: fraction of prunable weights removed, in [0, 1); 1 - N/M with `nm`
    distribution: Distribution = Distribution.ERK
    nm: str | None = None  # "N:M" along the input dimension, e.g. "2:4" (see `pattern`)
    hjq: tuple[int, int, int] | None = None  # IEE H, J, Q iterations; None: (150, 150, 150) or shorter for short runs
    delta_t: int | None = None  # RigL / SET / GMP update interval in steps; None: 100 or shorter for short runs
    omega0: float = 0.3  # Omega_0 (IEE) / alpha (RigL, SET): first update's share of the active budget
    omega_decay: Decay | None = None  # None: the paper's for the kind (`decay`)
    update_end: float | None = None  # structure updates stop after this fraction of training; None: `updates_end`
    freeze: bool = True  # IEE: freeze Theta_K during Reactivate & Explore
    grow_init: GrowInit | None = None  # None: the method's own (IEE mru, RigL/SET zero)
    grow_criterion: GrowCriterion | None = None  # IEE; None: magnitude
    gmp_start: float = 0.0  # GMP: pruning starts after this fraction of training
    latency_ms: float | None = None  # structured: budget Psi in ms per LUT batch on the LUT's target
    latency_ratio: float | None = None  # structured: Psi as a fraction (0, 1] of the dense model's predicted latency
    target: str | None = None  # structured: hardware target (must be the LUT's); None: the LUT's
    lut: str | None = None  # structured: latency lookup table (.csv) from the profiler
    start: Start = Start.SCRATCH  # structured: random Theta_K at Psi, or prune the loaded (dense) model down to Psi
    descent: float = 0.5  # structured IEE from dense: share (0, 1) of the update window spent pruning to Psi
    measure_budget: bool = False  # structured: re-aim Psi until the pruned network measured here meets the budget
    budget_tolerance: float = 0.02  # structured, measured budget: relative miss of the measured latency ratio accepted
    measure_seconds: float = 20.0  # structured, measured budget: seconds each structure's lowest readings must hold

    def __post_init__(self) -> None:
        self.distribution = _choice("distribution", Distribution, self.distribution)
        if self.omega_decay is not None:
            self.omega_decay = _choice("omega_decay", Decay, self.omega_decay)
        self.start = _choice("start", Start, self.start)
        if self.grow_init is not None:
            self.grow_init = _choice("grow_init", GrowInit, self.grow_init)
        if self.grow_criterion is not None:
            self.grow_criterion = _choice("grow_criterion", GrowCriterion, self.grow_criterion)
        check_fraction("sparsity", self.sparsity, high_open=True)
        for name in ("omega0", "gmp_start"):
            check_fraction(name, getattr(self, name))
        if self.update_end is not None:
            check_fraction("update_end", self.update_end, low_open=True)
        check_fraction("descent", self.descent, low_open=True, high_open=True)
        check_fraction("budget_tolerance", self.budget_tolerance, low_open=True, high_open=True)
        check_positive("measure_seconds", self.measure_seconds, zero_ok=True)
        for name in ("budget_tolerance", "measure_seconds"):
            if getattr(self, name) != getattr(SparsityConfig, name) and not self.measure_budget:
                raise ConfigError((name, "measure_budget"), f"`{name}` is the measured budget's, but `measure_budget` is "
                                  "off", f"set `measure_budget`, or leave `{name}` out")
        if self.hjq is not None:
            hjq = tuple(self.hjq) if isinstance(self.hjq, (tuple, list)) else ()  # config.json stores a list
            whole = all(is_whole(v) for v in hjq)  # not '150,150,150' or 1.5
            if len(hjq) != 3 or not whole or hjq[0] < 1 or hjq[1] < 0 or hjq[2] < 1:
                spelled = " as a tuple, e.g. (150, 150, 150)" if isinstance(self.hjq, str) else ""  # not the CLI's '1,1,1'
                raise ConfigError("hjq", f"`hjq` {self.hjq!r} is invalid", f"give three whole numbers (H, J, Q){spelled}: "
                                  "IEE needs H >= 1, J >= 0 and Q >= 1 iterations")
            self.hjq = (int(hjq[0]), int(hjq[1]), int(hjq[2]))
        if self.delta_t is not None:  # not '5' or 2.5: a comparison error, or a fraction of a step
            if not is_whole(self.delta_t) or self.delta_t < 1:
                raise ConfigError("delta_t", f"`delta_t` {self.delta_t!r} is not a positive whole number of steps",
                                  "pass e.g. 100")
            self.delta_t = int(self.delta_t)
        if self.latency_ms is not None:
            check_positive("latency_ms", self.latency_ms)
        if self.latency_ratio is not None:
            check_fraction("latency_ratio", self.latency_ratio, low_open=True)
        if self.latency_ms is not None and self.latency_ratio is not None:
            raise ConfigError(("latency_ms", "latency_ratio"), "`latency_ms` and `latency_ratio` both set the budget",
                              "give exactly one latency budget")
        if self.nm is not None and not isinstance(self.nm, str):  # (2, 4) or 0.5: parse_nm reads text only
            raise ConfigError("nm", f"`nm` {self.nm!r} is not an N:M pattern written as text", "pass e.g. '2:4'")
        pattern = self.pattern
        if pattern is not None:
            self.nm = str(pattern)
            if self.distribution is Distribution.GLOBAL:
                raise ConfigError(("nm", "distribution"), "`nm` fixes every layer's density, so it cannot be combined "
                                  "with `distribution` global", "use `distribution` uniform (or erk) with `nm`")
            if abs(self.sparsity - (1 - pattern.density)) > 1e-9:
                raise ConfigError(("sparsity", "nm"), f"`sparsity` {self.sparsity:g} contradicts `nm` {pattern} "
                                  f"(sparsity {1 - pattern.density:g})", f"leave `sparsity` at 1 - N/M = {1 - pattern.density:g}")

    @property
    def pattern(self) -> NMPattern | None:
        """The N:M pattern of `nm`, or None."""
        return None if self.nm is None else parse_nm(self.nm)

    @property
    def decay(self) -> Decay:
        """How Omega_t decays: `omega_decay`, or the paper's for the kind.

        Unstructured: cosine (RigL's drop-fraction schedule, Sec. 4.2). Structured: exponential
        (HALP's scheduler, which the paper's structured IEE follows; appendix 3).
        """
        if self.omega_decay is not None:
            return Decay(self.omega_decay)
        return Decay.COSINE if self.kind == "unstructured" else Decay.EXPONENTIAL

    @property
    def updates_end(self) -> float:
        """Fraction of training after which the structure stops changing: `update_end`, or the paper's for the kind.

        Unstructured: 3/4 (RigL's T_end, appendix 3). Structured: 5/130, the paper's end of the
        structured updates at epoch 5 of 130 (appendix 3), "much earlier than 3/4".
        """
        if self.update_end is not None:
            return self.update_end
        return UNSTRUCTURED_UPDATE_END if self.kind == "unstructured" else STRUCTURED_UPDATE_END

    @property
    def kind(self) -> str:
        """'unstructured' (weights, N:M) or 'structured' (channels under a latency budget)."""
        return "unstructured" if self.latency_ms is None and self.latency_ratio is None else "structured"

    def non_default(self) -> set[str]:
        """Names of the method-specific fields set away from their defaults."""
        default = SparsityConfig()
        shared = {"method", "sparsity", "distribution", "nm", "update_end", "latency_ms", "latency_ratio", "target",
                  "lut", "start"}
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

    def run_facts(self) -> dict[str, Any]:
        """`RunInfo` fields deployment needs about the budget (sparsity and N:M, or target, LUT and latency)."""
        ...

    def summary(self) -> dict[str, Any]:
        """Sections the space adds to summary.json (e.g. `latency`)."""
        ...

    def artifacts(self) -> dict[str, Any]:
        """JSON files (name -> content) the space adds to the run folder (e.g. channels.json)."""
        ...

    def pruned_model(self, model: nn.Module) -> nn.Module:
        """The deployable model of Theta_K (a CPU copy without gradients)."""
        ...


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

    def in_update(self, step: int) -> bool:
        """True when, after step `step`, a structure update is half done (IEE: pruned, not yet grown).

        Theta_K is then short of its budget, so the loop evaluates only when this is False.
        """
        return False

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
        """The deployable model (the space's: masked weights, or physically fewer channels)."""
        return self.space.pruned_model(model)

    def run_facts(self) -> dict[str, Any]:
        return self.space.run_facts()

    def summary(self) -> dict[str, Any]:
        return self.space.summary()

    def artifacts(self) -> dict[str, Any]:
        return self.space.artifacts()

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space.load_state_dict(state["space"])
