"""Configuration of a training run (saved as config.json in the run folder).

`TrainConfig(...)` checks every field when it is built and raises `iee_deploy.errors.ConfigError`
naming the field, so an impossible run (a negative or NaN learning rate, zero classes, a 0 px
input) fails before any data is loaded. `check_fits_data` adds the checks that need the dataset
and the model: enough classifier outputs for the dataset's labels, and an input large enough for
the model's downsampling.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from iee_deploy.errors import ConfigError, check_positive, is_whole
from iee_deploy.methods import SparsityConfig
from iee_deploy.seeding import MAX_SEED

if TYPE_CHECKING:
    from iee_deploy.data import DataBundle


MAX_RESOLUTION = 2048
"""Largest input side accepted (px): a typo guard, since one 2048 px batch already needs gigabytes."""


@dataclass
class TrainConfig:
    """Model, data, optimisation and sparsification of one run."""

    task: str = "classification"  # classification | detection (iee_deploy.tasks)
    model: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    resolution: int | None = None  # px, >= 1 (and at least the model's `minimum_resolution`); None: the dataset's
    num_classes: int | None = None  # >= the dataset's class count; None: the dataset's
    subset: int | None = None  # a fixed random sample of N >= 1 training images (N/5 validation)
    val_subset: int | None = None  # a fixed random sample of N >= 1 validation images instead of subset/5
    init_checkpoint: str | None = None  # weights to start from
    epochs: float = 10.0  # > 0, fractions allowed
    batch_size: int = 64  # per rank, >= 1
    lr: float = 0.1  # peak learning rate, > 0 and finite
    momentum: float = 0.9  # in [0, 1)
    weight_decay: float = 5e-4  # >= 0
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay, >= 0
    workers: int = 0  # DataLoader worker processes, >= 0 (unused for images held in memory: see device_data)
    seed: int = 0  # in [0, 2**63 - 1]
    device: str = "cpu"  # cpu | cuda
    checkpoint_every: int = 0  # steps between checkpoints besides each epoch end; 0: epoch ends only
    eval_every: int = 1  # epochs between validations (each writes an epoch record), >= 1; the last is validated
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):  # as config.json stores it
            self.sparsity = SparsityConfig(**self.sparsity)
        if not isinstance(self.sparsity, SparsityConfig):
            raise ConfigError("sparsity", f"`sparsity` must be a SparsityConfig (or its fields as a dict), got "
                              f"{self.sparsity!r}", "pass e.g. SparsityConfig(method='rigl', sparsity=0.9)")
        for name in ("resolution", "num_classes", "subset", "val_subset", "batch_size", "workers", "checkpoint_every",
                     "eval_every", "seed"):
            value = getattr(self, name)
            if value is not None and not is_whole(value):  # 2.5, '64'
                raise ConfigError(name, f"`{name}` {value!r} is not a whole number", "pass a whole number")
        if self.resolution is not None and self.resolution > MAX_RESOLUTION:
            raise ConfigError("resolution", f"`resolution` {self.resolution} px is above {MAX_RESOLUTION} px",
                              f"pass at most {MAX_RESOLUTION}")
        for name in ("resolution", "num_classes", "subset", "val_subset", "batch_size", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"`{name}` {value} is not a positive number", "pass a number >= 1")
        for name in ("workers", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"`{name}` {getattr(self, name)} is negative", "pass 0 or more")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", f"`seed` {self.seed} is outside [0, 2**63 - 1]", "pass e.g. 0")
        check_positive("epochs", self.epochs)
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, zero_ok=True)
        check_positive("warmup_epochs", self.warmup_epochs, zero_ok=True)
        if self.warmup_epochs >= self.epochs:  # the learning rate would never reach its peak nor decay
            raise ConfigError(("warmup_epochs", "epochs"), f"`warmup_epochs` {self.warmup_epochs:g} is not shorter than `epochs` "
                              f"{self.epochs:g}", "warm up for a fraction of training, e.g. 5% of `epochs`")
        if not 0 <= self.momentum < 1:  # also False for NaN
            raise ConfigError("momentum", f"`momentum` {self.momentum:g} is not in [0, 1)", "pass e.g. 0.9")
        from iee_deploy.tasks import TASKS

        if self.task not in TASKS:
            raise ConfigError("task", f"`task` '{self.task}' is not a task", f"choose one of: {', '.join(TASKS)}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError("device", f"`device` '{self.device}' is neither cpu nor cuda", "pass cpu or cuda")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (tuples as lists, enums as their values), as stored in config.json."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data


def minimum_resolution(model: str, resolution: int) -> int:
    """The smallest input (px) at which zoo model `model`'s last feature map still sees the whole downsampling.

    This is the model's total stride: the probe resolution divided by the smallest spatial size of any
    Conv2d output at that resolution, among the convs that run on a feature map (not on a pooled 1x1 vector, as
    squeeze-excitation's do). Below it, stride-2 layers run on 1x1 maps and the network sees
    padding rather than the image. The probe uses 64 px (inputs <= 64 px) or 128 px, which builds the same
    layers for the zoo's models (their stem depends only on whether the input is <= 64 px), capped at
    128 px (no zoo model downsamples by more than 32).
    """
    import torch
    from torch import nn

    from iee_deploy.models import build_model

    probe = 64 if resolution <= 64 else 128
    net = build_model(model, 10, probe).eval()
    sizes: list[int] = []
    def record(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if min(inputs[0].shape[-2:]) > 1:  # a conv on a pooled vector (squeeze-excitation) says nothing of the stride
            sizes.append(min(out.shape[-2:]))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, probe, probe))
    finally:
        for hook in hooks:
            hook.remove()
    return probe // max(1, min(sizes)) if sizes else 1


def check_fits_data(config: TrainConfig, bundle: DataBundle) -> None:
    """Checks that need the dataset and the model, before training starts.

    `num_classes` must cover the dataset's labels (fewer outputs fail in the loss), and the input
    resolution must be at least the model's `minimum_resolution`.
    """
    if config.num_classes is not None and config.num_classes < bundle.num_classes:
        raise ConfigError("num_classes", f"`num_classes` {config.num_classes} is fewer than the {bundle.num_classes} "
                          f"classes of {bundle.name}", f"pass at least {bundle.num_classes}, or leave `num_classes` out")
    smallest = minimum_resolution(config.model, bundle.resolution)
    if bundle.resolution < smallest:
        raise ConfigError("resolution", f"`resolution` {bundle.resolution} px is below {config.model}'s minimum of "
                          f"{smallest} px (its total stride)", f"pass at least {smallest}")


__all__ = ["TrainConfig", "check_fits_data", "minimum_resolution"]
