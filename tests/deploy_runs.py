"""Run folders for the deployment tests, written the way `iee-deploy train` writes them (see iee_deploy.runs).

A structured run of CIFAR ResNet-20: inside every residual block, the channels between conv1 and
conv2 with the smallest |BN gamma| are dropped. The masked training model keeps its full width
with those channels zeroed (conv1 filters, BN gamma and beta, conv2 input slices); the pruned
model has them physically removed, so both compute the same function.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from iee_deploy.io import save_torch
from iee_deploy.models import build_model
from iee_deploy.models.cifar_resnet import BasicBlock
from iee_deploy.runs import FINAL_MODEL, PRUNED_MODEL, RunInfo, write_run_info


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


def _prune_block(masked: BasicBlock, pruned: BasicBlock, keep: float) -> None:
    width = masked.bn1.num_features
    order = masked.bn1.weight.detach().abs().argsort(descending=True)
    kept, dropped = order[: max(1, round(keep * width))].sort().values, order[max(1, round(keep * width)):]
    with torch.no_grad():
        masked.conv1.weight[dropped] = 0
        masked.bn1.weight[dropped] = 0
        masked.bn1.bias[dropped] = 0
        masked.conv2.weight[:, dropped] = 0
        conv1 = nn.Conv2d(masked.conv1.in_channels, len(kept), 3, masked.conv1.stride, 1, bias=False)
        conv1.weight.copy_(masked.conv1.weight[kept])
        bn1 = nn.BatchNorm2d(len(kept))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn1, name).copy_(getattr(masked.bn1, name)[kept])
        conv2 = nn.Conv2d(len(kept), masked.conv2.out_channels, 3, 1, 1, bias=False)
        conv2.weight.copy_(masked.conv2.weight[:, kept])
    pruned.conv1, pruned.bn1, pruned.conv2 = conv1, bn1.eval(), conv2


def make_structured_run(run_dir: Path, keep: float = 0.5, seed: int = 0, budget_ms: float | None = None,
                        predicted_latency_ms: float | None = None, metrics: list[dict] | None = None,
                        summary: dict | None = None, nm: str | None = None) -> Path:
    """Write run.json, final_model.pt (masked, full width), pruned_model.pt and optional metrics/summary."""
    masked = _calibrated_resnet20(seed)
    pruned = copy.deepcopy(masked)
    blocks = [(m, p) for m, p in zip(masked.modules(), pruned.modules()) if isinstance(m, BasicBlock)]
    for m, p in blocks:
        _prune_block(m, p, keep)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_torch(run_dir / FINAL_MODEL, masked.state_dict())
    save_torch(run_dir / PRUNED_MODEL, pruned.eval())
    write_run_info(run_dir, RunInfo(model="resnet20", num_classes=10, resolution=32, dataset="digits",
                                    kind="structured", nm=nm, target="cpu", budget_ms=budget_ms,
                                    predicted_latency_ms=predicted_latency_ms, finished=True))
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir
