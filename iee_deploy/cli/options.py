"""Option helpers shared by several commands (model, dataset and target choices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from iee_deploy.errors import UserError
from iee_deploy.seeding import MAX_SEED

FRACTION = click.FloatRange(0, 1)
"""A fraction in [0, 1] (click's range check; NaN is refused by the library's configs)."""


def _below_max_resolution(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Refuse an input side no command can allocate (one 100,000 px image is 120 GB) before any work."""
    from iee_deploy.train.config import MAX_RESOLUTION

    if value is not None and value > MAX_RESOLUTION:
        raise UserError(f"`resolution` {value} px is above {MAX_RESOLUTION} px", f"pass at most {MAX_RESOLUTION}",
                        fields=("resolution",))
    return value


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model / --num-classes / --resolution / --checkpoint."""
    for decorator in reversed(
        [
            click.option("--model", "model_name", default="resnet20", show_default=True,
                         help="Model name from the zoo (`iee-deploy models` lists them), e.g. resnet18, resnet50, "
                              "mobilenet_v1, wrn22_2."),
            click.option("--num-classes", type=click.IntRange(min=1), default=None,
                         help="Classifier outputs (a detector's classes, the background included). Default: the "
                              "dataset's class count; without a dataset the model's: 10 for the CIFAR models "
                              "(resnet20, resnet56, wrn22_2), 11 for a built-in detector (the digit scenes'), else "
                              "1000."),
            click.option("--resolution", type=click.IntRange(min=1), default=None, callback=_below_max_resolution,
                         help="Input height = width in pixels. Default: the dataset's (or the model's native) size."),
            click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
                         help="Load weights from this .pt/.pth file (a state_dict or a saved model) before starting."),
        ]
    ):
        fn = decorator(fn)
    return fn


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--dataset / --data-dir / --subset / --val-subset / --batch-size / --workers / --seed."""
    for decorator in reversed(
        [
            click.option("--dataset", default="digits", show_default=True,
                         help="digits (embedded, offline), fashion-mnist, cifar10, imagefolder."),
            click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                         help="Dataset root (torchvision layout, or train/ and val/ folders for imagefolder)."),
            click.option("--subset", type=click.IntRange(min=1), default=None,
                         help="Use a fixed random sample of N training images (and N/5 validation images) for quick runs."),
            click.option("--val-subset", type=click.IntRange(min=1), default=None,
                         help="Use a fixed random sample of N validation images (instead of N/5 of --subset)."),
            click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per training step."),
            click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader worker processes (images held in memory need none: they are augmented in batches)."),
            click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Random seed (data order, init, masks)."),
        ]
    ):
        fn = decorator(fn)
    return fn
