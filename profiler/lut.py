"""Latency lookup tables on disk: a CSV of measurements plus a JSON file of metadata beside it.

`<name>.csv` (pandas-readable) has one row per measured configuration:

| column | meaning |
|---|---|
| `signature` | layer signature key (see `profiler.layers.LayerSignature.key`) |
| `cin`, `cout` | channel counts of that measurement |
| `median_ms`, `iqr_ms`, `min_ms` | latency per batch: median, inter-quartile range, minimum (ms) |
| `runs` | timed runs behind those figures |

`<name>.json` holds `LutMeta`: what was measured (model, resolution, batch, precision, layers and
their signatures, grid and the runtime's measured channel blocking), where and how (target, device, backend and library versions, machine,
threads, repeats), when, whether the table is complete, and the whole-network calibration.

Rows are appended and flushed to disk one at a time, so a killed profile loses at most the row
being measured; resuming keeps every complete row and drops a torn last line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, NamedTuple

from iee_deploy.errors import UserError
from iee_deploy.io import write_json, write_text
from profiler.layers import LayerSignature, plan_rows

LUT_FORMAT = 1
RESUME_FIX = "run the same `iee-deploy profile` command again with resume on (same settings); finished rows are kept"
COLUMNS = ("signature", "cin", "cout", "median_ms", "iqr_ms", "min_ms", "runs")
HEADER = ",".join(COLUMNS) + "\n"


class Row(NamedTuple):
    """One measured configuration."""

    signature: str
    cin: int
    cout: int
    median_ms: float
    iqr_ms: float
    min_ms: float
    runs: int


@dataclass
class LutMeta:
    """Everything needed to trust, reuse or resume a latency table."""

    model: str
    num_classes: int
    resolution: int
    batch: int
    precision: str
    target: str
    target_file: str
    backend: str
    device: str
    threads: int
    grid_step: int
    grid_min: int
    grid_align: int
    warmup: int
    repeats: int
    network_repeats: int
    statistic: str  # "median" or "min": the column the latency model uses
    layers: dict[str, str]  # layer name -> signature key
    signatures: dict[str, LayerSignature]  # signature key -> signature
    rows_planned: int
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    created: str = ""
    updated: str = ""
    rows_done: int = 0
    complete: bool = False
    elapsed_s: float = 0.0
    calibration: dict[str, Any] | None = None  # profiler.latency.Calibration.to_dict()
    format: int = LUT_FORMAT
    grid_block: int = 0  # the runtime's channel block (profiler.blocking); 0: grid_align (tables before it existed)
    blocking: dict[str, float] | None = None  # the probe conv's latency (ms) by channel count, when measured

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["signatures"] = {k: s.to_dict() for k, s in self.signatures.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LutMeta:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["signatures"] = {k: LayerSignature.from_dict(v) for k, v in data["signatures"].items()}
        return cls(**values)

    def settings(self) -> dict[str, Any]:
        """What decides the numbers in the table: two tables with different settings cannot be mixed."""
        keys = ("model", "num_classes", "resolution", "batch", "precision", "target", "backend", "threads", "grid_step",
                "grid_min", "grid_align", "grid_block", "warmup", "repeats", "statistic")
        return {k: getattr(self, k) for k in keys}


@dataclass
class Lut:
    """A latency table loaded from disk."""

    path: Path
    meta: LutMeta
    rows: list[Row]


def meta_path(csv_path: str | os.PathLike[str]) -> Path:
    """The metadata file of a LUT: `x.csv` -> `x.json`."""
    return Path(csv_path).with_suffix(".json")


def write_meta(csv_path: str | os.PathLike[str], meta: LutMeta) -> Path:
    return write_json(meta_path(csv_path), meta.to_dict())


def read_meta(csv_path: str | os.PathLike[str]) -> LutMeta:
    """Read a LUT's metadata, or raise a UserError naming what is wrong with it."""
    path = meta_path(csv_path)
    if not path.is_file():
        raise UserError(f"LUT metadata '{path}' does not exist", "pass a LUT written by `iee-deploy profile` (its .csv "
                                                                  "with the .json beside it)")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != LUT_FORMAT:
            raise UserError(f"LUT '{csv_path}' has format {data.get('format')!r}, this version reads {LUT_FORMAT}",
                            "profile the target again")
        meta = LutMeta.from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(f"LUT metadata '{path}' is corrupt ({type(exc).__name__}: {str(exc)[:100]})",
                        "profile the target again") from None
    problem = meta_problem(meta)
    if problem:
        raise UserError(f"LUT metadata '{path}' is corrupt: {problem}", "profile the target again")
    return meta


_COUNTS = {"num_classes": 1, "resolution": 1, "batch": 1, "threads": 0, "grid_step": 1, "grid_min": 1, "grid_align": 0,
           "grid_block": 0, "warmup": 0, "repeats": 1, "network_repeats": 1, "rows_planned": 0, "rows_done": 0}
"""Integer fields of `LutMeta` and their smallest valid value."""
_NAMES = ("model", "precision", "target", "backend", "device", "statistic")


def meta_problem(meta: LutMeta) -> str | None:
    """What makes metadata impossible (a field of the wrong type or out of range), or None when it is sound.

    Checked on every read so that an edited or damaged table is refused in words ("batch is 0, not a whole
    number >= 1") instead of failing later or being trusted.
    """
    for name, least in _COUNTS.items():
        value = getattr(meta, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            return f"{name} is {value!r}, not a whole number >= {least}"
    for name in _NAMES:
        if not isinstance(getattr(meta, name), str) or not getattr(meta, name):
            return f"{name} is {getattr(meta, name)!r}, not a name"
    if meta.statistic not in ("median", "min"):
        return f"statistic is {meta.statistic!r}, not median or min"
    if not isinstance(meta.layers, dict) or any(not isinstance(k, str) or v not in meta.signatures
                                                for k, v in meta.layers.items()):
        return "layers name signatures the table does not hold"
    cal = meta.calibration
    if cal is not None:
        try:
            a, b = float(cal["a"]), float(cal["b"])
            points = [(float(x), float(y)) for x, y in cal.get("points", [])]
        except (KeyError, TypeError, ValueError):
            return f"calibration is {cal!r}, not a fit"
        if not (math.isfinite(a) and a > 0 and math.isfinite(b)):
            return f"calibration slope {a} and intercept {b} are impossible (the slope must be positive)"
        if any(not (math.isfinite(x) and x > 0 and math.isfinite(y) and y > 0) for x, y in points):
            return "calibration points are not positive latencies"
    return None


def _parse_row(values: list[str], where: str) -> Row:
    if len(values) != len(COLUMNS):
        raise ValueError(f"{where} has {len(values)} fields, expected {len(COLUMNS)}")
    try:
        row = Row(values[0], int(values[1]), int(values[2]), float(values[3]), float(values[4]), float(values[5]),
                  int(values[6]))
    except ValueError:
        raise ValueError(f"{where} is not a measurement: {','.join(values)}") from None
    if row.cin < 1 or row.cout < 1 or row.runs < 1 or not all(
            math.isfinite(v) and v > 0 for v in (row.median_ms, row.min_ms)) or not (
            math.isfinite(row.iqr_ms) and row.iqr_ms >= 0) or row.min_ms > row.median_ms:
        raise ValueError(f"{where} has impossible values: {','.join(values)}")
    return row


def read_rows(csv_path: str | os.PathLike[str], repair: bool = False) -> list[Row]:
    """Read the measured rows; with `repair`, drop a torn last line left by a killed run (and rewrite the file).

    Any other damage is a UserError naming the line.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"LUT '{path}' does not exist", "pass a LUT written by `iee-deploy profile`")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"LUT '{path}' is corrupt (not text)", "profile the target again") from None
    torn = bool(text) and not text.endswith("\n")
    if torn and repair:
        text = text[: text.rfind("\n") + 1]
        write_text(path, text)
    if text and not text.startswith(HEADER):
        raise UserError(f"LUT '{path}' is corrupt (its header is not {HEADER.strip()})", "profile the target again")
    rows: list[Row] = []
    try:
        for number, values in enumerate(csv.reader(io.StringIO(text)), 1):
            if number > 1:
                rows.append(_parse_row(values, f"line {number}"))
    except (ValueError, csv.Error) as exc:
        raise UserError(f"LUT '{path}' is corrupt ({exc})", "profile the target again") from None
    return rows


def row_line(row: Row) -> str:
    """One CSV line of a LUT (6 significant digits per latency)."""
    return f"{row.signature},{row.cin},{row.cout},{row.median_ms:.6g},{row.iqr_ms:.6g},{row.min_ms:.6g},{row.runs}\n"


class RowWriter:
    """Appends rows to a LUT's CSV, each flushed and synced to disk before the next measurement."""

    def __init__(self, csv_path: str | os.PathLike[str]) -> None:
        self.path = Path(csv_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] = open(self.path, "a", newline="")  # noqa: SIM115 - open for the writer's lifetime
        if fresh:
            self._write(HEADER)

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, row: Row) -> None:
        self._write(row_line(row))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def missing_rows(rows: Iterable[Row], planned: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Planned (signature, cin, cout) configurations that have no row yet, in plan order."""
    done = {(r.signature, r.cin, r.cout) for r in rows}
    return [p for p in planned if p not in done]


def load_lut(csv_path: str | os.PathLike[str]) -> Lut:
    """Read a complete LUT, checking that its rows are the ones its metadata planned."""
    if not Path(csv_path).is_file():  # named before its metadata, which a missing table has none of either
        raise UserError(f"LUT '{csv_path}' does not exist", "pass a LUT written by `iee-deploy profile` (its .csv "
                                                             "with the .json beside it)", fields=("lut",))
    if Path(csv_path).suffix != ".csv":  # e.g. the metadata .json: not a damaged table
        raise UserError(f"LUT '{csv_path}' is not a LUT table (.csv)", "pass the .csv that `iee-deploy profile` wrote "
                        "(its metadata .json lies beside it)", fields=("lut",))
    meta = read_meta(csv_path)
    rows = read_rows(csv_path)
    planned = plan_rows(meta.signatures.values(), meta.grid_step, meta.grid_min, meta.grid_align)
    planned_set = set(planned)
    seen: set[tuple[str, int, int]] = set()
    for row in rows:
        key = (row.signature, row.cin, row.cout)
        if key not in planned_set:
            raise UserError(f"LUT '{csv_path}' is corrupt: row {key} is not on its grid", "profile the target again")
        if key in seen:
            raise UserError(f"LUT '{csv_path}' is corrupt: row {key} appears twice", "profile the target again")
        seen.add(key)
    absent = missing_rows(rows, planned)
    if absent:
        raise UserError(f"LUT '{csv_path}' is incomplete: {len(absent)} of {len(planned)} rows missing (e.g. {absent[0]})",
                        f"finish it: {RESUME_FIX}")
    if not meta.complete or meta.calibration is None:
        raise UserError(f"LUT '{csv_path}' is incomplete: its profile stopped before the whole-network calibration "
                        "finished, so its predictions are uncalibrated", f"finish it: {RESUME_FIX}")
    return Lut(Path(csv_path), meta, rows)


def check_lut(lut: Lut, *, model: str | None = None, num_classes: int | None = None, resolution: int | None = None,
              batch: int | None = None, precision: str | None = None, target: str | None = None,
              layers: Mapping[str, LayerSignature] | None = None) -> None:
    """Raise a UserError naming the first way `lut` does not fit what the caller is about to use it for."""
    meta, name = lut.meta, lut.path
    expected = {"model": model, "num_classes": num_classes, "resolution": resolution, "batch": batch,
                "precision": precision, "target": target}
    for key, want in expected.items():
        have = getattr(meta, key)
        if want is not None and want != have:
            raise UserError(f"LUT '{name}' was measured for {key} {have}, not {want}",
                            f"profile {key} {want} with `iee-deploy profile`, or pass the LUT of {key} {want}")
    if layers is None:
        return
    absent = [n for n in layers if n not in meta.layers]
    extra = [n for n in meta.layers if n not in layers]
    for names, problem, where in ((absent, "has no entry for layer(s)", "of the model"),
                                  (extra, "has layer(s)", "that the model lacks")):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise UserError(f"LUT '{name}' {problem} {', '.join(names[:3])}{more} {where}",
                            f"profile this model (LUT model: {meta.model}) with `iee-deploy profile`")
    for layer, sig in layers.items():
        stored = meta.signatures[meta.layers[layer]]
        if stored != sig:
            raise UserError(f"LUT '{name}': layer '{layer}' is {stored.key} in the LUT but {sig.key} in the model",
                            "profile this exact model (same classes, resolution and architecture)")
