"""MobileNet-V1 (Howard et al., 2017), ImageNet layout, as used by HALP and the IEE paper."""

from __future__ import annotations

import torch
from torch import nn

from iee_deploy.models.cifar_resnet import init_convs

# (output channels, stride) of the 13 depthwise-separable blocks.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv then 1x1 pointwise conv, each with BN and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pointwise = conv_bn_relu(cin, cout, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """MobileNet-V1 with a width multiplier; global average pooling makes it resolution-agnostic."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        channels = int(32 * width)
        layers: list[nn.Module] = [conv_bn_relu(3, channels, 3, 2)]
        for cout, stride in _BLOCKS:
            layers.append(DepthwiseSeparable(channels, int(cout * width), stride))
            channels = int(cout * width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
