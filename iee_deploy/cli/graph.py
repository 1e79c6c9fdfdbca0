"""`iee-deploy graph`: print the coupled channel groups of a model's dependency graph."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending
from iee_deploy.cli.options import model_options


@click.command("graph")
@model_options
def graph(**_: object) -> None:
    """Print channel groups (channels that must be kept or removed together), their sizes and layers."""
    raise pending("graph", "the dependency graph")


COMMANDS = [graph]
