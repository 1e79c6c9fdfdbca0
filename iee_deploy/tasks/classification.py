"""Classification: images and class labels, cross-entropy, top-1 accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from iee_deploy.data import DataBundle, build_datasets
from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError
from iee_deploy.graph.trace import eval_mode
from iee_deploy.models import build_model, model_spec
from iee_deploy.tasks.base import Deployment, DeployScore, StepOutcome, Task


def sgd_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Forward, cross-entropy, backward and optimizer step; (loss, correct predictions)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):  # bf16 on CUDA (see device_data)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.argmax(1) == labels).sum())


@torch.no_grad()
def check_output_width(model: nn.Module, num_classes: int, resolution: int) -> None:
    """The model must score exactly `num_classes` classes; checked with one image before any training
    (a narrower head fails at the first step with an index error, a wider one trains on phantom classes)."""
    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, resolution, resolution, device=param.device if param is not None else "cpu")
    with eval_mode(model):
        out = model(x)
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] != num_classes:
        raise UserError(f"the model scores {out.shape[1]} classes, not the {num_classes} asked for",
                        "make the model's factory build its head with the num_classes it is given",
                        fields=("model", "num_classes"))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, dist: Distributed) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) over the validation set, summed over all ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=dist.device)
    for images, labels in loader:
        images, labels = images.to(dist.device), labels.to(dist.device)
        logits = model(images)
        totals += torch.tensor([float(F.cross_entropy(logits, labels, reduction="sum")),
                                int((logits.argmax(1) == labels).sum()), len(labels)], device=dist.device,
                               dtype=torch.float64)
    model.train(was_training)
    loss, correct, seen = dist.sum_(totals).tolist()
    return loss / max(seen, 1), correct / max(seen, 1)


class LogitsDeployment(Deployment):
    """A classifier as its engine runs it: images in, logits out, no post-processing."""

    postprocessed = False

    def __init__(self, model: nn.Module) -> None:
        self.network = model

    def inputs(self, batch: Any) -> tuple[torch.Tensor, Any]:
        images, labels = batch
        return images, labels

    def predictions(self, outputs: torch.Tensor, context: Any) -> torch.Tensor:
        return outputs


class Top1(DeployScore):
    """Top-1 accuracy in percent: the arg-max class against the labels."""

    def __init__(self) -> None:
        self.correct = self.count = 0

    def update(self, predictions: torch.Tensor, context: torch.Tensor) -> None:
        self.correct += int((predictions.argmax(1) == context).sum())
        self.count += len(context)

    def compute(self) -> float:
        return 100.0 * self.correct / max(self.count, 1)


class ClassificationTask(Task):
    """Images to class labels: cross-entropy loss, top-1 accuracy, the zoo's classifiers."""

    name = "classification"
    default_model = "resnet20"
    score = "val_acc"
    score_label = "top-1"
    counts_correct = True

    def datasets(self, config: Any) -> DataBundle:
        return build_datasets(config.dataset, config.data_dir, config.resolution, config.subset, config.val_subset)

    def check_fits_data(self, config: Any, bundle: DataBundle) -> None:
        from iee_deploy.train.config import check_fits_data

        check_fits_data(config, bundle)

    def check_model_name(self, name: str) -> None:
        model_spec(name)

    def build_model(self, name: str, num_classes: int, resolution: int, checkpoint: str | None) -> nn.Module:
        return build_model(name, num_classes, resolution, checkpoint)

    def check_model(self, model: nn.Module, num_classes: int, resolution: int) -> None:
        from iee_deploy.models.detection import network_part

        if network_part(model) is not None:  # its forward wants targets when training: a raw assertion at step 0
            raise UserError(f"the model is a detector ({type(model).__name__}), not a classifier",
                            "train it with `task` detection", fields=("model", "task"))
        check_output_width(model, num_classes, resolution)

    def train_batches(self, dataset: Any, sampler: Any, device: torch.device, config: Any) -> Iterable[Any]:
        """In-memory images held and augmented on the device in batches; other datasets through a DataLoader."""
        from iee_deploy.train.data import train_loader
        from iee_deploy.train.device_data import device_train_loader

        return device_train_loader(dataset, sampler, device, config.seed) or train_loader(dataset, sampler, config.workers,
                                                                                         config.seed)

    def val_batches(self, dataset: Any, config: Any, rank: int, world: int) -> DataLoader:
        from iee_deploy.train.data import val_loader

        return val_loader(dataset, max(config.batch_size, 256), config.workers, rank, world)

    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def batch_len(self, batch: Any) -> int:
        return len(batch[1])

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> StepOutcome:
        loss, correct = sgd_step(net, optimizer, *batch)
        return StepOutcome(loss, correct)

    def evaluate(self, model: nn.Module, loader: DataLoader, dist: Distributed) -> dict[str, float]:
        loss, acc = evaluate(model, loader, dist)
        return {"val_loss": loss, "val_acc": acc}

    def epoch_text(self, record: dict[str, Any]) -> str:
        return (f"train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:.2f}% | "
                f"val loss {record['val_loss']:.4f} acc {100 * record['val_acc']:.2f}%")

    agreement_label = "top-1 agreement"
    agreement_limit = None  # logits are checked elementwise; a near-tie may flip the arg-max within tolerance

    def deployment(self, model: nn.Module, resolution: int) -> Deployment:
        return LogitsDeployment(model)

    def deploy_score(self) -> DeployScore:
        return Top1()

    def agreement(self, actual: Any, reference: Any, precision: str) -> tuple[int, int]:
        """Images whose arg-max class is the same."""
        return int((actual.argmax(1) == reference.argmax(1)).sum()), len(reference)
