"""Unstructured weights as a sparsity space: budgets, selections and structure updates.

This is the space IEE explores for unstructured and N:M sparsity (importance = |w|), and the
one the RigL, SET, static and GMP baselines share. The structured (channel) space offers the
same operations to IEE (`budget`, `prune`, `reactivate`, `grow`) with channel groups, Taylor
importance and a latency knapsack; see `iee_deploy.methods.iee.ExplorationSpace`.

Budgets: Omega_t is a fraction of the active budget Psi. Per layer (Uniform, ERK, N:M) it is
`round(fraction * target_l)` weights of each layer; for the Non-uniform distribution it is
`round(fraction * sum(target))` weights ranked over all layers. Layers that are dense by
construction (ERK-capped, or unable to carry N:M) are never pruned.

Every selection is taken on every rank from identical inputs and rank 0's is broadcast, so
all DDP ranks apply the same structure update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError
from iee_deploy.sparse import selection
from iee_deploy.sparse.distributions import Distribution, layer_active_counts
from iee_deploy.sparse.masks import WeightMasks, prunable_layers
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.state import GrowInit, layer_sparsity, overall_sparsity
from iee_deploy.sparse.tracking import StructureTracker, UpdateRecord

Tensor = torch.Tensor


@dataclass(frozen=True)
class WeightBudget:
    """Omega_t in weights: per layer, or one number ranked globally (Non-uniform)."""

    per_layer: tuple[int, ...] | None = None
    total: int | None = None


class WeightSpace:
    """Masks of a model's Conv2d/Linear weights at a target sparsity and layer distribution."""

    def __init__(self, model: nn.Module, sparsity: float, distribution: Distribution | str = Distribution.ERK,
                 nm: NMPattern | None = None, seed: int = 0, dense_start: bool = False,
                 dist: Distributed | None = None) -> None:
        self.distribution = Distribution(distribution)
        self.sparsity = sparsity
        self.nm = nm
        self.dist = dist or Distributed()
        self.generator = torch.Generator().manual_seed(seed)
        shapes = [tuple(m.weight.shape) for _, m in prunable_layers(model)]  # type: ignore[union-attr, arg-type]
        if not shapes:
            raise UserError("the model has no trainable Conv2d or Linear layer to sparsify", "pass a network with "
                            "convolutions or linear layers whose weights train (frozen ones stay dense)",
                            fields=("model",))
        self.shapes = shapes
        self.numels = [int(torch.Size(s).numel()) for s in shapes]
        names = [name for name, _ in prunable_layers(model)]
        if nm is not None:
            self.nm_layers = [nm.fits(s) for s in shapes]
            if not any(self.nm_layers):
                raise UserError(f"no layer can hold the {nm.n}:{nm.m} pattern (none has a multiple of {nm.m} inputs "
                                "per output)", "choose an M that divides the layers' input widths, e.g. 2:4",
                                fields=("nm",))
            self.targets = [n * nm.n // nm.m if fits else n for n, fits in zip(self.numels, self.nm_layers)]
        else:
            self.nm_layers = [False] * len(shapes)
            self.targets = layer_active_counts(shapes, sparsity, self.distribution)
            empty = [(name, n) for name, n, t in zip(names, self.numels, self.targets) if t == 0]
            if empty:
                raise UserError(f"sparsity {sparsity:g} with the {self.distribution.value} distribution leaves layer "
                                f"'{empty[0][0]}' ({empty[0][1]} weights) with no weight at all"
                                + (f", and {len(empty) - 1} more layers" if len(empty) > 1 else ""),
                                "lower `sparsity` (an empty layer cuts the network)", fields=("sparsity",))
        self.fixed = [t == n for t, n in zip(self.targets, self.numels)]
        self.device = next(model.parameters()).device
        masks = [torch.ones(s, dtype=torch.bool, device=self.device) for s in shapes] if dense_start else self._random_masks()
        self.masks = WeightMasks(model, masks)
        self.tracker = StructureTracker()

    @property
    def state(self) -> WeightMasks:
        return self.masks

    # --- scores ----------------------------------------------------------------------------
    def importance(self) -> list[Tensor]:
        """Importance I(.) of every weight: the magnitude |w| of the value the forward pass uses now."""
        return [p.detach().abs() for p in self.masks.params]

    def random_scores(self) -> list[Tensor]:
        """Uniform random scores from the space's seeded generator (same on every rank)."""
        return [torch.rand(s, generator=self.generator).to(self.device) for s in self.shapes]

    def gradient_scores(self) -> list[Tensor]:
        """|dL/dw| of every weight, active or not (RigL's grow criterion)."""
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().abs() for p in self.masks.params]

    def accumulate_importance(self) -> None:
        """Called after every backward; magnitude importance is read at prune/grow time, so nothing to do."""

    # --- budgets and selections ------------------------------------------------------------
    def budget(self, fraction: float) -> WeightBudget:
        """Omega_t for `fraction` of the active budget (0.3 at t=0 by default)."""
        if self.distribution is Distribution.GLOBAL:
            return WeightBudget(total=int(round(fraction * sum(t for t, f in zip(self.targets, self.fixed) if not f))))
        return WeightBudget(per_layer=tuple(0 if f else int(round(fraction * t)) for t, f in zip(self.targets, self.fixed)))

    def _random_masks(self) -> list[Tensor]:
        """Random Theta_K with the target count per layer (N:M: N random weights per group).

        Under the Non-uniform distribution the initial counts are ERK's; ranking is global afterwards.
        """
        scores = self.random_scores()
        full = [torch.ones_like(s, dtype=torch.bool) for s in scores]
        if self.nm is not None:
            masks = self._nm_top(scores, full)
        else:
            masks = [selection.largest(s, c, k) for s, c, k in zip(scores, full, self.targets)]
        return self._agree(masks)

    def _nm_top(self, scores: list[Tensor], candidates: list[Tensor]) -> list[Tensor]:
        """In every N:M group the N highest-scoring candidates; layers without the pattern keep all candidates."""
        assert self.nm is not None
        out = []
        for s, c, fits, shape in zip(scores, candidates, self.nm_layers, self.shapes):
            if not fits:
                out.append(c.clone())
                continue
            rows = self.nm.to_groups(c)
            keep = torch.full((rows.shape[0],), self.nm.n, device=c.device)
            out.append(self.nm.from_groups(selection.largest_per_row(self.nm.to_groups(s), rows, keep), shape))
        return out

    def select_prune(self, budget: WeightBudget, keep_nm: bool = False) -> list[Tensor]:
        """ArgTopK(-I(Theta_K), Omega_t): the least important active weights within the budget.

        With `keep_nm`, each N:M group's N most important weights are protected (gradual
        pruning towards N:M ends exactly at N per group).
        """
        scores = self.importance()
        candidates = [m & ~torch.tensor(f, device=m.device) for m, f in zip(self.masks.masks, self.fixed)]
        if keep_nm and self.nm is not None:
            candidates = [c & ~top for c, top in zip(candidates, self._nm_top(scores, self.masks.masks))]
        if budget.total is not None:
            chosen = selection.smallest_global(scores, candidates, budget.total)
        else:
            assert budget.per_layer is not None
            chosen = [selection.smallest(s, c, k) for s, c, k in zip(scores, candidates, budget.per_layer)]
        return self._agree(chosen)

    def select_grow(self, budget: WeightBudget, scores: list[Tensor], candidates: list[Tensor]) -> list[Tensor]:
        """ArgTopK(I(Theta_P), Omega_t) among `candidates`; N:M layers refill each group to exactly N."""
        if budget.total is not None:
            chosen = selection.largest_global(scores, candidates, budget.total)
        else:
            assert budget.per_layer is not None
            chosen = []
            for i, (s, c, k) in enumerate(zip(scores, candidates, budget.per_layer)):
                if self.nm_layers[i]:
                    assert self.nm is not None
                    deficit = self.nm.n - self.nm.to_groups(self.masks.masks[i]).sum(dim=1)
                    g = selection.largest_per_row(self.nm.to_groups(s), self.nm.to_groups(c), deficit)
                    chosen.append(self.nm.from_groups(g, self.shapes[i]))
                else:
                    chosen.append(selection.largest(s, c, k))
        return self._agree(chosen)

    def _agree(self, chosen: list[Tensor]) -> list[Tensor]:
        for c in chosen:
            self.dist.broadcast_(c)
        return chosen

    # --- structure updates -----------------------------------------------------------------
    def prune(self, budget: WeightBudget, step: int, t: int, keep_nm: bool = False) -> UpdateRecord:
        """Prune (Eq. 2): move the Omega_t smallest-magnitude active weights to Theta_P."""
        return self.apply_prune(self.select_prune(budget, keep_nm=keep_nm), step, t)

    def apply_prune(self, removed: list[Tensor], step: int, t: int) -> UpdateRecord:
        """Move the selected `removed` weights to Theta_P and record the update."""
        self.masks.prune(removed)
        return self._described(self.tracker.record_prune(self.masks.flat_active(), step, t,
                                                         sum(int(r.sum()) for r in removed)))

    def _described(self, record: UpdateRecord) -> UpdateRecord:
        record.extra.update(sparsity=overall_sparsity(self.masks), layer_sparsity=layer_sparsity(self.masks))
        return record

    def reactivate(self, init: GrowInit, freeze: bool) -> None:
        """Reactivate & Explore: all weights active with MRU (or zero) values; Theta_K frozen if `freeze`."""
        self.masks.reactivate(init, freeze)

    def grow(self, budget: WeightBudget, scores: list[Tensor], step: int, t: int,
             init: GrowInit = GrowInit.MRU, keep_value: list[Tensor] | None = None) -> UpdateRecord:
        """Grow (Eq. 4): move the Omega_t highest-scoring weights of Theta_P to Theta_K.

        Grown weights start at `init`, except those in `keep_value` (e.g. dropped and regrown in
        the same RigL update), which get their MRU value back, i.e. stay as they were.
        """
        added = self.select_grow(budget, scores, [~m for m in self.masks.masks])
        if keep_value is None:
            self.masks.grow(added, init)
        else:
            self.masks.grow([a & ~k for a, k in zip(added, keep_value)], init)
            self.masks.grow([a & k for a, k in zip(added, keep_value)], GrowInit.MRU)
        return self._described(self.tracker.record_grow(self.masks.flat_active(),
                                                        torch.cat([a.flatten() for a in added]), step, t))

    # --- what a run records ----------------------------------------------------------------
    def run_facts(self) -> dict[str, Any]:
        """RunInfo fields of an unstructured run: target sparsity and N:M pattern."""
        return {"sparsity": self.sparsity, "nm": None if self.nm is None else str(self.nm)}

    def summary(self) -> dict[str, Any]:
        """Nothing beyond the loop's sparsity section."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        return {}

    def pruned_model(self, model: nn.Module) -> nn.Module:
        """The masked model itself, on the CPU (unstructured sparsity shrinks no layer)."""
        with self.masks.active_only():
            pruned = copy.deepcopy(model).cpu()
        for p in pruned.parameters():
            p.grad = None
        return pruned

    def active_counts(self) -> list[int]:
        return [int(m.sum()) for m in self.masks.masks]

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks.state_dict(), "tracker": self.tracker.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state["masks"])
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["generator"])
