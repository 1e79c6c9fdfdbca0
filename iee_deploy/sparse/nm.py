"""N:M sparsity (e.g. 2:4, NVIDIA Ampere): at most N active weights in every M consecutive
weights along the input-channel dimension.

Groups are formed as TensorRT / ASP do: a conv weight (O, I, kh, kw) is viewed as
(O, kh, kw, I) and cut into runs of M input channels; a linear weight (O, I) into runs of M
inputs. Layers whose input channels per group are not a multiple of M (a 3-channel stem, a
depthwise conv) cannot carry the pattern and stay dense, as ASP leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class NMPattern:
    """N active of every M consecutive input weights."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"N:M needs 0 < N < M, got {self.n}:{self.m}")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether a weight of this shape (conv or linear) can carry the pattern."""
        return len(shape) in (2, 4) and shape[1] % self.m == 0

    def to_groups(self, weight: Tensor) -> Tensor:
        """(G, M) view of `weight`'s values, one row per group of M input weights."""
        if weight.dim() == 4:
            weight = weight.permute(0, 2, 3, 1)
        return weight.reshape(-1, self.m)

    def from_groups(self, groups: Tensor, shape: Sequence[int]) -> Tensor:
        """Inverse of `to_groups` for a weight of `shape`."""
        if len(shape) == 4:
            o, i, kh, kw = shape
            return groups.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()
        return groups.reshape(*shape)

    def holds(self, mask: Tensor, exact: bool = True) -> bool:
        """Every group has exactly N (or, with exact=False, at most N) active weights."""
        per_group = self.to_groups(mask).sum(dim=1)
        return bool((per_group == self.n).all()) if exact else bool((per_group <= self.n).all())
