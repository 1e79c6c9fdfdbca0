"""Deterministic seeding for python, numpy and torch, and capture/restore of all RNG states."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

MAX_SEED = 2**63 - 1
"""Largest seed accepted (torch's generators take at most 2**64 - 1)."""


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's data order: seed * 1_000_003 + epoch, folded into the 63 bits a torch generator
    takes (unchanged for every seed below 2**43, so earlier runs keep their data order)."""
    return (seed * 1_000_003 + epoch) % 2**63


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the toolkit uses; return a torch.Generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng_state() -> dict[str, Any]:
    """Snapshot of python, numpy and torch (CPU, and CUDA when present) RNG states, for checkpoints.

    Tensors and plain types only, so a checkpoint loads with `torch.load(..., weights_only=True)`.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_state = [name, torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state: dict[str, Any] = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by `rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
