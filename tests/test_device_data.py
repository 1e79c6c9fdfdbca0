"""The in-memory batched data path (every device), checked exactly on the CPU: same crops, flips, normalisation and order as a
per-image reference; deterministic per (seed, epoch); resumable at any batch."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset, TensorDataset

from iee_deploy.data.sources import TensorImageDataset
from iee_deploy.train.data import ResumableBatchSampler
from iee_deploy.train.device_data import (
    DeviceImages,
    DeviceTrainLoader,
    crop_flip,
    crop_flip_params,
    device_train_loader,
)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def reference_image(image: torch.Tensor, i: int, j: int, flip: bool, pad: int, mean=MEAN, std=STD) -> torch.Tensor:
    """`TensorImageDataset.__getitem__`'s arithmetic for one image, with given crop offsets and flip."""
    x = image.float().div_(255)
    size = x.shape[-1]
    x = F.pad(x, (pad,) * 4)[:, i : i + size, j : j + size]
    if flip:
        x = x.flip(-1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def dataset(n=40, size=8, pad=2, flip=True, seed=0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)  # no zeros: padding shows
    return TensorImageDataset(images, torch.arange(n) % 10, MEAN, STD, train=True, pad=pad, flip=flip)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_crop_flip_is_pad_crop_and_mirror_per_image(pad):
    g = torch.Generator().manual_seed(pad)
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g)
    offsets = torch.randint(0, 2 * pad + 1, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    out = crop_flip(images, offsets, flips, pad)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for b in range(16):
        i, j = offsets[b].tolist()
        want = F.pad(images[b], (pad,) * 4)[:, i : i + 8, j : j + 8]
        assert torch.equal(out[b], want.flip(-1) if flips[b] else want)
    if pad:  # the padding really is zeros, and a corner crop shows it
        corner = crop_flip(images[:1], torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.bool), pad)
        assert (corner[0, :, :pad, :] == 0).all() and (corner[0, :, pad:, pad:] == images[0, :, : 8 - pad, : 8 - pad]).all()


def test_params_depend_on_seed_and_epoch_only():
    a = crop_flip_params(100, 4, True, seed=3, epoch=5)
    assert all(torch.equal(x, y) for x, y in zip(a, crop_flip_params(100, 4, True, seed=3, epoch=5)))
    assert not torch.equal(a[0], crop_flip_params(100, 4, True, seed=3, epoch=6)[0])
    assert not torch.equal(a[0], crop_flip_params(100, 4, True, seed=4, epoch=5)[0])
    offsets, flips = crop_flip_params(4000, 4, True, seed=0, epoch=0)
    assert offsets.min() == 0 and offsets.max() == 8 and 0.45 < flips.float().mean() < 0.55
    assert not crop_flip_params(100, 4, False, seed=0, epoch=0)[1].any()  # no flips where the dataset does not flip


def test_loader_batches_equal_the_reference_in_the_sampler_order():
    data = dataset()
    sampler = ResumableBatchSampler(len(data), 8, seed=1)
    loader = DeviceTrainLoader(DeviceImages.from_dataset(data, torch.device("cpu")), sampler, seed=1)
    for epoch in (0, 2):
        sampler.set_position(epoch, 0)
        batches = list(loader)
        order = list(sampler)
        offsets, flips = crop_flip_params(len(data), 2, True, seed=1, epoch=epoch)
        assert len(batches) == len(order) == 5
        for (x, y), indices in zip(batches, order):
            want = torch.stack([reference_image(data.images[k], *offsets[k].tolist(), bool(flips[k]), 2) for k in indices])
            assert torch.equal(x, want)
            assert torch.equal(y, data.labels[indices])


def test_resuming_at_a_batch_gives_the_rest_of_the_same_epoch():
    data = dataset(n=48)
    sampler = ResumableBatchSampler(len(data), 8, seed=7)
    loader = DeviceTrainLoader(DeviceImages.from_dataset(data, torch.device("cpu")), sampler, seed=7)
    sampler.set_position(3, 0)
    full = list(loader)
    sampler.set_position(3, 4)
    tail = list(loader)
    assert len(tail) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], tail))


def test_a_subset_and_ranks_see_the_subset_images():
    data = dataset(n=30)
    subset = Subset(data, [3, 5, 7, 11, 13, 17, 19, 23])
    held = DeviceImages.from_dataset(subset, torch.device("cpu"))
    assert held is not None and len(held) == 8
    assert torch.equal(held.images, data.images[[3, 5, 7, 11, 13, 17, 19, 23]])
    ranks = [DeviceTrainLoader(held, ResumableBatchSampler(8, 2, seed=0, rank=r, world=2), seed=0) for r in (0, 1)]
    for loader in ranks:
        loader.sampler.set_position(0, 0)
    seen = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert sorted(torch.cat(seen).tolist()) == sorted(held.labels.tolist())  # the ranks share the epoch out


def test_channels_last_output_and_which_datasets_are_held():
    data = dataset()
    sampler = ResumableBatchSampler(len(data), 8)
    loader = device_train_loader(data, sampler, torch.device("cpu"), 0)  # the CPU holds in-memory images too
    assert loader is not None
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    other = TensorDataset(torch.zeros(40, 3, 8, 8), torch.zeros(40))  # not images held by TensorImageDataset
    assert device_train_loader(other, sampler, torch.device("cpu"), 0) is None  # these keep the DataLoader
    val = TensorImageDataset(data.images, data.labels, MEAN, STD, train=False)
    assert DeviceImages.from_dataset(val, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="sampler draws from 10 items"):
        DeviceTrainLoader(DeviceImages.from_dataset(data, torch.device("cpu")), ResumableBatchSampler(10, 2), seed=0)
