"""`iee-deploy models`: list the model zoo, filtered by shell-style patterns (as timm.list_models).

'timm:PATTERN' lists timm's models and 'hf:PATTERN' the transformers configs with an image-classification
head (both optional extras); their sizes are checked when a model is built, so the listing builds none.
"""

from __future__ import annotations

import click

from iee_deploy.errors import UserError
from iee_deploy.io import write_json
from iee_deploy.models import list_models, model_spec
from iee_deploy.models.external import external_spec, is_external
from iee_deploy.models.registry import FAMILIES
from iee_deploy.outputs import check_report_output


@click.command("models")
@click.argument("patterns", nargs=-1)
@click.option("--family", type=click.Choice(FAMILIES), default=None,
              help="Only torchvision's classifiers, the paper's own models, timm's or transformers' (all of them).")
@click.option("--names-only", is_flag=True, help="One name per line (for scripts).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the listed models (name, family, resolutions, description) as JSON here.")
def models(patterns: tuple[str, ...], family: str | None, names_only: bool, json_path: str | None) -> None:
    """List the models --model accepts; PATTERNS filter names with globs, e.g. 'resnet*' 'vit_*'.

    \b
    Any of these names works with --model, and so does your own model as package.module:factory
    (a function or class called with num_classes=..., and resolution=... when it takes one).
    With timm or transformers installed: 'timm:efficientnet*' lists timm's models, 'hf:*' the
    transformers configs of image classifiers (--model timm:NAME, hf:CONFIG, or NAME(key=value,...)).
    """
    if json_path:
        check_report_output(json_path, "json_path")
    names = list_models(list(patterns), family)
    if not names:
        other = next((p.partition(":")[0] for p in patterns if p.partition(":")[0] in ("timm", "hf")
                      and p.partition(":")[0] != family), None) if family else None
        unprefixed = family in ("timm", "hf") and patterns and not any(p.startswith(f"{family}:") for p in patterns)
        raise UserError(f"no model matches {' '.join(p or repr(p) for p in patterns) or '*'}" + (f" in family {family}" if family else ""),
                        (f"'{other}:' names are in family {other}: use `family` {other}, or leave it out" if other else
                         f"{family}'s names start with '{family}:', try '{family}:{patterns[0]}'" if unprefixed else
                         "try a wider pattern such as 'resnet*'") + "; `iee-deploy models` lists them all",
                        fields=("family",) if other else ())
    specs = [external_spec(n, inspect=False) if is_external(n) else model_spec(n) for n in names]
    if names_only:
        click.echo("\n".join(names))
    else:
        rows = [("model", "family", "native px", "accepts", "description")]
        for s in specs:
            accepts = ("checked on build" if s.probe is not None else f"x{s.resolution_step} from {s.min_resolution}"
                       if s.resolution_step > 1 else f">= {s.min_resolution}")
            rows.append((s.name, s.family, str(s.native_resolution), accepts, s.description))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        click.echo(f"\n{len(names)} models; your own: --model package.module:factory; timm's: 'timm:PATTERN', "
                   "transformers': 'hf:PATTERN'")
    if json_path:
        write_json(json_path, [{"name": s.name, "family": s.family, "native_resolution": s.native_resolution,
                                "min_resolution": s.min_resolution, "resolution_step": s.resolution_step,
                                "description": s.description} for s in specs])


COMMANDS = [models]
