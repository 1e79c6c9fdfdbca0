"""Small torchvision detectors for the tests (random weights, a small ResNet-like body, FPN 32 channels wide (FCOS's GroupNorm takes 32 groups), images
of 64 px), and a model
that cannot run on small inputs.

Factories in the `module:factory` form the CLI takes (`--model detectors:retinanet_tiny`)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

WIDTH = 32
SIZE = {"min_size": 64, "max_size": 64}
BODY = {1: 8, 2: 16, 3: 24, 4: 32}
"""The small body's stage widths (a ResNet's stage names: layer1 .. layer4, each halving the size)."""


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _body() -> nn.Module:
    body = nn.Sequential()
    body.add_module("stem", nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()))
    for k, cin in zip(BODY, (8, *BODY.values())):
        body.add_module(f"layer{k}", _stage(cin, BODY[k]))
    return body


def _fpn(extra: nn.Module, levels: tuple[int, ...] = (2, 3, 4)) -> BackboneWithFPN:
    return BackboneWithFPN(_body(), {f"layer{k}": str(i) for i, k in enumerate(levels)}, [BODY[k] for k in levels],
                           WIDTH, extra_blocks=extra)


def retinanet_tiny(num_classes: int = 5) -> nn.Module:
    return detection.RetinaNet(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)


def fcos_tiny(num_classes: int = 5) -> nn.Module:
    return detection.FCOS(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)


def fasterrcnn_tiny(num_classes: int = 5) -> nn.Module:
    return detection.FasterRCNN(_fpn(LastLevelMaxPool(), (1, 2, 3, 4)), num_classes, **SIZE)


def ssdlite(num_classes: int = 5) -> nn.Module:
    return detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def unpadded(num_classes: int = 5) -> nn.Module:
    """A classifier of three unpadded 3x3 convolutions: it cannot run on inputs under 7 px."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


def retinanet_tiny_scoring(num_classes: int = 5) -> nn.Module:
    """`retinanet_tiny` whose class scores spread over (0, 1) from the start (its classifier's last weights drawn
    wide, seeded, instead of RetinaNet's 0.01 prior everywhere): a barely trained detector that detects, with
    scores apart, for deployment's box checks to compare."""
    model = detection.RetinaNet(_fpn(LastLevelP6P7(WIDTH, WIDTH)), num_classes, **SIZE)
    logits = model.head.classification_head.cls_logits
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits.weight.copy_(0.1 * torch.randn(logits.weight.shape, generator=generator))
        logits.bias.zero_()
    return model


def _cbs(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Conv, BN, SiLU: YOLO's basic block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyYolo(nn.Module):
    """A YOLO-style detector in miniature, with its own stages: an anchor-free head at strides 8 and 16 (a box
    branch of left, top, right, bottom distances from each cell's centre, in strides, and a class branch), a
    top-down neck that concatenates, `loss` and `postprocess`. Class 0 is the background, as in torchvision."""

    strides = (8, 16)

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(_cbs(3, 8, 2), _cbs(8, 16, 2), _cbs(16, 24, 2))  # stride 8
        self.down = _cbs(24, 32, 2)  # stride 16
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.fuse = _cbs(24 + 32, 24)
        self.box = nn.ModuleList([nn.Sequential(_cbs(c, 16), nn.Conv2d(16, 4, 1)) for c in (24, 32)])
        self.cls = nn.ModuleList([nn.Sequential(_cbs(c, 16), nn.Conv2d(16, num_classes, 1)) for c in (24, 32)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p3 = self.stem(x)
        p4 = self.down(p3)
        p3 = self.fuse(torch.cat([p3, self.up(p4)], 1))
        return tuple(out for level, feature in enumerate((p3, p4))
                     for out in (self.box[level](feature), self.cls[level](feature)))

    def _levels(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image, over every cell of every level: box distances (N, A, 4) in pixels, class logits (N, A, C) and
        the cells' centres (A, 2) in pixels."""
        boxes, logits, centres = [], [], []
        for level, stride in enumerate(self.strides):
            box, cls = outputs[2 * level], outputs[2 * level + 1]
            height, width = box.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
            centres.append((torch.stack([xs, ys], -1).reshape(-1, 2).to(box) + 0.5) * stride)
            boxes.append(nn.functional.softplus(box).flatten(2).transpose(1, 2) * stride)
            logits.append(cls.flatten(2).transpose(1, 2))
        return torch.cat(boxes, 1), torch.cat(logits, 1), torch.cat(centres)

    def loss(self, outputs: tuple[torch.Tensor, ...], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Every cell whose centre lies in a target box learns that box (the smallest, where boxes overlap): its class
        by binary cross-entropy over all cells, its distances by L1 in strides."""
        distances, logits, centres = self._levels(outputs)
        wanted = torch.zeros_like(logits)
        box_loss = logits.new_zeros(())
        positives = 0
        for image, target in enumerate(targets):
            boxes = target["boxes"]
            if len(boxes) == 0:
                continue
            inside = ((centres[:, None] > boxes[None, :, :2]) & (centres[:, None] < boxes[None, :, 2:])).all(-1)
            area = ((boxes[:, 2:] - boxes[:, :2]).prod(-1))[None].expand_as(inside)
            best = torch.where(inside, area, torch.inf).argmin(1)
            cells = inside.any(1).nonzero().flatten()
            chosen = boxes[best[cells]]
            wanted[image, cells, target["labels"][best[cells]]] = 1.0
            want = torch.cat([centres[cells] - chosen[:, :2], chosen[:, 2:] - centres[cells]], 1)
            box_loss = box_loss + (distances[image, cells] - want).abs().sum() / 32.0
            positives += len(cells)
        scale = max(positives, 1)
        return {"classification": nn.functional.binary_cross_entropy_with_logits(logits, wanted, reduction="sum") / scale,
                "box": box_loss / scale}

    @torch.no_grad()
    def postprocess(self, outputs: tuple[torch.Tensor, ...], image_sizes: list[tuple[int, int]]
                    ) -> list[dict[str, torch.Tensor]]:
        """Scores above 0.05 (the best 300 per image), decoded, clipped, class-wise NMS at IoU 0.5, the best 100."""
        from torchvision.ops import batched_nms, clip_boxes_to_image

        distances, logits, centres = self._levels(outputs)
        detections = []
        for image, size in enumerate(image_sizes):
            scores = logits[image].sigmoid().flatten()
            keep = (scores > 0.05).nonzero().flatten()
            keep = keep[scores[keep].topk(min(300, len(keep))).indices]
            cell, label = keep // self.num_classes, keep % self.num_classes
            d = distances[image, cell]
            boxes = clip_boxes_to_image(torch.cat([centres[cell] - d[:, :2], centres[cell] + d[:, 2:]], 1), size)
            kept = batched_nms(boxes, scores[keep], label, 0.5)[:100]
            detections.append({"boxes": boxes[kept], "scores": scores[keep][kept], "labels": label[kept]})
        return detections


def yolo_tiny(num_classes: int = 5) -> nn.Module:
    return TinyYolo(num_classes)


def ssdlite_scoring(num_classes: int = 5, resolution: int = 64) -> nn.Module:
    """The zoo's SSDlite whose class logits spread from the start (its classifier's last weights drawn wide, seeded),
    so that a barely trained SSDlite detects with scores apart, as `retinanet_tiny_scoring`."""
    from iee_deploy.models.detectors import ssdlite as zoo_ssdlite

    model = zoo_ssdlite(num_classes, resolution)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for branch in model.head.classification_head.module_list:
            branch[1].weight.copy_(0.1 * torch.randn(branch[1].weight.shape, generator=generator))
    return model
