"""Profiling a model on a target: plan the table, measure it row by row, calibrate, record.

`profile_model` enumerates the model's layer signatures, plans every (signature, cin, cout) on the
channel grid, measures the rows that are not on disk yet (in a shuffled order, so a burst of
machine noise spreads over many layers instead of biasing one), appends each to the CSV as soon
as it is measured, then measures a few whole networks to fit the calibration and marks the
table complete. Interrupted runs continue with `resume=True` without re-measuring finished rows.
"""

from __future__ import annotations

import platform
import random
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from torch import nn
from tqdm import tqdm

from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from profiler.backends import Backend, BackendSettings, choose_backend, make_backend
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
from profiler.subnets import random_subnetworks
from profiler.targets import Target, check_device, cpu_name

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
    reused: int  # rows found on disk (--resume)
    seconds: float


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_info(threads: int) -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_name(), "threads": str(threads)}


def input_shape(batch: int, resolution: int) -> tuple[int, int, int, int]:
    return (batch, 3, resolution, resolution)


def load_model(request: ProfileRequest) -> nn.Module:
    return build_model(request.model, request.num_classes, request.resolution, request.checkpoint).eval()


def _new_meta(request: ProfileRequest, model: nn.Module, backend: Backend, device: str) -> LutMeta:
    layers = enumerate_layers(model, input_shape(1, request.resolution))
    signatures = unique_signatures(layers)
    step = request.grid_step or request.target.grid.step
    minimum = request.grid_min or request.target.grid.min
    align = request.grid_align or request.target.grid.align
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
    )


def _resume_meta(out: Path, fresh: LutMeta) -> LutMeta:
    """The metadata on disk, if its settings equal this run's; else a UserError naming the first difference."""
    old = read_meta(out)
    for key, want in fresh.settings().items():
        have = old.settings()[key]
        if have != want:
            raise UserError(f"cannot resume '{out}': it was profiled with {key} {have}, this run asks for {want}",
                            "pass the same options as the interrupted run, or a new --out")
    if old.layers != fresh.layers or old.signatures != fresh.signatures:
        raise UserError(f"cannot resume '{out}': its layers differ from this model's",
                        "pass the same --model, --num-classes, --resolution and --checkpoint, or a new --out")
    for what, have, want in (("device", old.device, fresh.device), ("library versions", old.versions, fresh.versions)):
        if have != want:
            raise UserError(f"cannot resume '{out}': it was measured with {what} {have}, this machine has {want}",
                            "finish it where it was started, or profile again into a new --out")
    return old


def calibrate(model: nn.Module, latency: LatencyModel, backend: Backend, batch: int, resolution: int, networks: int,
              statistic: str, progress: bool = True) -> Calibration:
    """Fit measured = a * sum_of_layers + b on the dense model and `networks - 1` random sub-networks.

    The networks are timed interleaved (`Backend.time_models`), so machine noise hits them alike.
    """
    models, sums = [model], [latency.sum_of_layers({})]
    for subnet in random_subnetworks(model, resolution, networks - 1, CALIBRATION_SEED, align=latency.align):
        models.append(subnet.model)
        sums.append(latency.sum_of_layers(subnet.layer_channels))
    if progress:
        print(f"calibrating on {len(models)} whole network(s)...", file=sys.stderr)
    timings = backend.time_models(models, input_shape(batch, resolution))
    return fit_calibration(sums, [t.value(statistic) for t in timings])


def profile_model(request: ProfileRequest, out: str | Path, resume: bool = False, progress: bool = True) -> ProfileSummary:
    """Measure (or finish measuring) the LUT of `request` into `out` (.csv) and its metadata (.json)."""
    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".csv":
        raise UserError(f"--out '{out}' must end in .csv", "pass e.g. --out luts/cpu-resnet18.csv")
    exists = out.exists() or meta_path(out).exists()
    if exists and not resume:
        raise UserError(f"'{out}' already exists", "pass --resume to continue it, or choose another --out")
    # An explicitly chosen backend must exist (its error says how to install it) before the device is checked.
    chosen = make_backend(request.backend, request.settings) if request.backend else None
    device = check_device(request.target)
    backend = chosen or choose_backend(request.target, request.settings)
    model = load_model(request)
    meta = _new_meta(request, model, backend, device)
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
    with RowWriter(out) as writer, tqdm(total=len(planned), initial=len(planned) - len(todo), unit="row", file=sys.stderr,
                                        desc=f"profile {request.model} on {request.target.name}", disable=not progress,
                                        smoothing=0.05) as bar:
        for key, cin, cout in todo:
            timing = backend.time_layer(meta.signatures[key], cin, cout, meta.batch)
            writer.append(Row(key, cin, cout, timing.median_ms, timing.iqr_ms, timing.min_ms, timing.runs))
            bar.update()
    rows_on_disk = read_rows(out)
    meta.rows_done = len(rows_on_disk)
    networks = request.calibration_networks or request.target.calibration_networks
    if meta.calibration is None or todo:
        latency = LatencyModel.from_lut(Lut(out, meta, rows_on_disk))
        meta.calibration = calibrate(model, latency, backend, meta.batch, meta.resolution, networks, meta.statistic,
                                     progress).to_dict()
    meta.complete, meta.updated = True, now()
    meta.elapsed_s = elapsed_before + time.perf_counter() - started
    write_meta(out, meta)
    return ProfileSummary(load_lut(out), measured=len(todo), reused=len(planned) - len(todo),
                          seconds=time.perf_counter() - started)
