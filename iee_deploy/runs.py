"""The run folder: what `iee-deploy train` writes and `build-engine` / `validate` / `report` read.

Layout of a run folder:

| file | written | content |
|---|---|---|
| `run.json` | at start, updated at the end | `RunInfo`: model, data and budget facts needed to rebuild the model |
| `config.json` | at start | the full training configuration |
| `checkpoint.pt` | periodically (atomic) | everything needed to resume the run |
| `metrics.jsonl` | each sparsity update | IoU, survival, per-layer sparsity, FLOPs, predicted latency |
| `final_model.pt` | at the end | state_dict of the full-size, masked training model |
| `pruned_model.pt` | at the end | the physically smaller `nn.Module` (whole module, `torch.save`) |
| `summary.json`, `summary.md` | at the end | the results, machine- and human-readable (structured: `latency` section) |
| `channels.json` | at the end, structured runs | kept unit indices per channel group, layer widths, predicted latency |
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from iee_deploy.errors import UserError
from iee_deploy.io import write_json

RUN_INFO = "run.json"
FINAL_MODEL = "final_model.pt"
PRUNED_MODEL = "pruned_model.pt"


@dataclass
class RunInfo:
    """Facts about a training run that deployment needs (all plain JSON types)."""

    model: str
    num_classes: int
    resolution: int
    dataset: str
    data_dir: str | None = None
    method: str = "iee"
    kind: str = "unstructured"  # "unstructured" or "structured"
    sparsity: float | None = None
    nm: str | None = None  # e.g. "2:4"
    target: str | None = None
    lut: str | None = None
    budget_ms: float | None = None
    predicted_latency_ms: float | None = None
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def write_run_info(run_dir: str | Path, info: RunInfo) -> Path:
    return write_json(Path(run_dir) / RUN_INFO, asdict(info))


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read `run.json`, or raise a UserError saying what is wrong with the folder."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no {RUN_INFO})", "pass the output folder of a training run")
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(RunInfo)}
        return RunInfo(**{k: v for k, v in data.items() if k in known})
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"'{path}' is corrupt ({exc})", "re-run `iee-deploy train` to write it again") from None
