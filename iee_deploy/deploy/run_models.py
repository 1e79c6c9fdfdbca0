"""The models deployment reads from a run folder (see `iee_deploy.runs`).

- pruned: `pruned_model.pt`, the physically smaller module that becomes the engine;
- masked: the zoo architecture at full width with `final_model.pt` loaded: the training model,
  whose outputs the pruned model must reproduce, and the dense reference for the speed-up
  (same layers and widths as the unpruned network; latency does not depend on the weight values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.runs import FINAL_MODEL, PRUNED_MODEL, RunInfo, read_run_info


@dataclass
class RunModels:
    """A run's facts and its two models, both fp32, eval mode, on the CPU."""

    info: RunInfo
    pruned: nn.Module
    masked: nn.Module


def _require(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        raise UserError(f"run folder '{run_dir}' has no {name} (training has not finished)",
                        "wait for `iee-deploy train` to finish, or resume it with --resume")
    return path


def load_pruned(run_dir: str | Path) -> nn.Module:
    """The physically pruned module saved whole by training."""
    path = _require(Path(run_dir), PRUNED_MODEL)
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt file, or a class that no longer imports
        raise UserError(f"'{path}' cannot be read ({type(exc).__name__}: {exc})", "re-run `iee-deploy train`") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"'{path}' holds a {type(module).__name__}, not a model", "re-run `iee-deploy train`")
    return module.float().eval()


def load_run_models(run_dir: str | Path) -> RunModels:
    """Read `run.json`, the pruned model and the masked full-width training model of a run."""
    info = read_run_info(run_dir)
    final = _require(Path(run_dir), FINAL_MODEL)
    masked = build_model(info.model, info.num_classes, info.resolution, checkpoint=final).float().eval()
    return RunModels(info, load_pruned(run_dir), masked)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
