"""Training data held on the training device: decoded once to uint8, cropped and flipped there, a whole batch at a time.

A `DataLoader` over `TensorImageDataset` crops, flips and normalises one image at a time in Python:
about 10 ms per batch of 64 on one CPU core, a sixth of a resnet20 step at 8 px, and many GPU steps
of a small CIFAR network. For images held in memory, `DeviceTrainLoader` keeps them as one uint8
tensor (N, 3, R, R) on the device (the CPU or a GPU) and produces each batch with a few batched
tensor operations (about 0.7 ms per batch of 64 on one CPU core):

- the batch order is `ResumableBatchSampler`'s (a function of (seed, epoch), resumable at any batch);
- the augmentation is the same as the dataset's (random crop with `pad` pixels of zero padding,
  horizontal flip with probability 1/2 where the dataset flips), with its parameters a function of
  (seed, epoch, image index) alone: drawn for the whole epoch from a CPU generator, so runs that share
  a seed see the same crops and flips on any device, in any batch order, on any number of ranks;
- the epoch's order and crop/flip parameters go to the device in one copy per epoch, so no step
  waits for the host; crop and flip are one gather (`crop_flip`), normalisation one fused expression;
- images come out in channels-last memory format, as the trainer's model is (cuDNN's fast
  convolutions and oneDNN's CPU ones both run faster so: 1.03-1.6x per resnet/WRN/MobileNet
  training step on one CPU core, measured side by side).

`device_train_loader` returns None where this path does not apply (images that are not held in
memory, e.g. ImageFolder at 224 px): those keep the `DataLoader` and its worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from iee_deploy.data.sources import TensorImageDataset
from iee_deploy.seeding import epoch_seed
from iee_deploy.train.data import ResumableBatchSampler

Tensor = torch.Tensor

AUGMENT_STREAM = 7_919
"""Offset of the augmentation generator's seed from the data order's (independent streams)."""


def augmentation_seed(seed: int, epoch: int) -> int:
    """Seed of the crop/flip parameters of `epoch`: apart from the data order's (`epoch_seed`), within 63 bits."""
    return (epoch_seed(seed, epoch) * 2 + AUGMENT_STREAM) % 2**63


def crop_flip_params(n: int, pad: int, flip: bool, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """Per image of the dataset: crop offsets (n, 2) in [0, 2 pad] (row, column) and flip flags (n,).

    Drawn on the CPU from a generator seeded by (seed, epoch), so they do not depend on the device,
    the batch order or the rank.
    """
    generator = torch.Generator().manual_seed(augmentation_seed(seed, epoch))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips & flip


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, pad: int) -> Tensor:
    """Crop each image (B, C, R, R) at `offsets` from its zero-padded copy, mirrored where `flips`: one gather.

    Equal to padding each image by `pad` zeros on every side, taking the R x R window at
    (offsets[b, 0], offsets[b, 1]) and flipping it left-right where flips[b].
    """
    b, c, r, _ = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    span = torch.arange(r, device=images.device)
    rows = offsets[:, 0:1] + span  # (B, R)
    cols = torch.where(flips[:, None], offsets[:, 1:2] + (r - 1 - span), offsets[:, 1:2] + span)  # (B, R)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalise(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, R, R) -> float32 (x / 255 - mean) / std, as `TensorImageDataset` computes it.

    Equal to float32 rounding, not bit for bit, across devices: CUDA divides by the scalar 255 as a
    multiply by its reciprocal (seen on an H100: the last bit differed from the CPU's).
    """
    return (images.float().div_(255) - mean) / std


@dataclass
class DeviceImages:
    """A tensor-backed dataset moved to a device: uint8 images, labels, normalisation and augmentation."""

    images: Tensor  # (N, 3, R, R) uint8
    labels: Tensor  # (N,) int64
    mean: Tensor  # (1, 3, 1, 1) float32
    std: Tensor
    pad: int
    flip: bool

    @classmethod
    def from_dataset(cls, dataset: object, device: torch.device) -> DeviceImages | None:
        """The images of a `TensorImageDataset` (or a `Subset` of one), or None for any other dataset."""
        indices: Tensor | None = None
        if isinstance(dataset, Subset):
            indices = torch.as_tensor(list(dataset.indices), dtype=torch.long)
            dataset = dataset.dataset
        if not isinstance(dataset, TensorImageDataset) or not dataset.train:
            return None
        images, labels = dataset.images, dataset.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]
        return cls(images.to(device), labels.to(device), dataset.mean.view(1, 3, 1, 1).to(device),
                   dataset.std.view(1, 3, 1, 1).to(device), dataset.pad, dataset.flip)

    def __len__(self) -> int:
        return len(self.labels)


class DeviceTrainLoader:
    """Batches (images, labels) on the device in `sampler`'s order; see the module docstring.

    Iterating starts at the sampler's position (`set_position(epoch, batch)`), as a `DataLoader`
    over the same sampler does.
    """

    def __init__(self, data: DeviceImages, sampler: ResumableBatchSampler, seed: int) -> None:
        if sampler.n != len(data):
            raise ValueError(f"the sampler draws from {sampler.n} items but the data holds {len(data)}")
        self.data, self.sampler, self.seed = data, sampler, seed

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch_plan(self) -> tuple[Tensor, Tensor, Tensor]:
        """This epoch's remaining image indices (batches, size) and every image's crop offsets and flips, on the device."""
        batches = list(self.sampler)
        order = torch.tensor(batches, dtype=torch.long).reshape(len(batches), -1) if batches else \
            torch.empty(0, 0, dtype=torch.long)
        offsets, flips = crop_flip_params(len(self.data), self.data.pad, self.data.flip, self.seed, self.sampler.epoch)
        device = self.data.images.device
        return (order.to(device, non_blocking=True), offsets.to(device, non_blocking=True),
                flips.to(device, non_blocking=True))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, offsets, flips = self.epoch_plan()
        d = self.data
        for index in order:
            images = crop_flip(d.images[index], offsets[index], flips[index], d.pad)
            yield normalise(images, d.mean, d.std).contiguous(memory_format=torch.channels_last), d.labels[index]


def device_train_loader(dataset: object, sampler: ResumableBatchSampler, device: torch.device,
                        seed: int) -> DeviceTrainLoader | None:
    """A `DeviceTrainLoader` on `device` for in-memory images (any device); None for other datasets."""
    data = DeviceImages.from_dataset(dataset, device)
    return None if data is None else DeviceTrainLoader(data, sampler, seed)
