"""The `iee-deploy` command line: profile -> train -> build-engine -> validate.

Each command lives in its own module of this package and is listed in `LAZY_COMMANDS` below.
User errors (`iee_deploy.errors.UserError`) are printed as one line and exit with status 2;
no traceback reaches the user.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from iee_deploy.errors import UserError

# Command name -> (module, one-line help). Modules are imported only when their command runs (or
# its --help is asked), so `iee-deploy --help` answers without importing torch.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "profile": ("profile", "Measure a per-layer latency lookup table (LUT) of a model on a target."),
    "validate-lut": ("profile", "Compare LUT-predicted with measured latency of random sub-networks."),
    "train": ("train", "Train a sparse network (IEE or a baseline) and write a run folder."),
    "build-engine": ("build_engine", "Physically pruned model -> ONNX -> engine, with measured FPS."),
    "validate": ("validate", "Deployment checks: outputs match, accuracy holds, latency meets the budget."),
    "report": ("report", "Markdown/HTML report with plots across runs."),
    "graph": ("graph", "Print the coupled channel groups of a model."),
    "models": ("models", "List the model zoo (names --model accepts), filtered by glob patterns."),
    "demo": ("demo", "The whole pipeline on the embedded default data, offline."),
}


class _Group(click.Group):
    """A lazily loading click group that turns user errors and interrupts into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return None
        module = importlib.import_module(f"iee_deploy.cli.{LAZY_COMMANDS[cmd_name][0]}")
        return next(c for c in module.COMMANDS if c.name == cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in LAZY_COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is saved; run the same command with --resume to continue", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="iee-deploy")
def main() -> None:
    """Hardware-aware sparsification (IEE) and deployment for CNNs.

    \b
    Pipeline:
      iee-deploy profile       measure per-layer latency lookup tables (LUTs) on a target
      iee-deploy train         train a sparse network with IEE (or RigL/SET/static/GMP/HALP)
      iee-deploy build-engine  physically pruned model -> ONNX -> engine, with measured FPS
      iee-deploy validate      outputs match, accuracy holds, latency meets the budget
    """


def run() -> None:  # pragma: no cover - thin wrapper for `python -m iee_deploy`
    sys.exit(main())
