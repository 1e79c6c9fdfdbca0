"""Training data order that survives a restart, shared out over DDP ranks.

`build_loaders` (iee_deploy.data) serves ordinary use; training needs more: the order of epoch e
is a function of (seed, e) alone, each rank reads its own share, and an epoch can start at any
batch, so a resumed run reads exactly the batches the interrupted one had left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from iee_deploy.seeding import epoch_seed


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled batches of one rank's share of `n` items; `set_position(epoch, batch)` before iterating.

    Every epoch draws a permutation from a generator seeded by (seed, epoch), keeps the first
    world * floor(n / world) items, gives rank r every world-th item from r, and drops the last
    partial batch (a share smaller than one batch is one batch).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if n < world:
            raise ValueError(f"{n} training items cannot be shared by {world} ranks")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.share = n // world
        self.epoch = self.start = 0

    def __len__(self) -> int:
        return max(1, self.share // self.batch_size)

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start = epoch, batch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator)[: self.share * self.world][self.rank :: self.world]
        size = min(self.batch_size, self.share)
        for b in range(self.start, len(self)):
            yield order[b * size : (b + 1) * size].tolist()


def train_loader(dataset: Dataset, sampler: ResumableBatchSampler, workers: int, seed: int,
                 collate: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """Loader over `sampler`; its own generator keeps the global RNG untouched by new iterators. `collate`: how
    items form a batch (default: stacked tensors)."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def val_loader(dataset: Dataset, batch_size: int, workers: int, rank: int = 0, world: int = 1,
               collate: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """This rank's interleaved share of the validation set, in order."""
    share = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset  # type: ignore[arg-type]
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))
