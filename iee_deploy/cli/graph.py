"""`iee-deploy graph`: print the coupled channel groups of a model's dependency graph."""

from __future__ import annotations

import time
from collections.abc import Sequence

import click
import torch

from iee_deploy.cli.options import model_options
from iee_deploy.graph import ChannelRef, DependencyGraph, build_dependency_graph
from iee_deploy.io import write_json
from iee_deploy.models import build_model, model_spec
from iee_deploy.models.detection import network_part
from iee_deploy.outputs import check_report_output
from iee_deploy.tasks.classification import check_output_width


def _names(refs: Sequence[ChannelRef], limit: int | None) -> str:
    """'a, b (x49)' with at most `limit` names and a '+N more' tail."""
    names = [r.name + (f" (x{r.channels_per_unit})" if r.channels_per_unit > 1 else "") for r in refs]
    if not names:
        return "-"
    if limit is not None and len(names) > limit:
        return ", ".join(names[:limit]) + f", +{len(names) - limit} more"
    return ", ".join(names)


def format_groups(g: DependencyGraph, limit: int | None = 3) -> str:
    """The group table: id, units, prunable, owner layers, BN layers, consumer layers."""
    rows = [("group", "units", "prunable", "owners (output channels)", "BN", "consumers (input channels)")]
    for group in g.groups:
        rows.append((group.id, str(group.size), "yes" if group.prunable else "no", _names(group.owners, limit),
                     str(len(group.bn_layers)), _names(group.consumers, limit)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in (1, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@click.command("graph")
@model_options
@click.option("--tracer", type=click.Choice(["auto", "fx", "eager"]), default="auto", show_default=True,
              help="How to trace: torch.fx, an eager forward pass, or fx with eager as fallback.")
@click.option("--all-layers", is_flag=True, help="List every coupled layer (default: the first 3 and a count).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write groups (with each layer's channel positions) and per-layer facts as JSON here.")
def graph(model_name: str, num_classes: int | None, resolution: int | None, checkpoint: str | None, tracer: str,
          all_layers: bool, json_path: str | None) -> None:
    """Print channel groups (channels that must be kept or removed together), their sizes and layers.

    A unit of a group is one output channel of each owner, one BN channel of each listed BatchNorm
    and one input channel (xN: N inputs, e.g. after a flatten) of each consumer.
    """
    spec = model_spec(model_name)
    if json_path:
        check_report_output(json_path, "json_path")
    size = resolution or spec.native_resolution
    classes = num_classes or spec.default_classes
    model = build_model(model_name, classes, size, checkpoint).eval()
    check_output_width(model, classes, size)  # a factory that ignores num_classes would show another head
    part = network_part(model)
    if part is not None:
        click.echo(part.describe(model_name))
        model = part.module
    start = time.perf_counter()
    g = build_dependency_graph(model, torch.zeros(1, 3, size, size), tracer=tracer)
    build_ms = (time.perf_counter() - start) * 1e3
    click.echo(f"{model_name} at {size}x{size} px, {classes} classes: {len(g.groups)} channel groups "
               f"({len(g.prunable_groups)} prunable), {len(g.layers)} conv/linear layers; "
               f"traced with {g.tracer} in {build_ms:.0f} ms\n")
    click.echo(format_groups(g, None if all_layers else 3))
    if json_path:
        write_json(json_path, {"model": model_name, "resolution": size, "num_classes": classes,
                               "build_ms": round(build_ms, 1), **g.to_dict()})
        click.echo(f"\nwrote {json_path}")


COMMANDS = [graph]
