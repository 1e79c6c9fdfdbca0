"""Structure metrics of Section 4.4: IoU of the active set between consecutive updates, and the
survival rate of grown units.

They are defined on flat boolean vectors over the units of a sparsity space (weights for
unstructured runs, channels for structured ones), so every space and every method reports them
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor


def iou(a: Tensor, b: Tensor) -> float:
    """|a & b| / |a | b| of two boolean vectors (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def survival(grown: Tensor, active: Tensor) -> float | None:
    """Fraction of `grown` units still in `active` (None when nothing was grown)."""
    n = int(grown.sum())
    return None if n == 0 else int((grown & active).sum()) / n


@dataclass
class UpdateRecord:
    """One structure update (a prune or a grow), as written to metrics.jsonl."""

    event: str  # "prune" or "grow"
    step: int  # training step at whose start (or backward) the update happened
    t: int  # index of the update step (IEE step t, RigL/SET/GMP update number)
    moved: int  # units moved between the active set Theta_K and the exploration set Theta_P
    active: int  # units in Theta_K after the update
    iou: float | None = None  # IoU of Theta_K with Theta_K after the previous update of the same event
    survival: float | None = None  # prune only: share of the previous grow's units still in Theta_K
    extra: dict[str, Any] = field(default_factory=dict)


class StructureTracker:
    """Remembers Theta_K after the last prune and grow, and what the last grow added."""

    def __init__(self) -> None:
        self.after_prune: Tensor | None = None
        self.after_grow: Tensor | None = None
        self.grown: Tensor | None = None

    def record_prune(self, active: Tensor, step: int, t: int, moved: int) -> UpdateRecord:
        record = UpdateRecord("prune", step, t, moved, int(active.sum()))
        if self.after_prune is not None:
            record.iou = iou(self.after_prune, active)
        if self.grown is not None:
            record.survival = survival(self.grown, active)
            self.grown = None
        self.after_prune = active.clone()
        return record

    def record_grow(self, active: Tensor, grown: Tensor, step: int, t: int) -> UpdateRecord:
        record = UpdateRecord("grow", step, t, int(grown.sum()), int(active.sum()))
        if self.after_grow is not None:
            record.iou = iou(self.after_grow, active)
        self.after_grow = active.clone()
        self.grown = grown.clone()
        return record

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"after_prune": self.after_prune, "after_grow": self.after_grow, "grown": self.grown}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        self.after_prune, self.after_grow, self.grown = state["after_prune"], state["after_grow"], state["grown"]
