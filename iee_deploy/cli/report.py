"""`iee-deploy report`: markdown/HTML report with plots across training runs."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for report.md, report.html and PNG plots.")
def report(**_: object) -> None:
    """Accuracy vs measured latency (Pareto), IoU and survival curves, predicted vs measured latency."""
    raise pending("report", "the report generator")


COMMANDS = [report]
