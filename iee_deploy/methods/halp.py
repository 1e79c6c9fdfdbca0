"""HALP (Shen et al. 2022, "Structural pruning via latency-saliency knapsack"): the structured baseline.

Prune only, from the dense model: every dT steps (NVlabs/HALP: `prune_interval` 40) the channels
are pruned down to the step's latency goal k_i = exp(a log Psi + (1 - a) log L_0), a = i / n, by
the same knapsack over the same Taylor importance as IEE's Prune (`ChannelSpace.prune_to`), so the
n-th and last prune reaches the budget Psi at the end of the update window (`update_end`); under a
measured budget (`measure_budget`) that last prune is re-aimed until the pruned network's measured
latency meets the budget (`iee_deploy.structured.measured`). Pruned
channels never return. The same class is the descent of a structured IEE run that starts from a
trained checkpoint (see `iee_deploy.methods.sequential`).
"""

from __future__ import annotations

from typing import Any

from iee_deploy.errors import UserError
from iee_deploy.methods.base import SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.schedule import halp_prune_due, halp_target, resolve_period, update_window
from iee_deploy.sparse.tracking import UpdateRecord
from iee_deploy.structured.space import ChannelSpace

PAPER_INTERVAL = 40
"""NVlabs/HALP `rn50_imagenet_prune.yaml`: prune_interval 40 (iterations)."""


class HALP(SparsityMethod):
    """Progressive latency-constrained pruning on a `ChannelSpace` (see the module docstring)."""

    name = "halp"
    options = frozenset({"delta_t"})

    def __init__(self, space: ChannelSpace, config: SparsityConfig) -> None:
        super().__init__(space, config)
        self.channels = space
        self.interval = config.delta_t or PAPER_INTERVAL
        self.prunes = 0
        self.start_ms = space.initial_ms

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        cfg = self.config
        end = update_window(ctx.total_steps, cfg.updates_end)
        self.interval = cfg.delta_t or resolve_period(PAPER_INTERVAL, ctx.total_steps, cfg.updates_end)
        self.prunes = end // self.interval
        if self.prunes == 0:
            lower = "lower `delta_t`, " if self.interval > 1 else ""  # dT is at its smallest: only a longer window helps
            raise UserError(f"no {self.name} prune step fits: dT = {self.interval} steps is longer than the "
                            f"{end} steps of the pruning window", f"{lower}raise `update_end` or train for more `epochs`",
                            fields=("delta_t", "update_end", "epochs") if lower else ("update_end", "epochs"))

    def on_step_start(self, step: int) -> list[UpdateRecord]:
        if not halp_prune_due(step, self.interval, self.prunes):
            return []
        i = step // self.interval
        if i == self.prunes:  # the last prune reaches Psi (re-aimed there under a measured budget)
            return [self.channels.prune_to_psi(step, i - 1)]
        goal = halp_target(i / self.prunes, self.start_ms, self.channels.psi)
        return [self.channels.prune_to(goal, step, i - 1)]

    def after_backward(self, step: int) -> list[UpdateRecord]:
        self.channels.accumulate_importance()
        return []

    def stage_name(self, step: int) -> str:
        return "prune" if halp_prune_due(step, self.interval, self.prunes) else "sparse"

    def describe(self) -> dict[str, Any]:
        return {"delta_t": self.interval, "prunes": self.prunes, "end_step": self.prunes * self.interval,
                "start_ms": self.start_ms, "budget_ms": self.channels.psi}
