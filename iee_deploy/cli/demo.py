"""`iee-deploy demo`: the whole pipeline on the embedded default dataset, offline."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True, help="Folder for every artefact.")
def demo(out: str) -> None:
    """profile (cpu) -> structured IEE at --latency-ratio 0.5 -> build-engine (onnxruntime) -> validate."""
    from iee_deploy.demo import run_demo

    run_demo(out)


COMMANDS = [demo]
