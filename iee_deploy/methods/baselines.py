"""The baselines of the paper's Tables 2-3, on the same `WeightSpace` and the same loop as IEE.

- static: a fixed random mask at the target distribution, never updated.
- SET (Mocanu et al. 2018): every dT steps drop the smallest-magnitude active weights and grow
  as many random ones, starting at zero.
- RigL (Evci et al. 2020): every dT = 100 steps drop by magnitude and grow the inactive weights
  with the largest dense gradient |dL/dw|, starting at zero; drop fraction
  alpha/2 (1 + cos(pi step / T_end)) with alpha = 0.3 and T_end = 3/4 of training. A weight
  dropped and regrown in the same update keeps its value (google-research/rigl's default).
- GMP (Zhu & Gupta 2017): dense-to-sparse; every dT steps prune the smallest active weights to
  the cubic schedule s_t = S (1 - (1 - progress)^3), reaching the exact target distribution
  (and N:M pattern) at 3/4 of training. Pruned weights never come back.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch

from iee_deploy.errors import UserError
from iee_deploy.flops import StepCost, rigl_train_flops
from iee_deploy.methods.base import SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.schedule import (
    dst_update_due,
    fraction_words,
    gmp_sparsity,
    gmp_update_due,
    resolve_period,
    update_fraction,
    update_window,
)
from iee_deploy.sparse.distributions import Distribution
from iee_deploy.sparse.state import GrowInit
from iee_deploy.sparse.tracking import UpdateRecord
from iee_deploy.sparse.weight_space import WeightBudget, WeightSpace

PAPER_DELTA_T = 100


def _interval(config: SparsityConfig, total_steps: int) -> int:
    return config.delta_t or resolve_period(PAPER_DELTA_T, total_steps, config.updates_end)


class Static(SparsityMethod):
    """A fixed random sparse mask (the 'Static' rows of Tables 2-3)."""

    name = "static"

    def appendix_train_flops(self, zeta_p: float, zeta_d: float) -> float:
        return 3 * zeta_p


class DynamicSparseTraining(SparsityMethod):
    """Drop by magnitude and grow by `grow_scores` at once, every dT steps (SET, RigL)."""

    options = frozenset({"delta_t", "omega0", "omega_decay", "grow_init"})

    def __init__(self, space: WeightSpace, config: SparsityConfig) -> None:
        super().__init__(space, config)
        self.weights = space
        self.init = GrowInit(config.grow_init or GrowInit.ZERO)
        self.delta_t = config.delta_t or PAPER_DELTA_T
        self.end_step = 0

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.delta_t = _interval(self.config, ctx.total_steps)
        self.end_step = update_window(ctx.total_steps, self.config.updates_end)
        if self.delta_t >= self.end_step:
            raise UserError(f"no {self.name} update fits: dT = {self.delta_t} steps is not before the end of updates "
                            f"(step {self.end_step} of {ctx.total_steps})", "lower `delta_t` or train for more `epochs`",
                            fields=("delta_t", "epochs"))

    @abstractmethod
    def grow_scores(self) -> list[torch.Tensor]:
        """Scores ranking the inactive weights for growth (read before the drop)."""

    def after_backward(self, step: int) -> list[UpdateRecord]:
        if not dst_update_due(step, self.delta_t, self.end_step):
            return []
        t = step // self.delta_t - 1
        budget: WeightBudget = self.weights.budget(update_fraction(step / self.end_step, self.config.omega0,
                                                                   self.config.decay))
        scores = self.grow_scores()
        removed = self.weights.select_prune(budget)
        pruned = self.weights.apply_prune(removed, step, t)
        grown = self.weights.grow(budget, scores, step, t, self.init, keep_value=removed)
        return [pruned, grown]

    def describe(self) -> dict[str, Any]:
        return {"delta_t": self.delta_t, "update_end_step": self.end_step, "grow_init": self.init.value,
                "omega0": self.config.omega0, "omega_decay": self.config.decay.value, "update_end": self.config.updates_end}


class SET(DynamicSparseTraining):
    """Sparse Evolutionary Training: magnitude drop, random grow."""

    name = "set"

    def grow_scores(self) -> list[torch.Tensor]:
        return self.weights.random_scores()

    def appendix_train_flops(self, zeta_p: float, zeta_d: float) -> float:
        return 3 * zeta_p


class RigL(DynamicSparseTraining):
    """Rigged Lottery: magnitude drop, dense-gradient grow."""

    name = "rigl"

    def grow_scores(self) -> list[torch.Tensor]:
        return self.weights.gradient_scores()

    def step_cost(self, step: int) -> StepCost:
        return StepCost.DENSE_FORWARD if dst_update_due(step, self.delta_t, self.end_step) else StepCost.SPARSE

    def stage_name(self, step: int) -> str:
        return "update" if dst_update_due(step, self.delta_t, self.end_step) else "sparse"

    def appendix_train_flops(self, zeta_p: float, zeta_d: float) -> float:
        return rigl_train_flops(self.delta_t, zeta_p, zeta_d, self.config.updates_end)


class GMP(SparsityMethod):
    """Gradual magnitude pruning from dense (see the module docstring)."""

    name = "gmp"
    options = frozenset({"delta_t", "gmp_start"})

    def __init__(self, space: WeightSpace, config: SparsityConfig) -> None:
        super().__init__(space, config)
        self.weights = space
        self.delta_t = config.delta_t or PAPER_DELTA_T
        self.start_step = self.end_step = 0

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.start_step = int(self.config.gmp_start * ctx.total_steps)
        self.end_step = update_window(ctx.total_steps, self.config.updates_end)
        if self.end_step <= self.start_step:
            raise UserError(f"GMP has no room: `gmp_start` {self.config.gmp_start:g} is not before `update_end` "
                            f"{fraction_words(self.config.updates_end)}", "choose `gmp_start` < `update_end`",
                            fields=("gmp_start", "update_end"))
        if self.config.delta_t is None:
            self.delta_t = max(1, min(PAPER_DELTA_T, (self.end_step - self.start_step) // 4))

    def _budget(self, step: int) -> WeightBudget:
        """Weights to prune now so that each layer (or the model) is on the cubic schedule."""
        w = self.weights
        progress = gmp_sparsity(step, 1.0, self.start_step, self.end_step)
        active = w.active_counts()
        goals = [n if fixed else n - int(round(progress * (n - target)))
                 for n, target, fixed in zip(w.numels, w.targets, w.fixed)]
        if w.distribution is Distribution.GLOBAL:
            return WeightBudget(total=sum(active) - sum(goals))
        return WeightBudget(per_layer=tuple(a - g for a, g in zip(active, goals)))

    def on_step_start(self, step: int) -> list[UpdateRecord]:
        if not gmp_update_due(step, self.delta_t, self.start_step, self.end_step):
            return []
        t = math.ceil((step - self.start_step) / self.delta_t) - 1
        return [self.weights.prune(self._budget(step), step, t, keep_nm=True)]

    def describe(self) -> dict[str, Any]:
        return {"delta_t": self.delta_t, "start_step": self.start_step, "end_step": self.end_step}
