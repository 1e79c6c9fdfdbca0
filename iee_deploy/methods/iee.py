"""IEE: Iterative Exploitation and Exploration (the paper's Algorithm 1), for any sparsity space.

Each IEE update step t (period dT = H + J + Q iterations, see `schedule.iee_step`):
  1. Importance Estimation (H iterations): train Theta_K.
  2. Prune (Eq. 2): move the Omega_t least important units of Theta_K to Theta_P.
  3. Accuracy Improvement (J iterations): train the pruned Theta_K.
  4. Reactivate & Explore (Q iterations): every unit of Theta_P active again with its most
     recently used (MRU) value; Theta_K frozen, only Theta_P trains.
  5. Grow (Eq. 4): move the Omega_t most important units of Theta_P (by the same criterion as
     Prune, measured after exploring) to Theta_K; the rest of Theta_P goes dormant again.
Omega_t = `update_fraction(t / T)` of the active budget (cosine decay unstructured, exponential structured);
updates stop after `updates_end` of training (3/4 unstructured, epoch 5 of 130 structured: appendix 3).

Extension point: IEE only talks to an `ExplorationSpace`. `WeightSpace` (unstructured and N:M;
importance |w|, top-k per layer or global) is one. `iee_deploy.structured.ChannelSpace` is the
structured one, over channel groups: `budget(fraction)` in ms as a share of the latency budget Psi,
`importance()` as the Taylor score on BN accumulated in `accumulate_importance()` (called after
every backward), `prune` as the knapsack Knapsack(I, R, Psi - Omega_t) over Theta_K and `grow` as
Knapsack(I, R, Psi - R(Theta_K)) over Theta_P (paper appendix 4), and a `state` whose masks switch
whole channels. The schedule, the budget decay and the hooks here stay the same.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import torch

from iee_deploy.errors import UserError
from iee_deploy.flops import StepCost, iee_train_flops
from iee_deploy.methods.base import GrowCriterion, Space, SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.schedule import (
    PAPER_HJQ,
    Event,
    Stage,
    fraction_words,
    iee_period,
    iee_step,
    iee_updates,
    update_fraction,
)
from iee_deploy.sparse.state import GrowInit
from iee_deploy.sparse.tracking import UpdateRecord

Budget = TypeVar("Budget")


class ExplorationSpace(Space, Protocol[Budget]):
    """What IEE needs from a sparsity space (see the module docstring)."""

    def budget(self, fraction: float) -> Budget:
        """Omega_t for `fraction` of the active budget Psi, in the space's own units."""
        ...

    def importance(self) -> list[torch.Tensor]:
        """I(.) of every unit (read for Theta_P at Grow)."""
        ...

    def random_scores(self) -> list[torch.Tensor]:
        """Random scores of every unit, identical on all ranks (random-grow ablation)."""
        ...

    def accumulate_importance(self) -> None:
        """Called after every backward, for criteria that average over iterations (Taylor)."""
        ...

    def prune(self, budget: Budget, step: int, t: int) -> UpdateRecord:
        """Eq. 2: move the `budget` least important units of Theta_K to Theta_P."""
        ...

    def reactivate(self, init: GrowInit, freeze: bool) -> None:
        """Start Reactivate & Explore: Theta_P active with MRU (or zero) values; Theta_K frozen if `freeze`."""
        ...

    def grow(self, budget: Budget, scores: list[torch.Tensor], step: int, t: int) -> UpdateRecord:
        """Eq. 4: move the `budget` best-scoring units of Theta_P to Theta_K; end the exploration."""
        ...


class IEE(SparsityMethod, Generic[Budget]):
    """IEE over an `ExplorationSpace` (see the module docstring)."""

    name = "iee"
    options = frozenset({"hjq", "omega0", "omega_decay", "freeze", "grow_init", "grow_criterion"})

    def __init__(self, space: ExplorationSpace[Budget], config: SparsityConfig) -> None:
        super().__init__(space, config)
        self.explorer = space
        self.init = GrowInit(config.grow_init or GrowInit.MRU)
        self.criterion = GrowCriterion(config.grow_criterion or GrowCriterion.MAGNITUDE)
        self.hjq = config.hjq or PAPER_HJQ
        self.period_reason = "set in the config (hjq)"
        self.updates = 0

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        cfg = self.config
        if cfg.hjq is None:  # the paper's period, or the short-run rule (a function of the run's length only)
            period = iee_period(ctx.total_steps, cfg.updates_end)
            self.hjq, self.period_reason = period.hjq, period.reason
        h, j, q = self.hjq  # explicit values are checked by SparsityConfig
        self.updates = iee_updates(ctx.total_steps, h + j + q, cfg.updates_end)
        if self.updates == 0:
            raise UserError(f"no IEE update fits: a period of H+J+Q = {h + j + q} steps is longer than the first "
                            f"{fraction_words(cfg.updates_end)} of the {ctx.total_steps} training steps",
                            "lower `hjq`, raise `update_end` or train for more `epochs`",
                            fields=("hjq", "update_end", "epochs"))

    def _schedule(self, step: int) -> tuple[Stage, tuple[Event, ...], int]:
        s = iee_step(step, *self.hjq, self.updates)
        return s.stage, s.events, s.t

    def _budget(self, t: int) -> Budget:
        return self.explorer.budget(update_fraction(t / self.updates, self.config.omega0, self.config.decay))

    def on_step_start(self, step: int) -> list[UpdateRecord]:
        _, events, t = self._schedule(step)
        records = []
        for event in events:
            if event is Event.PRUNE:
                records.append(self.explorer.prune(self._budget(t), step, t))
            elif event is Event.REACTIVATE:
                self.explorer.reactivate(self.init, self.config.freeze)
            else:  # Event.GROW closes update t - 1, whose Reactivate & Explore just ended
                scores = self.explorer.importance() if self.criterion is GrowCriterion.MAGNITUDE \
                    else self.explorer.random_scores()
                records.append(self.explorer.grow(self._budget(t - 1), scores, step, t - 1))
        return records

    def after_backward(self, step: int) -> list[UpdateRecord]:
        self.explorer.accumulate_importance()
        return []

    def step_cost(self, step: int) -> StepCost:
        if self._schedule(step)[0] is Stage.REACTIVATE_EXPLORE:
            return StepCost.DENSE_FORWARD if self.config.freeze else StepCost.DENSE
        return StepCost.SPARSE

    def in_update(self, step: int) -> bool:
        """Between Prune (the first Accuracy Improvement step) and the Grow at the start of the next period."""
        return self._schedule(step)[0] in (Stage.ACCURACY_IMPROVEMENT, Stage.REACTIVATE_EXPLORE)

    def stage_name(self, step: int) -> str:
        stage, _, t = self._schedule(step)
        return stage.value if stage is Stage.FINAL else f"{stage.value} t={t}"

    def appendix_train_flops(self, zeta_p: float, zeta_d: float) -> float:
        return iee_train_flops(*self.hjq, zeta_p, zeta_d, self.config.updates_end)

    def describe(self) -> dict[str, Any]:
        h, j, q = self.hjq
        return {"h": h, "j": j, "q": q, "period_reason": self.period_reason, "updates": self.updates,
                "update_end_step": self.updates * (h + j + q),
                "grow_init": self.init.value, "grow_criterion": self.criterion.value, "freeze": self.config.freeze,
                "omega0": self.config.omega0, "omega_decay": self.config.decay.value, "update_end": self.config.updates_end}
