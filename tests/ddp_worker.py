"""Run by tests/test_train_loop.py under `torchrun --nproc_per_node 2`: a few IEE steps, then a few
RigL steps of a user's own DDP loop with a `Sparsifier`; every rank saves the masks and weights it
ended with to DUMP/rank<r>.pt."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from iee_deploy.methods import SparsityConfig
from iee_deploy.models import build_model
from iee_deploy.sparsifier import Sparsifier
from iee_deploy.train import TrainConfig, Trainer

run_dir, dump = sys.argv[1], Path(sys.argv[2])
config = TrainConfig(model="resnet20", resolution=8, subset=96, batch_size=12, epochs=2, lr=0.05,
                     sparsity=SparsityConfig(hjq=(1, 1, 1)))
seen: dict[str, object] = {}


def keep(step, model, method):
    seen["masks"] = [m.clone() for m in method.space.masks.masks]
    seen["weights"] = {k: v.detach().clone() for k, v in model.named_parameters()}  # BN statistics are rank 0's by design
    seen["step"] = step
    seen["rank"] = dist.get_rank()


Trainer(config, run_dir, progress_bar=False, on_step_end=keep).fit()

# a user's own loop: their DDP model, their data (different on each rank), the Sparsifier on the unwrapped model
dist.init_process_group("gloo")
torch.manual_seed(0)
model = build_model("resnet20", 10, 8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
sparsifier = Sparsifier(model, optimizer, 8, method="rigl", sparsity=0.8, delta_t=2, resolution=8)
net = DistributedDataParallel(model)
generator = torch.Generator().manual_seed(100 + dist.get_rank())
for _ in range(8):
    images, labels = torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 10, (8,), generator=generator)
    with sparsifier.step(len(labels)):
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()
seen["api_masks"] = [m.clone() for m in sparsifier.method.state.masks.masks]
seen["api_weights"] = {k: v.detach().clone() for k, v in model.named_parameters()}
seen["api_updates"] = len(sparsifier.history)
dist.destroy_process_group()
torch.save(seen, dump / f"rank{seen['rank']}.pt")
