"""What a task adds to the one training loop and to deployment: data, model check, batches, loss, metric, engine.

The trainer (`iee_deploy.train.trainer`) holds what every task shares (optimizer, schedule,
`Sparsifier`, checkpoints, run folder, DDP) and asks its `Task` for the rest, so it never branches
on a task's name. A task reads the run's `TrainConfig` (typed loosely here: `iee_deploy.train`
imports this package, not the other way round).

Deployment (`build-engine`, `validate`) asks the task the same way, through `Deployment`: the network an
engine computes (one input batch of images to one (N, K) output), the input batch of a loader batch, and
the post-processing that turns the engine's outputs into the task's predictions; `DeployScore` scores the
predictions and `agreement` compares an engine's with PyTorch's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from iee_deploy.data import DataBundle
from iee_deploy.distributed import Distributed

Batch = Any
"""What a task's loaders yield: (images, labels) tensors for classification, (images, targets) lists for detection."""


@dataclass(frozen=True)
class StepOutcome:
    """One optimisation step: its loss and, where the task counts them, its correct predictions."""

    loss: float
    correct: int | None = None


class Deployment(ABC):
    """A model as an engine runs it: `network` (images (N, 3, R, R) -> one (N, K) tensor), the engine's input for a
    validation batch (`inputs`), and the post-processing of the engine's outputs (`predictions`)."""

    network: nn.Module
    postprocessed: ClassVar[bool]
    """Whether `predictions` is a stage of its own (decoding, NMS), timed beside the engine; False: outputs as they are."""

    @abstractmethod
    def inputs(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The engine's input for one validation batch, and the context `predictions` and the score need."""

    @abstractmethod
    def predictions(self, outputs: torch.Tensor, context: Any) -> Any:
        """The task's predictions from the network's outputs for the batch of `context`."""


class DeployScore(ABC):
    """The validation figure of one model's predictions, accumulated over batches, in percent."""

    @abstractmethod
    def update(self, predictions: Any, context: Any) -> None: ...

    @abstractmethod
    def compute(self) -> float: ...


class Task(ABC):
    """One kind of learning problem the trainer runs (see the module docstring)."""

    name: ClassVar[str]
    default_model: ClassVar[str]
    score: ClassVar[str]
    """The record key of the validation figure "best" tracks (higher is better), e.g. "val_acc"."""
    score_label: ClassVar[str]
    """That figure in words, e.g. "top-1"."""
    counts_correct: ClassVar[bool]
    """Whether steps count correct predictions (a training accuracy per epoch)."""

    @abstractmethod
    def datasets(self, config: Any) -> DataBundle:
        """The run's training and validation sets (`config.dataset` at `config.data_dir`, sampled as it asks)."""

    @abstractmethod
    def check_fits_data(self, config: Any, bundle: DataBundle) -> None:
        """Checks that need the data and the model, before any training."""

    @abstractmethod
    def check_model_name(self, name: str) -> None:
        """A one-line UserError for a model name this task cannot build, before any data is loaded."""

    @abstractmethod
    def build_model(self, name: str, num_classes: int, resolution: int, checkpoint: str | None) -> nn.Module:
        """The model `name` for this task (a one-line UserError for one that cannot do it)."""

    @abstractmethod
    def check_model(self, model: nn.Module, num_classes: int, resolution: int) -> None:
        """Checks on a built model before any training."""

    def example_input(self, resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """One input batch of the network's shape (what graphs, tables and FLOP counts run on)."""
        return torch.zeros(1, 3, resolution, resolution, device=device)

    @abstractmethod
    def train_batches(self, dataset: Any, sampler: Any, device: torch.device, config: Any) -> Iterable[Batch]:
        """Training batches in `sampler`'s order (a `ResumableBatchSampler`)."""

    @abstractmethod
    def val_batches(self, dataset: Any, config: Any, rank: int, world: int) -> DataLoader:
        """This rank's share of the validation set, in order."""

    @abstractmethod
    def to_device(self, batch: Batch, device: torch.device) -> Batch: ...

    @abstractmethod
    def batch_len(self, batch: Batch) -> int:
        """Images in `batch`."""

    @abstractmethod
    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> StepOutcome:
        """Forward, loss, backward and `optimizer.step()` on one batch (the model in train mode)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader, dist: Distributed) -> dict[str, float]:
        """The validation figures under their record names (summed over ranks); the model's mode is restored."""

    @abstractmethod
    def epoch_text(self, record: dict[str, Any]) -> str:
        """An epoch record's training and validation figures, for the epoch's line."""

    agreement_label: ClassVar[str]
    """What `agreement` counts, in words, e.g. "top-1 agreement"."""
    agreement_limit: ClassVar[float | None]
    """The % of PyTorch's predictions a float engine may miss (a check of `validate`); None: reported only."""

    @abstractmethod
    def deployment(self, model: nn.Module, resolution: int) -> Deployment:
        """`model` (eval mode, on the CPU) as a fixed-size engine runs it (a one-line UserError where it cannot)."""

    @abstractmethod
    def deploy_score(self) -> DeployScore:
        """A fresh accumulator of the validation figure (`score_label`) for `validate`."""

    @abstractmethod
    def agreement(self, actual: Any, reference: Any, precision: str) -> tuple[int, int]:
        """(agreeing, compared): how many of `reference`'s predictions `actual` reproduces, within the tolerance of
        an engine of `precision`."""
