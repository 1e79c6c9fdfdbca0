"""`iee-deploy train`: sparse training with IEE or a baseline, unstructured or under a latency budget."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending
from iee_deploy.cli.options import data_options, model_options, parse_pair
from iee_deploy.data import build_datasets
from iee_deploy.models import model_spec


@click.command("train")
@model_options
@data_options
@click.option("--method", type=click.Choice(["iee", "rigl", "set", "static", "gmp", "halp"]), default="iee", show_default=True,
              help="Sparsification method; all share one training loop.")
@click.option("--sparsity", type=float, default=None, help="Unstructured: fraction of prunable weights removed (0-1), e.g. 0.9.")
@click.option("--distribution", type=click.Choice(["uniform", "erk", "global"]), default="erk", show_default=True,
              help="Unstructured: how sparsity is spread over layers.")
@click.option("--nm", default=None, help="Unstructured N:M pattern along the input dimension, e.g. 2:4.")
@click.option("--latency-ms", type=float, default=None, help="Structured: latency budget Psi in ms on the target (LUT batch/precision).")
@click.option("--latency-ratio", type=float, default=None, help="Structured: budget as a fraction of the dense model's latency (0-1).")
@click.option("--target", default=None, help="Structured: hardware target name (targets/*.yaml) or a YAML path.")
@click.option("--lut", type=click.Path(dir_okay=False), default=None, help="Structured: latency lookup table from `iee-deploy profile`.")
@click.option("--hjq", default="150,150,150", show_default=True, help="IEE iterations H,J,Q: importance estimation, accuracy improvement, reactivate & explore.")
@click.option("--epochs", type=float, default=10, show_default=True, help="Training epochs (fractions allowed).")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Peak SGD learning rate (cosine decay).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/train", show_default=True, help="Run folder to write.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Training device.")
def train(model_name: str, dataset: str, data_dir: str | None, resolution: int | None, subset: int | None,
          nm: str | None, **_: object) -> None:
    """Train a sparse network (IEE by default) and write a run folder."""
    model_spec(model_name)
    if nm is not None:
        parse_pair(nm, ":", "--nm", "2:4")
    build_datasets(dataset, data_dir, resolution, subset)
    raise pending("train", "the sparse training loop")


COMMANDS = [train]
