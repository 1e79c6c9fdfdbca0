"""Configuration of a training run (saved as config.json in the run folder)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from iee_deploy.methods import SparsityConfig


@dataclass
class TrainConfig:
    """Model, data, optimisation and sparsification of one run."""

    model: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    resolution: int | None = None  # px; None: the dataset's
    num_classes: int | None = None  # None: the dataset's
    subset: int | None = None  # first N training images (N/5 validation)
    init_checkpoint: str | None = None  # weights to start from
    epochs: float = 10.0
    batch_size: int = 64  # per rank
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    workers: int = 0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 0  # steps between checkpoints besides each epoch end; 0: epoch ends only
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (tuples as lists), as stored in config.json."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data
