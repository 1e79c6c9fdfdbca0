"""Run by tests/test_train_loop.py under `torchrun --nproc_per_node 2`: a few IEE steps, then
every rank saves the masks and weights it ended with to DUMP/rank<r>.pt."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from iee_deploy.methods import SparsityConfig
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
torch.save(seen, dump / f"rank{seen['rank']}.pt")
