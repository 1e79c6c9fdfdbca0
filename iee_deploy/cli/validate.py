"""`iee-deploy validate`: deployment checks for a built engine."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending
from iee_deploy.cli.options import data_options


@click.command("validate")
@click.option("--engine", "engine_dir", type=click.Path(file_okay=False), required=True, help="Folder written by `build-engine`.")
@data_options
@click.option("--latency-ms", type=float, default=None, help="Budget in ms per batch that the measured latency must meet.")
def validate(**_: object) -> None:
    """Check outputs match (engine vs PyTorch), top-1 accuracy, and measured latency vs budget and LUT."""
    raise pending("validate", "the deployment checks")


COMMANDS = [validate]
