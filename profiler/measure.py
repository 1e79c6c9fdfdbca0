"""Profiling a model on a target: plan the table, measure it row by row, calibrate, record.

`profile_model` takes the model (built by the caller, `iee_deploy.profiling`) and a source of
random physically pruned sub-networks for the calibration, enumerates the model's layer signatures, plans every (signature, cin, cout) on the
channel grid (its channel multiples measured on the device when the target says `align: auto`,
see `profiler.blocking`), measures the rows that are not on disk yet (in a shuffled order, so a burst of
machine noise spreads over many layers instead of biasing one), appends each to the CSV as soon
as it is measured, then measures a few whole networks to fit the calibration and marks the
table complete. Interrupted runs continue with `resume=True` without re-measuring finished rows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.io import check_writable, writer_lock
from profiler.blocking import Blocking, measure_blocking
from profiler.latency import Calibration, LatencyModel, fit_calibration
from profiler.layers import enumerate_layers, plan_rows, unique_signatures
from profiler.lut import (
    Lut,
    LutMeta,
    Row,
    RowWriter,
    load_lut,
    meta_path,
    missing_rows,
    read_meta,
    read_rows,
    write_meta,
)
from profiler.measurer import BackendSettings, Measurer, choose_measurer, make_measurer
from profiler.targets import Target, check_device
from runtime.machine import machine_info
from runtime.progress import progress as progress_bar

CALIBRATION_SEED = 1_000_003  # calibration sub-networks; validate-lut draws from other seeds


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile, where and how."""

    model: str
    num_classes: int
    resolution: int
    batch: int
    target: Target
    settings: BackendSettings
    backend: str | None = None  # None: the target's first backend that runs here
    grid_step: int | None = None  # None: the target's
    grid_min: int | None = None
    grid_align: int | None = None
    statistic: str | None = None  # None: the target's
    calibration_networks: int | None = None
    checkpoint: str | None = None


@dataclass(frozen=True)
class ProfileSummary:
    """What a profile run did."""

    lut: Lut
    measured: int  # rows measured by this run
    reused: int  # rows found on disk (resume)
    seconds: float


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


Subnetworks = Callable[[int, int, int], Iterable[tuple[nn.Module, Mapping[str, tuple[int, int]]]]]
"""subnetworks(count, seed, align): random physically pruned sub-networks of the profiled model, each
with its per-layer (cin, cout), channel counts multiples of `align` (see `iee_deploy.subnets`)."""


def input_shape(batch: int, resolution: int) -> tuple[int, int, int, int]:
    return (batch, 3, resolution, resolution)


def grid_blocking(request: ProfileRequest, backend: Measurer, old: LutMeta | None,
                  progress: bool = False) -> tuple[Blocking, dict[str, float] | None]:
    """The grid's channel multiples: the request's `grid_align`, the target's, or measured here (`align: auto`).

    A resumed table keeps the blocking it was started with (`old`), so its grid does not move.
    """
    if request.grid_align:
        return Blocking(request.grid_align, request.grid_align), None
    if old is not None:
        return Blocking(old.grid_align, old.grid_block or old.grid_align), old.blocking
    if not request.target.grid.measured:
        return Blocking(request.target.grid.align, request.target.grid.align), None
    blocking, latency = measure_blocking(backend, request.batch, progress=progress)
    return blocking, {str(c): ms for c, ms in latency.items()}


def check_grid_min(request: ProfileRequest, model: nn.Module) -> None:
    """An asked-for smallest grid count at or above every layer's width leaves only full-width rows: such a table
    cannot predict a pruned network, so it is refused before anything is measured."""
    if request.grid_min is None:
        return
    signatures = unique_signatures(enumerate_layers(model, input_shape(1, request.resolution))).values()
    widest = max((max(sig.cin, sig.cout) for sig in signatures), default=0)
    if request.grid_min >= widest > 0:
        raise UserError(f"`grid_min` {request.grid_min} channels is not below the widest layer's {widest}: the table "
                        "would hold full-width layers only and could not predict a pruned network",
                        f"pass a `grid_min` below {widest}, or leave it out (the target's: {request.target.grid.min})",
                        fields=("grid_min",))


def _new_meta(request: ProfileRequest, model: nn.Module, backend: Measurer, device: str,
              blocking: tuple[Blocking, dict[str, float] | None]) -> LutMeta:
    layers = enumerate_layers(model, input_shape(1, request.resolution))
    signatures = unique_signatures(layers)
    step = request.grid_step or request.target.grid.step
    minimum = request.grid_min or request.target.grid.min
    align = blocking[0].align
    s = request.settings
    return LutMeta(
        model=request.model, num_classes=request.num_classes, resolution=request.resolution, batch=request.batch,
        precision=s.precision, target=request.target.name, target_file=str(request.target.path.resolve()),
        backend=backend.name, device=device, threads=s.threads, grid_step=step,
        grid_min=minimum, grid_align=align, warmup=s.warmup, repeats=s.repeats, network_repeats=s.network_repeats,
        statistic=request.statistic or request.target.timing.statistic,
        layers={name: sig.key for name, sig in layers.items()}, signatures=signatures,
        rows_planned=len(plan_rows(signatures.values(), step, minimum, align)), versions=backend.versions(),
        machine=machine_info(s.threads), checkpoint=request.checkpoint, created=now(),
        grid_block=blocking[0].block, blocking=blocking[1],
    )


def _resume_meta(out: Path, fresh: LutMeta) -> LutMeta:
    """The metadata on disk, if its settings equal this run's; else a UserError naming the first difference."""
    old = read_meta(out)
    for key, want in fresh.settings().items():
        have = old.settings()[key]
        if have != want:
            raise UserError(f"cannot resume '{out}': it was profiled with `{key}` {have}, this run asks for {want}",
                            "use the same settings as the interrupted run, or write a new LUT", fields=(key,))
    if old.layers != fresh.layers or old.signatures != fresh.signatures:
        raise UserError(f"cannot resume '{out}': its layers differ from this model's",
                        "profile the same model (model, num_classes, resolution, checkpoint), or write a new LUT")
    for what, have, want in (("device", old.device, fresh.device), ("library versions", old.versions, fresh.versions)):
        if have != want:
            raise UserError(f"cannot resume '{out}': it was measured with {what} {have}, this machine has {want}",
                            "finish it where it was started, or profile again into a new file")
    return old


def calibrate(model: nn.Module, latency: LatencyModel, measurer: Measurer, batch: int, resolution: int, networks: int,
              statistic: str, subnetworks: Subnetworks, progress: bool = True) -> Calibration:
    """Fit measured = a * sum_of_layers + b on the dense model and `networks - 1` random sub-networks.

    The networks are timed interleaved (`Measurer.time_models`), so machine noise hits them alike.
    """
    models, sums = [model], [latency.sum_of_layers({})]
    drawn = subnetworks(networks - 1, CALIBRATION_SEED, latency.align)
    for subnet, layer_channels in progress_bar(drawn, total=networks - 1, desc="calibration: prune sub-networks",
                                               unit="net", enabled=progress):
        models.append(subnet)
        sums.append(latency.sum_of_layers(layer_channels))
    timings = measurer.time_models(models, input_shape(batch, resolution),
                                   f"calibration: time {len(models)} whole networks" if progress else None)
    return fit_calibration(sums, [t.value(statistic) for t in timings])


def check_out(out: Path, resume: bool) -> None:
    """Refuse an output path that is not a .csv, already exists (without resume) or cannot be written."""
    if out.suffix != ".csv":
        raise UserError(f"the LUT path `out` '{out}' must end in .csv", "name a .csv file, e.g. luts/cpu-resnet18.csv",
                        fields=("out",))
    if (out.exists() or meta_path(out).exists()) and not resume:
        _refuse_existing(out)
    check_writable(out, "out")


_RECORDS = {"engine.json": "an engine's", "run.json": "a training run's", "report.json": "a report's"}
"""Files of the tool's other commands that a LUT's metadata path can fall on (`out` eng/engine.csv)."""


def _refuse_existing(out: Path) -> None:
    """The UserError for an `out` whose table or metadata exists (without resume), in the words of what is there:
    another file than a LUT's metadata, a finished LUT (nothing to resume) or an interrupted profile."""
    meta = meta_path(out)
    try:
        data = json.loads(meta.read_text()) if meta.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None  # a torn metadata file: an interrupted profile's, which resume reports in words
    if isinstance(data, dict) and not {"format", "rows_planned"} <= data.keys():
        owner = _RECORDS.get(meta.name, "another program's")
        raise UserError(f"'{meta}', where the LUT `out` '{out}' would write its metadata, is {owner} file, not a LUT's",
                        "choose another path for the LUT", fields=("out",))
    if isinstance(data, dict) and data.get("complete") is True and out.exists():
        raise UserError(f"the LUT `out` '{out}' already exists and is complete", "choose another path, or delete it "
                        f"and '{meta.name}' to measure it again", fields=("out",))
    if out.exists():
        raise UserError(f"the LUT path `out` '{out}' already exists", "finish it with `resume`, or choose another path",
                        fields=("out", "resume"))
    # a profile stopped before its first row
    raise UserError(f"'{meta}', where the LUT `out` '{out}' writes its metadata, already exists (without the table "
                    f"'{out.name}')", "finish an interrupted profile with `resume`, or choose another path",
                    fields=("out", "resume"))


def profile_model(request: ProfileRequest, model: nn.Module, out: str | Path, subnetworks: Subnetworks,
                  resume: bool = False, progress: bool = True) -> ProfileSummary:
    """Measure (or finish measuring) the LUT of `request` for `model` into `out` (.csv) and its metadata (.json).

    One process at a time writes a LUT (`<out>.lock`): a second one on the same path is refused at once
    instead of measuring every row again and interleaving its rows with the first one's.
    """
    out = Path(out)
    check_out(out, resume)
    with writer_lock(out.with_name(out.name + ".lock"), f"the LUT '{out}'",
                     "wait for that profile to finish (or stop it), then add `resume` to finish it", fields=("resume",)):
        return _measure(request, model, out, subnetworks, resume, progress)


def _measure(request: ProfileRequest, model: nn.Module, out: Path, subnetworks: Subnetworks, resume: bool,
             progress: bool) -> ProfileSummary:
    started = time.perf_counter()
    check_out(out, resume)
    exists = out.exists() or meta_path(out).exists()
    # An explicitly chosen backend must exist (its error says how to install it) before the device is checked.
    check_grid_min(request, model)
    chosen = make_measurer(request.backend, request.settings) if request.backend else None
    device = check_device(request.target)
    backend = chosen or choose_measurer(request.target, request.settings)
    meta = _new_meta(request, model.eval(), backend, device,
                     grid_blocking(request, backend, read_meta(out) if exists else None, progress))
    rows: list[Row] = []
    if exists:
        meta = _resume_meta(out, meta)
        rows = read_rows(out, repair=True) if out.exists() else []
    planned = plan_rows(meta.signatures.values(), meta.grid_step, meta.grid_min, meta.grid_align)
    todo = missing_rows(rows, planned)
    random.Random(0).shuffle(todo)
    meta.rows_done, meta.complete, meta.updated = len(planned) - len(todo), False, now()
    write_meta(out, meta)
    elapsed_before = meta.elapsed_s
    with RowWriter(out) as writer, progress_bar(total=len(planned), initial=len(planned) - len(todo), unit="row",
                                                desc=f"profile {request.model} on {request.target.name}",
                                                enabled=progress) as bar:
        for key, cin, cout in todo:
            timing = backend.time_layer(meta.signatures[key], cin, cout, meta.batch)
            writer.append(Row(key, cin, cout, timing.median_ms, timing.iqr_ms, timing.min_ms, timing.iterations))
            bar.update()
    rows_on_disk = read_rows(out)
    meta.rows_done = len(rows_on_disk)
    networks = request.calibration_networks or request.target.calibration_networks
    if meta.calibration is None or todo:
        latency = LatencyModel.from_lut(Lut(out, meta, rows_on_disk))
        meta.calibration = calibrate(model, latency, backend, meta.batch, meta.resolution, networks, meta.statistic,
                                     subnetworks, progress).to_dict()
    meta.complete, meta.updated = True, now()
    meta.elapsed_s = elapsed_before + time.perf_counter() - started
    write_meta(out, meta)
    return ProfileSummary(load_lut(out), measured=len(todo), reused=len(planned) - len(todo),
                          seconds=time.perf_counter() - started)
