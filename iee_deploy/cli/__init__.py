"""The `iee-deploy` command line: profile -> train -> build-engine -> validate.

Each command lives in its own module of this package and is registered on `main` below.
User errors (`iee_deploy.errors.UserError`) are printed as one line and exit with status 2;
no traceback reaches the user.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from iee_deploy.errors import UserError


class _Group(click.Group):
    """A click group that turns user errors and interrupts into one-line messages."""

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


def _register() -> None:
    from iee_deploy.cli import build_engine, demo, graph, profile, report, train, validate

    for module in (profile, train, build_engine, validate, report, graph, demo):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def run() -> None:  # pragma: no cover - thin wrapper for `python -m iee_deploy`
    sys.exit(main())
