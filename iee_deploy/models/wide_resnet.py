"""Wide Residual Networks (Zagoruyko & Komodakis, 2016) for CIFAR: WRN-d-k, pre-activation blocks.

WRN-22-2 is the CIFAR-10 model of the IEE paper's unstructured experiments.
"""

from __future__ import annotations

import torch
from torch import nn

from iee_deploy.models.cifar_resnet import init_convs, make_stages


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-k: stem conv 16, three stages of width 16k, 32k, 64k, final BN-ReLU-pool-linear."""

    def __init__(self, depth: int = 22, widen: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n+4 (16, 22, 28, 40)")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.layer1, self.layer2, self.layer3 = make_stages(PreActBlock, 16, widths, n)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(x))), 1))
