"""Data-parallel training under `torchrun`: process group set-up and the few collectives we use.

`torchrun --nproc_per_node K -m iee_deploy train ...` starts K processes with RANK / WORLD_SIZE /
LOCAL_RANK in the environment. Gloo is the backend on CPU, NCCL on GPU. Rank 0 ("main") writes
files; structure decisions (masks) are taken on every rank from identical inputs and rank 0's
selection is broadcast, so every rank holds the same Theta_K.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> Distributed:
        """Join the torchrun job described by the environment, or run alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=torch.device(device))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            torch.cuda.set_device(local_rank)
            dev = torch.device("cuda", local_rank)
        else:
            dev = torch.device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), dev, owns)

    @classmethod
    def current(cls, device: torch.device) -> Distributed:
        """This process's place in an already initialised process group (a user's own DDP job), or alone."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
        return cls(device=device)

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite `tensor` with rank 0's value, in place (bool tensors travel as uint8)."""
        if self.world > 1:
            wire = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
            dist.broadcast(wire, 0)
            if wire is not tensor:
                tensor.copy_(wire.bool())
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce `tensor` by summation, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank."""
        if self.world == 1:
            return flag
        return bool(self.sum_(torch.tensor([int(flag)], device=self.device)).item())

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
