"""Pure selection rules: which units to prune or grow, given scores and candidates.

Every rule returns a boolean mask of exactly the requested size and breaks ties by the lower
flat index (stable sort), so that the same inputs always give the same structure: on every
DDP rank and before and after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from iee_deploy.errors import UserError

Tensor = torch.Tensor


def check_finite(key: Tensor, candidates: Tensor) -> None:
    """A NaN or inf score ranks nowhere: the weights or gradients it comes from diverged (a UserError, not a wrong mask)."""
    if not bool(torch.isfinite(key[candidates]).all()):
        raise UserError("the importance scores of a structure update hold NaN or inf: training diverged "
                        "(the weights or gradients are not finite)", "lower the learning rate, or check the loss and "
                        "the starting weights for NaN")


def _take_first(key: Tensor, candidates: Tensor, k: int) -> Tensor:
    flat_c = candidates.flatten()
    available = int(flat_c.sum())
    if not 0 <= k <= available:
        raise ValueError(f"cannot select {k} of {available} candidates")
    check_finite(key.flatten(), flat_c)
    key = torch.where(flat_c, key.flatten(), torch.full_like(key.flatten(), float("inf")))
    order = torch.sort(key, stable=True).indices[:k]
    chosen = torch.zeros_like(flat_c)
    chosen[order] = True
    return chosen.view_as(candidates)


def smallest(scores: Tensor, candidates: Tensor, k: int) -> Tensor:
    """The `k` candidates with the smallest scores (ArgTopK(-I, k))."""
    return _take_first(scores.float(), candidates, k)


def largest(scores: Tensor, candidates: Tensor, k: int) -> Tensor:
    """The `k` candidates with the largest scores (ArgTopK(I, k))."""
    return _take_first(-scores.float(), candidates, k)


def _joined(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.flatten() for t in tensors])


def _split(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    parts = torch.split(flat, [t.numel() for t in like])
    return [p.view_as(t) for p, t in zip(parts, like)]


def smallest_global(scores: Sequence[Tensor], candidates: Sequence[Tensor], k: int) -> list[Tensor]:
    """`smallest` ranking all layers together (Non-uniform distribution)."""
    return _split(smallest(_joined(scores), _joined(candidates), k), candidates)


def largest_global(scores: Sequence[Tensor], candidates: Sequence[Tensor], k: int) -> list[Tensor]:
    """`largest` ranking all layers together (Non-uniform distribution)."""
    return _split(largest(_joined(scores), _joined(candidates), k), candidates)


def largest_per_row(scores: Tensor, candidates: Tensor, k: Tensor) -> Tensor:
    """In each row r of (G, M) `scores`, the `k[r]` largest candidates (N:M groups)."""
    if bool((k > candidates.sum(dim=1)).any()) or bool((k < 0).any()):
        raise ValueError("a row has fewer candidates than it must select")
    check_finite(scores, candidates)
    key = torch.where(candidates, -scores.float(), torch.full_like(scores, float("inf"), dtype=torch.float))
    order = torch.sort(key, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order).contiguous())
    return ranks < k.unsqueeze(1)
