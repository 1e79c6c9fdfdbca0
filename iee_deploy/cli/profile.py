"""`iee-deploy profile` and `iee-deploy validate-lut`: per-layer latency lookup tables for a target."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending
from iee_deploy.cli.options import model_options


@click.command("profile")
@click.option("--target", required=True, help="Hardware target: a name from targets/*.yaml (cpu, titanv, h100, ...) or a YAML path.")
@model_options
@click.option("--batch", type=int, default=None, help="Batch size to time (default: the target's, 256 on datacenter GPUs, 1 on CPU).")
@click.option("--backend", default=None, help="onnxruntime, torch or tensorrt (default: the target's first available).")
@click.option("--step", type=int, default=None, help="Channel grid step (default: the target's; 8-aligned on GPUs, coarser on CPU).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="LUT file to write (.csv), metadata beside it (.json).")
@click.option("--resume", is_flag=True, help="Continue an interrupted profile in --out without re-measuring finished rows.")
def profile(**_: object) -> None:
    """Measure a per-layer latency lookup table (LUT) of a model on a hardware target."""
    raise pending("profile", "the profiler")


@click.command("validate-lut")
@click.option("--lut", type=click.Path(dir_okay=False), required=True, help="LUT written by `iee-deploy profile`.")
@model_options
@click.option("--samples", type=int, default=10, show_default=True, help="Random sub-networks to measure.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write predicted vs measured figures here.")
def validate_lut(**_: object) -> None:
    """Compare LUT-predicted with measured whole-network latency (MAPE in %, Spearman rank correlation)."""
    raise pending("validate-lut", "the profiler's latency model")


COMMANDS = [profile, validate_lut]
