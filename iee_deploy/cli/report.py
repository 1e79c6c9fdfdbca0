"""`iee-deploy report`: markdown/HTML report with plots across training runs."""

from __future__ import annotations

import click

from iee_deploy.io import check_writable


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for report.md, report.html, report.json and the PNG plots.")
def report(runs: tuple[str, ...], out: str) -> None:
    """Accuracy vs measured latency (Pareto), IoU and survival curves, predicted vs measured latency.

    RUNS are run folders (engines built into them are found) and/or build-engine folders.
    """
    from iee_deploy.deploy.report import write_report

    check_writable(out, "out", folder=True)

    click.echo(f"wrote {write_report(runs, out)} (and report.html, report.json, PNG plots)")


COMMANDS = [report]
