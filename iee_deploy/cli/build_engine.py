"""`iee-deploy build-engine`: physically pruned model -> ONNX -> engine, with measured FPS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from iee_deploy.deploy.calibration import DEFAULT_IMAGES, CalibrationRequest
from iee_deploy.seeding import MAX_SEED
from runtime.backends import ALIASES, BACKENDS, PRECISIONS, canonical_name
from runtime.timing import TimingConfig


def timing_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--warmup-s / --min-iters / --min-seconds (trtexec's defaults), shared with `validate`."""
    for decorator in reversed([
        click.option("--warmup-s", type=click.FloatRange(min=0), default=0.2, show_default=True,
                     help="Warm-up time per model before timing (seconds)."),
        click.option("--min-iters", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Time at least this many batches per model."),
        click.option("--min-seconds", type=click.FloatRange(min=0), default=3.0, show_default=True,
                     help="...and at least this long per model (seconds)."),
    ]):
        fn = decorator(fn)
    return fn


def timing_config(warmup_s: float, min_iters: int, min_seconds: float) -> TimingConfig:
    return TimingConfig(warmup_s=warmup_s, min_iterations=min_iters, min_seconds=min_seconds)


@click.command("build-engine")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), required=True, help="Run folder written by `iee-deploy train`.")
@click.option("--backend", type=click.Choice([*BACKENDS, *ALIASES]), default="onnxruntime", show_default=True,
              help="Engine backend: onnxruntime (CPU); tensorrt and torch (CUDA graphs) need an NVIDIA GPU "
                   "(torch-cuda is the earlier name of torch).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size the engine is built and timed for (images).")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default=None,
              help="Engine precision: the dtype of inputs, weights and outputs (fp16 is exported as an FP16 ONNX); "
                   "int8 (onnxruntime, tensorrt) and fp8 (tensorrt on compute capability 8.9+) are static QDQ "
                   "quantization with per-channel weights, calibrated on training images of the run's dataset. "
                   "Default: fp32 on onnxruntime, fp16 on tensorrt and torch.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=None,
              help=f"Quantized engines: training images of the run's dataset to calibrate activation scales on "
                   f"(default {DEFAULT_IMAGES}, or all the run's training set holds when fewer).")
@click.option("--calibration-method", default=None,
              help="Quantized engines: calibration method as onnxruntime.quantization names it: MinMax, Entropy or "
                   "Percentile for int8 (default MinMax); Distribution for fp8.")
@click.option("--calibration-seed", type=click.IntRange(min=0, max=MAX_SEED), default=None,
              help="Quantized engines: seed that draws the calibration images (default 0).")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="CPU threads of the onnxruntime engine, the same for dense and pruned. Default: the run's target's "
                   "`threads` (the cpu target's for a run without a target).")
@timing_options
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for the ONNX files, the engines and the FPS report (engine.json, engine.md).")
@click.option("--force", is_flag=True, help="Replace the engine of another run that --out holds.")
def build_engine(run_dir: str, backend: str, batch: int, precision: str | None, calibration_images: int | None,
                 calibration_method: str | None, calibration_seed: int | None, threads: int | None, warmup_s: float,
                 min_iters: int, min_seconds: float, out: str, force: bool) -> None:
    """Build the pruned and the dense model of a run and time both side by side.

    Prints and writes latency (ms per batch in the target's statistic: fastest run on the cpu
    target, median on GPUs; also median and p90), throughput (images/s), non-zero parameters and
    the speed-up (dense / pruned latency) measured in one interleaved run on the same threads.
    """
    from iee_deploy.deploy.build import ENGINE_MARKDOWN
    from iee_deploy.deploy.build import build_engine as build

    asked = (calibration_images, calibration_method, calibration_seed)
    defaults = CalibrationRequest()
    calibration = None if asked == (None, None, None) else CalibrationRequest(
        calibration_images, calibration_method, defaults.seed if calibration_seed is None else calibration_seed)
    report = build(run_dir, out, backend=canonical_name(backend), batch=batch, precision=precision, threads=threads,
                   timing=timing_config(warmup_s, min_iters, min_seconds), log=lambda msg: click.echo(msg, err=True),
                   force=force, calibration=calibration)
    click.echo(report.markdown())
    click.echo(f"wrote {out}/{ENGINE_MARKDOWN} and engine.json")


COMMANDS = [build_engine]
