"""Run folders for the deployment tests, written the way `iee-deploy train` writes them (see iee_deploy.runs).

A structured run of CIFAR ResNet-20, pruned with the dependency graph: every prunable channel group
(block-internal channels and the residual-coupled stage channels) keeps a seeded random `keep`
fraction of its units. The masked training model keeps its full width with the removed channels
zeroed (`mask_model`), and channels.json lists the kept units, from which deployment rebuilds the
physically pruned model (`iee_deploy.deploy.run_models`), so both compute the same function.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from iee_deploy.graph import build_dependency_graph, mask_model
from iee_deploy.io import save_torch
from iee_deploy.models import build_model
from iee_deploy.runs import CHANNELS, FINAL_MODEL, RunInfo, write_run_info


def _calibrated_resnet20(seed: int) -> nn.Module:
    """ResNet-20 with random weights and BN statistics from a few random batches (non-trivial outputs)."""
    torch.manual_seed(seed)
    model = build_model("resnet20", 10, 32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.2, 1.0)
            nn.init.normal_(m.bias, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, 3, 32, 32))
    return model.eval()


def make_structured_run(run_dir: Path, keep: float = 0.5, seed: int = 0, budget_ms: float | None = None,
                        predicted_latency_ms: float | None = None, metrics: list[dict] | None = None,
                        summary: dict | None = None, nm: str | None = None, channels_seed: int | None = None,
                        dense_start: bool = False) -> Path:
    """Write run.json, final_model.pt (masked, full width), channels.json and optional metrics/summary.

    `channels_seed` (tests of validation) lists other kept units than the masked model keeps. With
    `dense_start` the run is recorded as started from the dense model (dense.pt, config.json's
    `init_checkpoint`), as `train --checkpoint` records it.
    """
    model = _calibrated_resnet20(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dense_start:
        save_torch(run_dir / "dense.pt", model.state_dict())
        (run_dir / "config.json").write_text(json.dumps({"init_checkpoint": str(run_dir / "dense.pt")}))
    graph = build_dependency_graph(model, torch.zeros(1, 3, 32, 32))

    def choose(seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return {group.id: torch.randperm(group.size, generator=generator)[: max(group.min_keep, math.ceil(keep * group.size))]
                for group in graph.prunable_groups}

    kept = choose(seed)
    listed = kept if channels_seed is None else choose(channels_seed)
    masked = mask_model(model, graph, kept)
    save_torch(run_dir / FINAL_MODEL, masked.state_dict())
    sizes = {group.id: group.size for group in graph.prunable_groups}
    (run_dir / CHANNELS).write_text(json.dumps({"groups": {g: {"size": sizes[g], "kept": len(idx), "indices": sorted(idx.tolist())}
                                                           for g, idx in listed.items()}}))
    write_run_info(run_dir, RunInfo(model="resnet20", num_classes=10, resolution=32, dataset="digits",
                                    kind="structured", nm=nm, target="cpu", budget_ms=budget_ms,
                                    predicted_latency_ms=predicted_latency_ms, finished=True))
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def real_metrics(tmp: Path) -> list[dict]:
    """metrics.jsonl of a real, tiny IEE training run (the records the trainer writes, not hand-made ones)."""
    from iee_deploy.data import build_datasets
    from iee_deploy.methods import SparsityConfig
    from iee_deploy.runs import RunFolder
    from iee_deploy.train import TrainConfig, Trainer

    config = TrainConfig(resolution=8, subset=96, batch_size=16, epochs=5, sparsity=SparsityConfig(hjq=(2, 1, 2)))
    Trainer(config, tmp, data=build_datasets("digits", resolution=8, subset=96), progress_bar=False).fit()
    return RunFolder(tmp).read_metrics()

