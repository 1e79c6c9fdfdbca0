"""`iee-deploy profile` and `iee-deploy validate-lut`: per-layer latency lookup tables for a target."""

from __future__ import annotations

import math
from pathlib import Path

import click

from iee_deploy.cli.options import model_options
from iee_deploy.errors import UserError
from iee_deploy.io import check_writable, write_json
from iee_deploy.models import model_spec
from iee_deploy.profiling import profile as run_profile
from iee_deploy.profiling import validate_lut as run_validation
from iee_deploy.seeding import MAX_SEED
from profiler.latency import Calibration
from profiler.lut import meta_path
from profiler.measure import ProfileRequest
from profiler.measurer import settings_for, timing_cache_path
from profiler.targets import load_target
from runtime.backends import PRECISIONS
from runtime.timing import describe


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name} must be positive, got {value}", f"pass {name} 1 or more")


@click.command("profile")
@click.option("--target", required=True,
              help="Hardware target: a name from targets/*.yaml (cpu, titanv, v100, a100, h100, h200, jetson-orin) or a YAML path.")
@model_options
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size to time, in images (default: the target's: 256 on datacenter GPUs, 1 on CPU/edge).")
@click.option("--backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default=None,
              help="Measuring backend (default: the target's first that can run here).")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default=None,
              help="Precision (default: the target's: fp16 on GPUs, fp32 on CPU). int8 (onnxruntime on the CPU, "
                   "tensorrt) times each layer as its QDQ graph, checked to run as integer kernels; fp8: tensorrt on "
                   "GPUs of compute capability 8.9 or more. A budget from the table is in its precision.")
@click.option("--step", type=click.IntRange(min=1), default=None, help="Channel grid step in channels (default: the target's: 16).")
@click.option("--min-channels", type=click.IntRange(min=1), default=None, help="Smallest channel count on the grid (default: the target's: 8).")
@click.option("--align", type=click.IntRange(min=1), default=None,
              help="Hardware channel block in channels: grid points are multiples of it and queries are rounded up to it "
                   "(default: the target's: 8 on GPUs; measured on the device for the cpu target, see `align: auto`).")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Untimed runs before timing each configuration (default: the target's).")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Timed runs per layer configuration; the table records their median and fastest run, and the latency "
                   "model uses the target's statistic (--statistic) (default: the target's).")
@click.option("--statistic", type=click.Choice(["median", "min"]), default=None,
              help="Latency the table records and the model predicts: median run or fastest run (default: the target's: "
                   "min on CPU, reproducible on a shared machine; median on GPUs).")
@click.option("--network-repeats", type=click.IntRange(min=1), default=None, help="Timed runs per whole network for calibration (default: the target's).")
@click.option("--calibration-networks", type=click.IntRange(min=1), default=None,
              help="Whole networks (dense + random sub-networks) measured to fit measured = a * sum_of_layers + b (default: the target's, 5).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="LUT file to write (.csv), metadata beside it (.json). Default: luts/<target>-<model>.csv, "
                   "luts/<target>-<model>-<precision>.csv for a precision other than the target's.")
@click.option("--resume", is_flag=True, help="Continue an interrupted profile in --out without re-measuring finished rows.")
def profile(target: str, model_name: str, num_classes: int | None, resolution: int | None, checkpoint: str | None,
            batch: int | None, backend: str | None, precision: str | None, step: int | None, min_channels: int | None,
            align: int | None, warmup: int | None, repeats: int | None, statistic: str | None, network_repeats: int | None, calibration_networks: int | None,
            out: str | None, resume: bool) -> None:
    """Measure a per-layer latency lookup table (LUT) of a model on a hardware target.

    Every conv/linear layer signature of the model is timed as a one-layer network over a grid of
    (input, output) channel counts, with warm-up and repeats; rows are written as they are measured,
    then a few whole networks calibrate the sum of layer latencies. Latency is in ms per batch.
    """
    for name, value in (("--batch", batch), ("--step", step), ("--min-channels", min_channels), ("--align", align),
                        ("--repeats", repeats),
                        ("--network-repeats", network_repeats), ("--calibration-networks", calibration_networks),
                        ("--num-classes", num_classes), ("--resolution", resolution)):
        _positive(name, value)
    if warmup is not None and warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {warmup}", "pass --warmup 0 or more")
    spec = model_spec(model_name)
    hw = load_target(target)
    other = f"-{precision}" if precision is not None and precision != hw.precision else ""  # never the default's file
    out_path = check_writable(out, "out") if out is not None else Path(f"luts/{hw.name}-{model_name}{other}.csv")
    settings = settings_for(hw, precision, warmup, repeats, network_repeats, timing_cache_path(out_path))
    request = ProfileRequest(model=model_name, num_classes=num_classes or spec.default_classes, resolution=resolution or spec.native_resolution,
                             batch=batch or hw.batch, target=hw, settings=settings, backend=backend, grid_step=step,
                             grid_min=min_channels, grid_align=align, statistic=statistic, calibration_networks=calibration_networks, checkpoint=checkpoint)
    summary = run_profile(request, out_path, resume=resume)
    meta = summary.lut.meta
    cal = meta.calibration or {}
    click.echo(f"LUT {out_path} ({meta_path(out_path)}): {meta.model} at {meta.resolution}px, batch {meta.batch}, {meta.precision}, "
               f"{meta.backend} on {meta.device}, {meta.threads} thread(s), latency = {describe(meta.statistic)} of {meta.repeats} runs")
    click.echo(f"  {len(meta.signatures)} layer signatures for {len(meta.layers)} layers, {meta.rows_done} rows "
               f"({summary.measured} measured now, {summary.reused} reused) in {summary.seconds:.0f} s")
    click.echo(f"  calibration on {len(cal.get('points', []))} whole network(s): measured ({describe(meta.statistic)}) = "
               f"{Calibration.from_dict(cal).formula()}")


@click.command("validate-lut")
@click.option("--lut", type=click.Path(dir_okay=False), required=True, help="LUT (.csv) written by `iee-deploy profile`.")
@model_options
@click.option("--samples", type=click.IntRange(min=1), default=10, show_default=True, help="Random physically pruned sub-networks to measure.")
@click.option("--min-keep", type=click.FloatRange(0, 1, min_open=True), default=0.3, show_default=True, help="Smallest fraction (0-1) of each group's channels kept.")
@click.option("--max-keep", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="Largest fraction (0-1) of each group's channels kept.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Random seed of the sub-networks.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write predicted vs measured figures here.")
def validate_lut(lut: str, model_name: str, num_classes: int | None, resolution: int | None, checkpoint: str | None,
                 samples: int, min_keep: float, max_keep: float, seed: int, json_out: str | None) -> None:
    """Compare LUT-predicted with measured whole-network latency (ms per batch; MAPE in %, Spearman rank correlation)."""
    _positive("--samples", samples)
    if not 0 < min_keep <= max_keep <= 1:
        raise UserError(f"keep fractions must satisfy 0 < --min-keep <= --max-keep <= 1, got {min_keep} and {max_keep}",
                        "pass e.g. --min-keep 0.3 --max-keep 1.0")
    report = run_validation(lut, model_name, num_classes, resolution, checkpoint, samples, seed, min_keep, max_keep,
                            json_out=json_out)
    words = describe(report.statistic)
    click.echo(f"{report.model} on {report.target} ({report.backend}, {report.device}), batch {report.batch}, latency = "
               f"{words}: dense measured {report.dense_measured_ms:.3f} ms, predicted {report.dense_predicted_ms:.3f} ms")
    click.echo(f"{'#':>3} {'keep level':>10} {'predicted ms':>13} {'measured ms (' + words + ')':>26} {'error %':>8}")
    for i, s in enumerate(report.samples, 1):
        click.echo(f"{i:>3} {s.level:>10.2f} {s.predicted_ms:>13.3f} {s.measured_ms:>26.3f} {s.error_pct:>+8.1f}")
    rank = (f"{report.spearman:.3f}" if math.isfinite(report.spearman) else
            "undefined (it ranks 2 or more sub-networks whose predictions differ: raise --samples)")
    click.echo(f"MAPE {report.mape_pct:.1f}% (uncalibrated sum of layers: {report.mape_uncalibrated_pct:.1f}%), "
               f"Spearman {rank} over {len(report.samples)} sub-network(s)")
    if json_out:
        write_json(json_out, report.to_dict())
        click.echo(f"wrote {json_out}")


COMMANDS = [profile, validate_lut]
