"""A user's own model, outside the zoo: `--model tests.user_model:build` (see test_models.py)."""

from __future__ import annotations

from torch import nn


class TinyNet(nn.Module):
    """Two conv blocks with a residual add and a linear classifier: small enough to train in a test."""

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.stem(x)
        return self.head(nn.functional.relu(x + self.block(x)))


def build(num_classes: int, resolution: int = 32) -> nn.Module:
    """TinyNet: a residual toy CNN for user-model tests."""
    return TinyNet(num_classes)


build.native_resolution = 16  # type: ignore[attr-defined]


def fixed_head(num_classes: int) -> nn.Module:
    """A factory that ignores num_classes (a 7-way head whatever is asked): training must refuse it."""
    return TinyNet(7)


def raises(num_classes: int) -> nn.Module:
    """A factory whose own code fails: the user sees its message in one line."""
    raise ValueError("weights file 'tiny.pt' not found")


def needs_width(num_classes: int, width: int) -> nn.Module:
    """A factory that needs an argument the toolkit cannot give."""
    return TinyNet(num_classes, width)


def no_parameters() -> nn.Module:
    """A factory without num_classes."""
    return TinyNet(10)


def with_transforms(num_classes: int) -> tuple[nn.Module, object]:
    """A factory that returns (model, transforms), as some hubs do."""
    return TinyNet(num_classes), None


def lazy(num_classes: int) -> nn.Module:
    """A factory with a Lazy layer, sized only at its first forward."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def half(num_classes: int) -> nn.Module:
    """A factory that returns its model in float16."""
    return TinyNet(num_classes).half()
