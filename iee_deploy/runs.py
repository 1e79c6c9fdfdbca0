"""The run folder: what `iee-deploy train` (or a `Sparsifier` user) writes and `build-engine` /
`validate` / `report` read. `RunFolder` owns every file name and every reader and writer.

| file | written | content |
|---|---|---|
| `run.json` | at start, updated at the end | `RunInfo`: model, data and budget facts needed to rebuild the model |
| `config.json` | at start | the full training configuration |
| `checkpoint.pt` | at the start, each epoch end, every few minutes (atomic) | everything needed to resume (tensors and plain types only) |
| `metrics.jsonl` | each structure update and each evaluation | `update` and `epoch` records (schema below) |
| `final_model.pt` | at the end | state_dict of the full-size, masked training model |
| `channels.json` | at the end, structured runs | kept unit indices per channel group, layer widths, predicted latency |
| `summary.json`, `summary.md` | at the end | the results, machine- and human-readable (structured: `latency` section) |
| `curves.png` | each evaluation from the second on | training and validation loss and accuracy |
| `.lock` | while a process trains | the writer's lock (`RunFolder.lock`) |

The deployable model is not stored as a pickled module: `iee_deploy.deploy.run_models` rebuilds
it from the model's spec (`run.json`), `final_model.pt` and `channels.json`. Every `.pt` file is
read with `torch.load(..., weights_only=True)`, so no file in a run folder can run code.

metrics.jsonl records (one JSON object a line; `read_metrics` skips a torn last line):
- `{"type": "update", "event": "prune" | "grow", "step", "t", "moved", "active", "iou", "survival",
  "epoch", "forward_flops", "dense_forward_flops", "train_flops", ...}`: `UpdateRecord` fields plus
  the space's extras (e.g. `predicted_latency_ms`); `step` is the training step of the update.
- `{"type": "epoch", "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
  "sparsity", "train_flops", "seconds"}`: `step` is the last finished step when the model was
  evaluated (never inside a structure update, see `SparsityMethod.in_update`). A detection run's
  records hold `val_map_50` and `val_map` instead of `train_acc`, `val_loss` and `val_acc`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from iee_deploy.errors import UserError, brief
from iee_deploy.io import append_jsonl, field_type_problem, save_torch, write_json, write_text, writer_lock

RUN_INFO = "run.json"
FINAL_MODEL = "final_model.pt"
CHANNELS = "channels.json"


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
    classes: list[str] | None = None  # the data's class names in label order, where it names them
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")
"""How a torch.save file begins: a zip archive (torch >= 1.6), or a pickle (the legacy format)."""


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` with `weights_only=True`: tensors and plain containers only, never code.

    A file that needs more (a pickled module or class, or a crafted pickle) is refused with a
    UserError before anything in it runs.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"'{file}' does not exist", "pass the path of a .pt/.pth file")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError/EOFError for torn or foreign files
        with file.open("rb") as head:
            if not head.read(4).startswith(TORCH_FILE_STARTS):  # a JSON, CSV or image file: torch's text is noise
                raise UserError(f"'{file}' is not a torch checkpoint (torch.load cannot read it)",
                                "pass a .pt/.pth file saved with torch.save") from None
        reason = brief(exc)
        raise UserError(f"'{file}' is corrupt or not a weights-only torch file, so it cannot be read "
                        f"({type(exc).__name__}: {reason})",
                        "save tensors with torch.save(model.state_dict()); pickled modules or code are never loaded"
                        ) from None


class RunFolder:
    """One run folder: its file names, readers and writers (see the module docstring)."""

    RUN_INFO = RUN_INFO
    CONFIG = "config.json"
    CHECKPOINT = "checkpoint.pt"
    METRICS = "metrics.jsonl"
    FINAL_MODEL = FINAL_MODEL
    CHANNELS = CHANNELS
    SUMMARY = "summary.json"
    SUMMARY_MD = "summary.md"
    CURVES = "curves.png"
    LOCK = ".lock"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.given = str(path)  # as passed: Path('') reads '.', the current folder

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # --- state -----------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return (self.path / self.CHECKPOINT).is_file()

    def holds_run(self) -> bool:
        """True once a run has written anything that names it (a checkpoint or run.json)."""
        return self.has_checkpoint() or (self.path / RUN_INFO).is_file()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the folder's writer lock; a second writer gets a one-line UserError (released on exit or death)."""
        return writer_lock(self.path / self.LOCK, f"run folder '{self.path}'",
                           "wait for that run to finish (or stop it), or choose another output folder")

    # --- run.json and config.json ----------------------------------------------------------
    def write_info(self, info: RunInfo) -> Path:
        return write_json(self.path / RUN_INFO, asdict(info))

    def missing_info(self) -> UserError:
        """The error for a folder without run.json: a run stopped before writing it (its config.json is there), or none."""
        if (self.path / self.CONFIG).is_file():
            return UserError(f"the training run in '{self.path}' stopped before it wrote {RUN_INFO}",
                             "finish it: run the same `iee-deploy train` again with `resume`")
        if not self.given.strip():
            return UserError("`run_dir` '' is empty", "pass the output folder of `iee-deploy train`", fields=("run_dir",))
        return UserError(f"'{self.path}' is not a run folder (no {RUN_INFO})", "pass the output folder of `iee-deploy train`")

    def read_info(self) -> RunInfo:
        """Read `run.json`, or raise a UserError saying what is wrong with the folder."""
        path = self.path / RUN_INFO
        if not path.is_file():
            raise self.missing_info()
        data = self.read_json(RUN_INFO, strict=True)
        assert data is not None
        known = {f.name for f in fields(RunInfo)}
        problem = field_type_problem(RunInfo, data)
        if problem:
            raise UserError(f"'{path}' is corrupt ({problem})", "re-run `iee-deploy train` to write it again")
        try:
            return RunInfo(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a required field missing
            raise UserError(f"'{path}' is corrupt ({exc})", "re-run `iee-deploy train` to write it again") from None

    def write_config(self, config: dict[str, Any]) -> Path:
        return write_json(self.path / self.CONFIG, config)

    def read_config(self, strict: bool = False) -> dict[str, Any] | None:
        """config.json as stored; None when it is absent (or, unless `strict`, unreadable)."""
        return self.read_json(self.CONFIG, strict)

    def read_json(self, name: str, strict: bool = False) -> dict[str, Any] | None:
        """A JSON object file of the folder (summary.json, channels.json, ...), or None if absent.

        A file that is there but truncated, edited into something else or not text is None too, unless
        `strict`: then it is a UserError saying "corrupt" (never confused with a run that has not finished).
        """
        path = self.path / name
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if strict:
                raise UserError(f"'{path}' is corrupt ({type(exc).__name__}: {str(exc)[:80]})",
                                "re-run `iee-deploy train` in a new folder to write it again") from None
            return None
        if not isinstance(data, dict):
            if strict:
                raise UserError(f"'{path}' is corrupt (a JSON {type(data).__name__}, not an object)",
                                "re-run `iee-deploy train` in a new folder to write it again")
            return None
        return data

    def write_json(self, name: str, data: Any) -> Path:
        return write_json(self.path / name, data)

    def write_text(self, name: str, text: str) -> Path:
        return write_text(self.path / name, text)

    # --- metrics.jsonl ---------------------------------------------------------------------
    def start_metrics(self) -> None:
        write_text(self.path / self.METRICS, "")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (`type` 'update' or 'epoch') to metrics.jsonl, flushed to disk."""
        append_jsonl(self.path / self.METRICS, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl; lines that are not JSON objects (a torn last line) are skipped."""
        path = self.path / self.METRICS
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def updates(self) -> list[dict[str, Any]]:
        """The structure-update records (prune and grow), in order."""
        return [r for r in self.read_metrics() if r.get("type") == "update"]

    def epochs(self) -> list[dict[str, Any]]:
        """The evaluation records, in order."""
        return [r for r in self.read_metrics() if r.get("type") == "epoch"]

    def keep_metrics_before(self, step: int) -> None:
        """Drop the records of steps >= `step` (a resumed run writes them again)."""
        kept = [r for r in self.read_metrics() if r.get("step", -1) < step]
        write_text(self.path / self.METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    # --- tensors ---------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        return save_torch(self.path / self.CHECKPOINT, state)

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        state = load_weights(self.path / self.CHECKPOINT, map_location)
        if not isinstance(state, dict):
            raise UserError(f"'{self.path / self.CHECKPOINT}' is not a training checkpoint", "start the run in a new folder")
        return state

    def save_final_model(self, state: dict[str, torch.Tensor]) -> Path:
        return save_torch(self.path / FINAL_MODEL, state)

    def load_final_model(self) -> dict[str, torch.Tensor]:
        path = self.path / FINAL_MODEL
        if not path.is_file():
            raise UserError(f"run folder '{self.path}' has no {FINAL_MODEL} (training has not finished)",
                            "wait for `iee-deploy train` to finish, or resume it")
        state = load_weights(path)
        if not isinstance(state, dict):
            raise UserError(f"'{path}' holds a {type(state).__name__}, not a state_dict", "re-run `iee-deploy train`")
        return state


def write_run_info(run_dir: str | Path, info: RunInfo) -> Path:
    return RunFolder(run_dir).write_info(info)


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read `run.json`, or raise a UserError saying what is wrong with the folder."""
    return RunFolder(run_dir).read_info()
