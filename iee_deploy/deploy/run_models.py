"""The models deployment reads from a run folder (see `iee_deploy.runs.RunFolder`), rebuilt, never unpickled.

- masked: the zoo architecture named in `run.json` at full width with `final_model.pt` (a
  state_dict, read with `weights_only=True`) loaded: the training model, whose outputs the pruned
  model must reproduce, and the dense reference for the speed-up (same layers and widths as the
  unpruned network; latency does not depend on the weight values);
- pruned: the masked model with the kept channels of `channels.json` physically cut out through
  the dependency graph, as Torch-Pruning replays its pruning history (structured runs); an
  unstructured run's deployable model is the masked model itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph, prune_model
from iee_deploy.models import build_model, first_non_finite, load_state
from iee_deploy.models.detection import network_of
from iee_deploy.runs import RunFolder, RunInfo
from iee_deploy.tasks import Task, task_named


@dataclass
class RunModels:
    """A run's facts and its two models, both fp32, eval mode, on the CPU."""

    info: RunInfo
    pruned: nn.Module
    masked: nn.Module


def load_masked(run_dir: str | Path) -> nn.Module:
    """The full-width training model of a finished run, with its final (masked) weights."""
    run = RunFolder(run_dir)
    info = run.read_info()
    model = build_model(info.model, info.num_classes, info.resolution)
    load_state(model, run.load_final_model(), str(run / run.FINAL_MODEL))
    bad = first_non_finite(model)
    if bad is not None:  # its engine would compute NaN, which no output or accuracy comparison can catch
        raise UserError(f"'{run / run.FINAL_MODEL}' holds NaN or inf values in '{bad}': the run's final weights are "
                        "not a model", "train the run again, from a checkpoint saved before it diverged")
    return model.float().eval()


def prune_to_channels(model: nn.Module, info: RunInfo, channels: dict[str, object], source: str) -> nn.Module:
    """`model` with only the kept channel indices of `channels` (channels.json's `groups`)."""
    groups = channels.get("groups")
    if not isinstance(groups, dict):
        raise UserError(f"'{source}' has no channel groups", "re-run `iee-deploy train` to write it again")
    graph = build_dependency_graph(network_of(model), torch.zeros(1, 3, info.resolution, info.resolution))
    known = {g.id for g in graph.prunable_groups}
    unknown = sorted(set(groups) - known)
    if unknown:
        raise UserError(f"'{source}' names channel group '{unknown[0]}', which {info.model} does not have",
                        "use the channels.json written by this run's training")
    try:
        keep = {g: torch.as_tensor(v["indices"], dtype=torch.long) for g, v in groups.items()}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"'{source}' is corrupt (a group without kept indices)", "re-run `iee-deploy train`") from None
    return prune_model(model, graph, keep).eval()


def load_run_models(run_dir: str | Path) -> RunModels:
    """Read `run.json`, the masked full-width training model and rebuild the deployable (pruned) one."""
    run = RunFolder(run_dir)
    info = run.read_info()
    masked = load_masked(run_dir)
    if info.kind == "structured":
        channels = run.read_json(run.CHANNELS, strict=True)
        if channels is None:
            raise UserError(f"run folder '{run}' has no {run.CHANNELS} (training has not finished)",
                            "wait for `iee-deploy train` to finish, or resume it")
        pruned = prune_to_channels(masked, info, channels, str(run / run.CHANNELS))
    else:
        pruned = copy.deepcopy(masked)
    return RunModels(info, pruned, masked)


def run_task(run_dir: str | Path) -> Task:
    """The task a run was trained for (config.json's `task`; classification for runs that do not say)."""
    return task_named(str((RunFolder(run_dir).read_config() or {}).get("task", "classification")))


def run_data(run_dir: str | Path, info: RunInfo, data_dir: str | Path | None = None, subset: int | None = None,
             batch_size: int = 64) -> SimpleNamespace:
    """The data settings a task reads (`Task.datasets`, `Task.val_batches`): the run's dataset at its resolution,
    read from `data_dir` (default: the run's), with the run's own training and validation samples unless `subset`
    is given (then N training and N/5 validation images), `batch_size` images per batch, in this process."""
    config = RunFolder(run_dir).read_config() or {}
    counts = [config.get(key) for key in ("subset", "val_subset")]
    own = [value if isinstance(value, int) and value > 0 else None for value in counts]
    train, val = (subset, None) if subset is not None else own
    return SimpleNamespace(dataset=info.dataset, data_dir=data_dir if data_dir is not None else info.data_dir,
                           resolution=info.resolution, subset=train, val_subset=val, batch_size=batch_size, workers=0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
