"""The `iee-deploy` command line: profile -> train -> build-engine -> validate.

Each command lives in its own module of this package and is listed in `LAZY_COMMANDS` below.
User errors (`iee_deploy.errors.UserError`) are printed as one line and exit with status 2;
no traceback reaches the user. The library names config fields in its errors; `flag_of` maps each
to the running command's option that sets it, so only this package spells flags.
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


FIELD_PARAMS: dict[str, str] = {"freeze": "no_freeze", "init_checkpoint": "checkpoint", "model": "model_name",
                                 "grid_step": "step", "grid_min": "min_channels", "grid_align": "align",
                                 "min_iterations": "min_iters"}
"""Library field (or parameter) name -> click parameter name, where the two differ."""

OTHER_COMMAND_FIELDS: dict[str, str] = {"repeats": "profile", "batch": "profile"}
"""Library fields a message may ask to change in another command (a noisy LUT: `profile`'s timing options) ->
that command, whose flag the CLI shows when the failing command has no option of that name."""


def flag_of(command: click.Command | None, field: str) -> str:
    """The flag of `command` that sets library field `field` (e.g. 'init_checkpoint' -> '--checkpoint').

    A field the command has no option for keeps its own name, so a message never shows a flag the
    command does not have.
    """
    for wanted in (field, FIELD_PARAMS.get(field)):
        for param in command.params if command is not None else []:
            if param.name == wanted and isinstance(param, click.Option):
                return max(param.opts, key=len)
            if param.name == wanted and isinstance(param, click.Argument):
                return param.human_readable_name
    return field


def command_named(name: str) -> click.Command | None:
    """The command `iee-deploy NAME` (its module imported on first use), or None for an unknown name."""
    if name not in LAZY_COMMANDS:
        return None
    module = importlib.import_module(f"iee_deploy.cli.{LAZY_COMMANDS[name][0]}")
    return next(c for c in module.COMMANDS if c.name == name)


def cli_flag(command: click.Command | None, field: str) -> str:
    """How the CLI writes library field `field` in an error of `command`: `flag_of(command, field)`, or, for a
    field `OTHER_COMMAND_FIELDS` assigns to another command that `command` lacks, that command's flag."""
    flag = flag_of(command, field)
    if flag == field and field in OTHER_COMMAND_FIELDS:
        return flag_of(command_named(OTHER_COMMAND_FIELDS[field]), field)
    return flag


class _Group(click.Group):
    """A lazily loading click group that turns user errors and interrupts into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return command_named(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in LAZY_COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a bad option value: one line, like every other user error
            name = err.ctx.command_path if err.ctx is not None else ctx.command_path
            click.echo(f"error: {err.format_message().rstrip('.')}; see `{name} --help`", err=True)
            ctx.exit(2)
        except UserError as err:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            click.echo(f"error: {err.render(lambda field: cli_flag(command, field))}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            resumable = command is not None and any(p.name == "resume" for p in command.params)
            outer = (ctx.obj or {}).get("within")  # a command run by another one (the demo), which resumes by itself
            click.echo("interrupted: " + (f"finished work is saved; run `{outer}` again to continue" if outer else
                                          "finished work is saved; run the same command with --resume to continue"
                                          if resumable else "run the same command again (no half-written file is left)"),
                       err=True)
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
