"""Datasets by name: `digits` (embedded, offline), `fashion-mnist`, `cifar10`, `imagefolder`.

Every dataset yields (3 x R x R float tensor, int label), normalised, with standard training
augmentation (random crop with padding and horizontal flip at small resolutions; random-resized
crop and flip at 224). Small datasets are decoded once into memory (`TensorImageDataset`), which
keeps a 2-core machine busy with training instead of JPEG decoding.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from iee_deploy.data.sources import (
    SizedDataset,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
)
from iee_deploy.errors import UserError

__all__ = ["DataBundle", "DATASETS", "build_datasets", "build_loaders", "dataset_names"]


@dataclass
class DataBundle:
    """Train and validation datasets with what a model factory needs to know about them."""

    name: str
    train: SizedDataset
    val: SizedDataset
    num_classes: int
    resolution: int
    classes: tuple[str, ...] | None = None
    """The class names in label order where the data names them (folders, annotation categories): a run records them,
    and `validate` refuses data whose names differ (the same count of other classes would score as the run's)."""


Loader = Callable[[Path | None, int | None], DataBundle]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def build_datasets(
    name: str, data_dir: str | Path | None = None, resolution: int | None = None, subset: int | None = None,
    val_subset: int | None = None,
) -> DataBundle:
    """Load dataset `name` from `data_dir` at `resolution` px; keep a fixed sample of `subset` training images
    and of `val_subset` validation images (default: subset / 5 where `subset` is given, else all of them).

    A small training set with a large validation set is what a converged comparison wants: runs
    that can fit their data, scored on enough images to resolve small differences.
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=2)
        raise UserError(
            f"unknown dataset '{name}'",
            f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(DATASETS)}",
        )
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise UserError(f"`data_dir` '{root}' does not exist", f"pass the {name} dataset root as `data_dir`",
                        fields=("data_dir",))
    bundle = DATASETS[name](root, resolution)
    for field, count in (("subset", subset), ("val_subset", val_subset)):
        if count is not None and count < 1:
            raise UserError(f"`{field}` must be positive, got {count}", "pass a number of images", fields=(field,))
    for field, count in (("subset", subset), ("val_subset", val_subset)):
        if count is not None and count < bundle.num_classes:
            raise UserError(f"`{field}` {count} holds fewer images than the {bundle.num_classes} classes of {name}",
                            f"take at least {bundle.num_classes} images (several per class)", fields=(field,))
    if subset is not None:
        bundle.train = Subset(bundle.train, sample_indices(len(bundle.train), subset))
    if val_subset is not None or subset is not None:
        bundle.val = Subset(bundle.val, sample_indices(len(bundle.val), val_subset or max(1, (subset or 0) // 5)))
    return bundle


def sample_indices(total: int, count: int) -> list[int]:
    """A fixed random sample of `count` of `total` indices (seed 0, sorted).

    Random rather than the first `count`: folder datasets are sorted by class, so a prefix would
    hold one or two classes. The sample does not depend on the training seed, so every method and
    seed of a comparison sees the same images.
    """
    generator = torch.Generator().manual_seed(0)
    return sorted(torch.randperm(total, generator=generator)[: min(count, total)].tolist())


def build_loaders(
    bundle: DataBundle, batch_size: int, workers: int = 0, seed: int = 0, eval_batch_size: int | None = None
) -> tuple[DataLoader, DataLoader]:
    """Deterministically shuffled training loader (drops the last partial batch) and a validation loader."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    train: DataLoader = DataLoader(
        bundle.train, batch_size=batch_size, shuffle=True, drop_last=len(bundle.train) > batch_size,
        num_workers=workers, generator=generator, persistent_workers=workers > 0,
    )
    val: DataLoader = DataLoader(bundle.val,  batch_size=eval_batch_size or max(batch_size, 256), shuffle=False, num_workers=workers)
    return train, val
