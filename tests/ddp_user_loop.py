"""Run by tests/test_sparsifier.py under `torchrun --nproc_per_node 2` (gloo, CPU): a user's own loop.

The README's plain PyTorch loop, with the model wrapped in DistributedDataParallel and every rank
reading different batches, drives `Sparsifier` for each method named on the command line. After
every step each rank compares the method's state (masks, exploration set, ...) and the model's
weights with rank 0's, and records its active weights per layer. Rank r writes OUT/rank<r>.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from iee_deploy.sparse.masks import prunable_layers
from iee_deploy.sparsifier import Sparsifier

STEPS = 12
SETTINGS = {"iee": {"hjq": (1, 1, 1)}, "rigl": {"delta_t": 2}}  # several updates within STEPS


def tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state (dicts, lists), by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list | tuple) else []
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def differs_from_rank0(tensor: torch.Tensor) -> bool:
    """True if this rank's `tensor` is not exactly rank 0's (compared bit for bit, as float64 or int64)."""
    mine = tensor.detach().to(torch.float64 if tensor.is_floating_point() else torch.int64).clone()
    reference = mine.clone()
    dist.broadcast(reference, 0)
    return not torch.equal(mine, reference)


def train(method: str, rank: int) -> dict:
    torch.manual_seed(0)  # the same model on every rank (DDP also broadcasts rank 0's weights)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    sparsifier = Sparsifier(ddp, optimizer, STEPS, method=method, sparsity=0.8, resolution=16, **SETTINGS[method])
    data = torch.Generator().manual_seed(100 + rank)  # every rank its own batches, as a DistributedSampler gives
    steps = []
    for step in range(STEPS):
        images, labels = torch.randn(8, 3, 16, 16, generator=data), torch.randint(0, 10, (8,), generator=data)
        with sparsifier.step(len(labels)):
            optimizer.zero_grad()
            F.cross_entropy(ddp(images), labels).backward()
            optimizer.step()
        compared = {**{f"method{k}": v for k, v in tensors(sparsifier.method.state_dict()).items()},
                    **{f"weight/{k}": v for k, v in model.named_parameters()}}
        with sparsifier.evaluation():
            nonzero = [int(m.weight.ne(0).sum()) for _, m in prunable_layers(model)]
        steps.append({"step": step, "in_update": sparsifier.in_update, "compared": len(compared),
                      "differ": sorted(name for name, t in compared.items() if differs_from_rank0(t)),
                      "active": list(sparsifier.method.state.active_weights().values()), "nonzero": nonzero})
    return {"steps": steps, "events": [r["event"] for r in sparsifier.history],
            "shapes": [list(m.weight.shape) for _, m in prunable_layers(model)]}


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {"world": dist.get_world_size(), **{method: train(method, rank) for method in sys.argv[2:]}}
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
