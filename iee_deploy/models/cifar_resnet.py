"""CIFAR ResNets (He et al., 2016, section 4.2): ResNet-20/32/44/56 with 16-32-64 channels.

Downsampling shortcuts are 1x1 conv + BN (option B), so every residual sum is made of real
layers whose output channels the dependency graph can couple.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def make_stages(block: Callable[[int, int, int], nn.Module], cin: int, widths: Sequence[int], n: int) -> list[nn.Sequential]:
    """Stages of `n` blocks each; the first block of every stage but the first halves the resolution."""
    stages = []
    for i, cout in enumerate(widths):
        stages.append(nn.Sequential(*[block(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]))
        cin = cout
    return stages


def init_convs(model: nn.Module) -> None:
    """He (fan-out) initialisation of every conv, as in the ResNet papers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: a 3x3 stem and three stages of n basic blocks."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3 = make_stages(BasicBlock, width, (width, 2 * width, 4 * width), n)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
