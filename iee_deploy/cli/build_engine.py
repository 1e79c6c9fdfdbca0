"""`iee-deploy build-engine`: physically pruned model -> ONNX -> engine, with measured FPS."""

from __future__ import annotations

import click

from iee_deploy.cli._pending import pending


@click.command("build-engine")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), required=True, help="Run folder written by `iee-deploy train`.")
@click.option("--backend", type=click.Choice(["tensorrt", "onnxruntime", "torch-cuda"]), default="onnxruntime", show_default=True,
              help="Engine backend; tensorrt and torch-cuda need an NVIDIA GPU.")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size the engine is built and timed for (images).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="Engine precision.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the engine, ONNX and the FPS report.")
def build_engine(**_: object) -> None:
    """Build an engine from a training run and measure its latency (ms/batch) and throughput (images/s)."""
    raise pending("build-engine", "the deployment backends")


COMMANDS = [build_engine]
