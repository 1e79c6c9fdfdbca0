"""Channels under a latency budget as a sparsity space: what IEE and HALP update (paper appendix 4).

`ChannelSpace` implements `iee_deploy.methods.iee.ExplorationSpace[float]` over the prunable
channel groups of the dependency graph, with budgets in ms of predicted latency:
- `budget(fraction)`: Omega_t = fraction * Psi;
- `importance()`: Taylor scores (`taylor.py`) accumulated by `accumulate_importance()` after every
  backward and reset at every prune, reactivate and grow;
- `prune(Omega_t)` = `prune_to(Psi - Omega_t)`: Knapsack(I, R, Psi - Omega_t) over Theta_K, each group
  keeping its k most important active units (`costs.prune_problem`);
- `reactivate`: every unit of Theta_P back with its MRU values, Theta_K frozen (`ChannelMasks`);
- `grow`: Knapsack(I, R, Psi - predicted(Theta_K)) over Theta_P after exploring, each group adding
  its k most important exploration units (k = 0 allowed); the headroom is Omega_t plus what the
  prune's rounding left unused, so R(Theta_K) returns to about Psi, as the paper keeps it.
Every solution is checked with the true prediction (`costs.solve_within`). A prune keeps
predicted(Theta_K) <= its target (Psi - Omega_t, or HALP's step target), a grow <= Psi; when the
linearised costs cannot reach that, a prune falls back to the largest uniform keep ratio of Theta_K
that fits and a grow adds nothing, so once Theta_K is within Psi it never leaves it.

With a measured budget (`MeasuredBudget`), Psi is re-aimed once, where Theta_K first reaches it (the
random start, or a descent's last prune: `prune_to_psi`), until the pruned network's latency
measured on this machine meets the budget; `asked_psi` keeps the budget as given.

Starting points (`Start`): `scratch`, a random Theta_K with the same keep ratio in every group (the
largest that fits Psi, by bisection), or `dense`, every channel active (a trained checkpoint that
HALP's progressive pruning brings down to Psi).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import partial
from typing import Any

import torch
from torch import nn

from iee_deploy.distributed import Distributed
from iee_deploy.graph import DependencyGraph, build_dependency_graph, prune_model
from iee_deploy.models.detection import network_of
from iee_deploy.sparse import selection
from iee_deploy.sparse.state import GrowInit, TrainableSet
from iee_deploy.sparse.tracking import StructureTracker, UpdateRecord
from iee_deploy.structured.budget import LatencySource, open_latency_model, resolve_budget
from iee_deploy.structured.costs import (
    Deltas,
    Solved,
    count_deltas,
    grow_problem,
    largest_uniform_ratio,
    prune_problem,
    smallest_count,
    solve_within,
    touching_layers,
    unit_multiple,
)
from iee_deploy.structured.masks import ChannelMasks
from iee_deploy.structured.measured import MeasuredBudget, settle
from iee_deploy.structured.taylor import TaylorImportance
from solvers import Selection

Tensor = torch.Tensor


class Start(StrEnum):
    SCRATCH = "scratch"  # random Theta_K meeting Psi
    DENSE = "dense"  # every channel active; a descent (HALP) prunes to Psi


class ChannelSpace:
    """Theta_K / Theta_P over channel units with a latency budget (see the module docstring)."""

    def __init__(self, model: nn.Module, source: LatencySource, *, latency_ms: float | None = None,
                 latency_ratio: float | None = None, start: Start | str = Start.SCRATCH, seed: int = 0,
                 dist: Distributed | None = None, solver: str = "cpsat", measured: MeasuredBudget | None = None) -> None:
        self.source = source
        self.measured = measured
        self.measured_record: dict[str, Any] | None = None  # MeasuredBudget's outcome, once settled
        self.latency = source.model
        self.dist = dist or Distributed()
        self.solver = solver
        self.generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        res = source.meta.resolution
        # a detector: the graph of its network part, whose layers have the detector's names (masked, pruned by them)
        self.network = network_of(model)
        self.graph: DependencyGraph = build_dependency_graph(self.network, torch.zeros(1, 3, res, res, device=device))
        self.groups = self.graph.prunable_groups
        self.ids = [g.id for g in self.groups]
        per_unit = {g.id: max((r.channels_per_unit for r in g.owners), default=1) for g in self.groups}
        self.multiple = {g.id: unit_multiple(per_unit[g.id], self.latency.align) for g in self.groups}
        self.sizes = {g.id: g.size for g in self.groups}
        self.smallest = {g.id: smallest_count(g.size, g.min_keep, self.multiple[g.id]) for g in self.groups}
        self.touching = touching_layers(self.graph.layers)
        self.dense_ms = self.predict(self.sizes)
        self.smallest_ms = self.predict(self.smallest)
        self.psi = resolve_budget(latency_ms, latency_ratio, self.dense_ms, self.smallest_ms)
        self.asked_psi = self.psi
        self.start = Start(start)
        if self.start is Start.SCRATCH:
            uniform = partial(largest_uniform_ratio, self.predict, self.sizes, self.smallest, self.multiple)
            if measured is not None:  # the random start at Psi is where Theta_K first reaches it
                self._settle(lambda aim_ms: uniform(aim_ms)[1])
            self.init_ratio, counts = uniform(self.psi)
            units = [self._random_units(g.size, counts[g.id], device) for g in self.groups]
        else:
            self.init_ratio = 1.0
            units = [torch.ones(g.size, dtype=torch.bool, device=device) for g in self.groups]
        self.masks = ChannelMasks(model, self.graph, self.groups, [self.dist.broadcast_(u) for u in units])
        self.initial_ms = self.predicted_ms()
        self.taylor = TaylorImportance(model, self.groups)
        self.tracker = StructureTracker()

    def _random_units(self, size: int, k: int, device: torch.device) -> Tensor:
        units = torch.zeros(size, dtype=torch.bool)
        units[torch.randperm(size, generator=self.generator)[:k]] = True
        return units.to(device)

    @property
    def state(self) -> ChannelMasks:
        return self.masks

    # --- latency ---------------------------------------------------------------------------
    def predict(self, counts: Mapping[str, int]) -> float:
        """Predicted latency (ms per LUT batch) of the configuration with `counts` units per group."""
        return self.latency.predict(self.graph.layer_channels(counts))

    def predicted_ms(self) -> float:
        """Predicted latency of Theta_K."""
        return self.predict(self.masks.counts())

    def _deltas(self, counts: Mapping[str, int]) -> Deltas:
        """Latency change of setting one group to each of several counts, the others at `counts`."""
        channels = self.graph.layer_channels(counts)
        return lambda gid, ks: count_deltas(self.latency, self.touching.get(gid, []), channels, counts[gid], ks)

    # --- scores ----------------------------------------------------------------------------
    def importance(self) -> list[Tensor]:
        """Taylor score of every unit, averaged since the last structure event."""
        return self.taylor.average()

    def random_scores(self) -> list[Tensor]:
        return [torch.rand(g.size, generator=self.generator, dtype=torch.float64) for g in self.groups]

    def accumulate_importance(self) -> None:
        self.taylor.accumulate()

    def budget(self, fraction: float) -> float:
        """Omega_t in ms: `fraction` of Psi."""
        return fraction * self.psi

    # --- structure updates -----------------------------------------------------------------
    def prune(self, budget: float, step: int, t: int) -> UpdateRecord:
        """Prune (Eq. 2): Knapsack(I, R, Psi - Omega_t) over Theta_K."""
        return self.prune_to(self.psi - budget, step, t, omega_ms=budget)

    def prune_to(self, target_ms: float, step: int, t: int, omega_ms: float | None = None) -> UpdateRecord:
        """Keep the most important active units whose predicted latency is <= `target_ms` (at least the smallest)."""
        scores = self._prune_scores()
        return self._apply_prune(scores, *self._solve_prune(target_ms, scores), step, t, omega_ms)

    def prune_to_psi(self, step: int, t: int) -> UpdateRecord:
        """A descent's last prune, down to Psi. With a measured budget (the first time), Psi is re-aimed until the
        pruned network's measured latency meets the budget (`MeasuredBudget.settle`) and becomes the kept aim."""
        if self.measured is None or self.measured_record is not None:
            return self.prune_to(self.psi, step, t)
        scores = self._prune_scores()
        solutions: dict[float, tuple[float, Solved | None, dict[str, int]]] = {}

        def counts_for(aim_ms: float) -> dict[str, int]:
            solutions[aim_ms] = self._solve_prune(aim_ms, scores)
            return dict(solutions[aim_ms][2])

        self._settle(counts_for)
        return self._apply_prune(scores, *solutions[self.psi], step, t, None)

    def _settle(self, counts_for: Callable[[float], dict[str, int]]) -> None:
        """Psi := the aim whose structure (`counts_for`) measured nearest the budget (see `MeasuredBudget`)."""
        assert self.measured is not None
        measured = self.measured
        dense = measured.structure(self.network, self.graph, self.sizes)  # one copy, timed beside every candidate
        settled = settle(lambda counts: measured.time(dense, measured.structure(self.network, self.graph, counts)),
                         counts_for, self.psi, self.dense_ms, self.smallest_ms, measured.tolerance, measured.table_dense_ms)
        self.psi, self.measured_record = settled.aim_ms, settled.summary()

    def _prune_scores(self) -> list[Tensor]:
        """Theta_K's importance on its masks' devices, for one prune (Theta_K must not be frozen for exploring)."""
        if self.masks.trainable is not TrainableSet.ACTIVE:
            raise RuntimeError("prune while exploring")
        return [s.to(u.device) for s, u in zip(self.importance(), self.masks.units)]

    def _solve_prune(self, target_ms: float, scores: list[Tensor]) -> tuple[float, Solved | None, dict[str, int]]:
        """(limit, the knapsack's solution or None, units to keep per group) of a prune of Theta_K to `target_ms`."""
        limit = max(target_ms, self.smallest_ms)
        counts = self.masks.counts()
        active = {g: s[u].cpu().numpy() for g, s, u in zip(self.ids, scores, self.masks.units)}
        solved = solve_within(
            lambda b: prune_problem(active, counts, self.smallest, self.multiple, self._deltas(counts), b),
            lambda sel: {**counts, **sel.counts}, self.predict, limit - self.predict(counts), limit, self.solver)
        if solved is None:  # keep the largest uniform share of every group's active units that fits
            keep = largest_uniform_ratio(self.predict, counts, {g: min(self.smallest[g], counts[g]) for g in counts},
                                         self.multiple, limit)[1]
        else:
            keep = solved.counts
        return limit, solved, keep

    def _apply_prune(self, scores: list[Tensor], limit: float, solved: Solved | None, keep: Mapping[str, int],
                     step: int, t: int, omega_ms: float | None) -> UpdateRecord:
        kept = [selection.largest(s, u, keep[g]) for g, s, u in zip(self.ids, scores, self.masks.units)]
        removed = [self.dist.broadcast_(u & ~k) for u, k in zip(self.masks.units, kept)]
        self.masks.prune_units(removed)
        self.taylor.reset()
        record = self.tracker.record_prune(self.masks.flat_active(), step, t, sum(int(r.sum()) for r in removed))
        return self._described(record, limit, solved, omega_ms)

    def reactivate(self, init: GrowInit, freeze: bool) -> None:
        """Reactivate & Explore: Theta_P back with MRU (or zero) values; Theta_K frozen if `freeze`."""
        self.masks.reactivate(init, freeze)
        self.taylor.reset()

    def grow(self, budget: float, scores: list[Tensor], step: int, t: int) -> UpdateRecord:
        """Grow (Eq. 4): Knapsack(I, R, Psi - predicted(Theta_K)) over Theta_P; ends the exploration.

        `budget` (Omega_t) is recorded; the knapsack's budget is the headroom to Psi (see the module docstring).
        """
        counts = self.masks.counts()
        candidates = [~u for u in self.masks.units]
        on_device = [s.to(c.device) for s, c in zip(scores, candidates)]
        explore = {g: s[c].cpu().numpy() for g, s, c in zip(self.ids, on_device, candidates)}
        solved = solve_within(lambda b: grow_problem(explore, counts, self.multiple, self._deltas(counts), b),
                              lambda sel: {g: counts[g] + sel.counts[g] for g in counts}, self.predict,
                              self.psi - self.predict(counts), self.psi, self.solver)
        adds = self._grow_counts(solved)
        added = [self.dist.broadcast_(selection.largest(s, c, adds[g]))
                 for g, s, c in zip(self.ids, on_device, candidates)]
        self.masks.grow_units(added, GrowInit.MRU)
        self.taylor.reset()
        record = self.tracker.record_grow(self.masks.flat_active(), torch.cat(added), step, t)
        return self._described(record, self.psi, solved, budget)

    def _grow_counts(self, solved: Solved | None) -> dict[str, int]:
        """Units to add per group: the solver's counts, or none when no solution fits Psi."""
        return {g: 0 for g in self.ids} if solved is None else {g: int(solved.selection.counts[g]) for g in self.ids}

    def _described(self, record: UpdateRecord, limit: float, solved: Solved | None, omega_ms: float | None) -> UpdateRecord:
        sel: Selection | None = None if solved is None else solved.selection
        record.extra.update(
            predicted_latency_ms=self.predicted_ms(), limit_ms=limit, budget_ms=self.psi, omega_ms=omega_ms,
            channels=self.masks.counts(), solver=None if sel is None else {
                "counts": dict(sel.counts), "status": sel.status, "objective": sel.objective, "cost_ms": sel.cost,
                "attempts": solved.attempts if solved else None, "budget_ms": solved.budget if solved else None,
                "seconds": sel.solve_time_s},
            fallback=solved is None)
        return record

    # --- what a run records ----------------------------------------------------------------
    def run_facts(self) -> dict[str, Any]:
        """RunInfo fields of a structured run."""
        return {"sparsity": None, "nm": None, "target": self.source.meta.target, "lut": self.source.path,
                "budget_ms": self.asked_psi, "predicted_latency_ms": self.predicted_ms()}

    def summary(self) -> dict[str, Any]:
        """summary.json's `latency` section: budget, predictions, the LUT's facts, units kept per group.

        `budget_ms` is the budget as given; `aim_ms` is Psi, what the knapsack kept the prediction within (the budget,
        unless a measured budget re-aimed it: `measured_budget`); `within_budget` compares the prediction with Psi."""
        predicted = self.predicted_ms()
        return {"latency": {**self.source.facts(), "budget_ms": self.asked_psi, "aim_ms": self.psi,
                            "measured_budget": self.measured_record, "dense_ms": self.dense_ms,
                            "smallest_ms": self.smallest_ms, "initial_ms": self.initial_ms, "predicted_ms": predicted,
                            "ratio_to_dense": predicted / self.dense_ms, "within_budget": predicted <= self.psi,
                            "start": self.start.value, "init_keep_ratio": self.init_ratio,
                            "taylor_skipped_iterations": self.taylor.skipped,
                            "groups": {g: {"kept": k, "size": self.sizes[g]} for g, k in self.masks.counts().items()}}}

    def artifacts(self) -> dict[str, Any]:
        """channels.json: the final channel configuration (kept unit indices per group, layer widths)."""
        counts = self.masks.counts()
        return {"channels.json": {
            "budget_ms": self.asked_psi, "aim_ms": self.psi, "predicted_latency_ms": self.predict(counts),
            **self.source.facts(),
            "groups": {g: {"size": self.sizes[g], "kept": counts[g], "indices": idx.tolist()}
                       for g, idx in self.masks.keep().items()},
            "layers": {name: list(c) for name, c in self.graph.layer_channels(counts).items()}}}

    def pruned_model(self, model: nn.Module) -> nn.Module:
        """Theta_K physically pruned with the dependency graph (`prune_model`), on the CPU."""
        with self.masks.active_only():
            pruned = prune_model(model, self.graph, self.masks.keep()).cpu()
        for p in pruned.parameters():
            p.grad = None
        return pruned

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks.state_dict(), "taylor": self.taylor.state_dict(),
                "tracker": self.tracker.state_dict(), "generator": self.generator.get_state(),
                "psi": self.psi, "measured_budget": self.measured_record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state["masks"])
        self.taylor.load_state_dict(state["taylor"])
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["generator"])
        self.psi = state.get("psi", self.psi)  # a measured budget re-aims Psi once; checkpoints before it have none
        self.measured_record = state.get("measured_budget", self.measured_record)


def smallest_latency_ratio(model: nn.Module, lut: str, target: str | None = None) -> float:
    """The smallest `latency_ratio` a budget over `lut` can take for `model`: every group at its smallest width,
    over the dense network, as the table predicts them (a flat table, an int8 one at small sizes, stops short of 0.5)."""
    space = ChannelSpace(model, open_latency_model(lut, target, model), latency_ratio=1.0, start=Start.DENSE)
    return space.smallest_ms / space.dense_ms
