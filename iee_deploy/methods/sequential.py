"""Methods one after another on one sparsity space: e.g. structured IEE from a trained checkpoint.

`Sequential(space, config, [(A, 0.5), (B, 1.0)])` splits the structure-update window (the first
`update_end` of training) at the given fractions: A runs its whole schedule in the first half of
the window, B in the second half and then on to the end of training. Each phase is set up with a
context whose `total_steps` is its share of the window (its config should have `update_end` 1.0,
so that its updates fill that share) and sees steps counted from its own start; the records it
returns carry the run's step. A phase's structure change due exactly at its end (HALP's last prune
at the end of its window, as in a HALP run alone) applies at the start of the next phase's first
step, before that phase's own events. All phases share the space, so the structure one leaves is where the
next begins. Structured IEE from a trained checkpoint is HALP's progressive pruning down to Psi,
then IEE's prune / reactivate & explore / grow updates (`iee_deploy.methods.structured_iee`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iee_deploy.flops import StepCost
from iee_deploy.methods.base import Space, SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.schedule import update_window
from iee_deploy.sparse.tracking import UpdateRecord


class Sequential(SparsityMethod):
    """Phases of other methods on one space (see the module docstring)."""

    name = "sequential"

    def __init__(self, space: Space, config: SparsityConfig, phases: Sequence[tuple[SparsityMethod, float]]) -> None:
        super().__init__(space, config)
        ends = [end for _, end in phases]
        if not phases or any(not 0 < e <= 1 for e in ends) or ends != sorted(ends) or ends[-1] != 1.0:
            raise ValueError(f"phase ends must increase within (0, 1] and end at 1, got {ends}")
        self.phases = [method for method, _ in phases]
        self.ends = ends
        self.starts = [0] * len(phases)

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        window = update_window(ctx.total_steps, self.config.updates_end)
        bounds = [0] + [int(round(e * window)) for e in self.ends]
        self.starts = bounds[:-1]
        for method, start, end in zip(self.phases, bounds[:-1], bounds[1:]):
            method.setup(TrainContext(max(1, end - start), ctx.optimizer))

    def _phase(self, step: int) -> tuple[SparsityMethod, int]:
        i = max(i for i, s in enumerate(self.starts) if s <= step)
        return self.phases[i], step - self.starts[i]

    def _shifted(self, records: list[UpdateRecord], step: int, local: int) -> list[UpdateRecord]:
        for record in records:
            record.step += step - local
        return records

    def on_step_start(self, step: int) -> list[UpdateRecord]:
        records = []
        i = self.starts.index(step) if step in self.starts[1:] else 0
        if i > 0:  # the previous phase's schedule ends on this step
            previous, local = self.phases[i - 1], step - self.starts[i - 1]
            records += self._shifted(previous.on_step_start(local), step, local)
        method, local = self._phase(step)
        return records + self._shifted(method.on_step_start(local), step, local)

    def after_backward(self, step: int) -> list[UpdateRecord]:
        method, local = self._phase(step)
        return self._shifted(method.after_backward(local), step, local)

    def before_optimizer_step(self, step: int) -> None:
        method, local = self._phase(step)
        method.before_optimizer_step(local)

    def after_optimizer_step(self, step: int) -> None:
        method, local = self._phase(step)
        method.after_optimizer_step(local)

    def step_cost(self, step: int) -> StepCost:
        method, local = self._phase(step)
        return method.step_cost(local)

    def in_update(self, step: int) -> bool:
        method, local = self._phase(step)
        return method.in_update(local)

    def stage_name(self, step: int) -> str:
        method, local = self._phase(step)
        return f"{method.name} {method.stage_name(local)}"

    def describe(self) -> dict[str, Any]:
        return {"phases": [{"method": m.name, "start_step": s, **m.describe()} for m, s in zip(self.phases, self.starts)]}
