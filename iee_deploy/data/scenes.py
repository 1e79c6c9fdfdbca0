"""Detection scenes composed from the bundled handwritten digits: the offline default for detection.

Nothing can be downloaded at run time, so detection has a default that needs nothing: real 8x8
handwritten digits (scikit-learn's 1,797, split 80/20 as the `digits` classification dataset
splits them, so training and validation scenes never share a glyph), each scaled to a random size
and placed at a random position on a black canvas. **The layout is synthetic**: digits float on
an empty background at sizes and places drawn uniformly, so a detector's mAP here says that the
pipeline works and how methods compare side by side, not how it would do on photographs.

Each box is the tight box of its digit's ink (pixels above `INK` after scaling), in pixels (x1, y1,
x2, y2, the far edges exclusive); two digits of one scene overlap by at most `max_iou`. The same
seed gives the same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

INK = 64
"""A pixel (0-255) above this is ink: what a digit's box holds."""
PLACEMENT_TRIES = 50
"""Random places tried per digit before the scene goes without it (a crowded canvas)."""


@dataclass(frozen=True)
class SceneLayout:
    """How scenes are drawn: canvas side (px), digits per scene and digit side (px), both inclusive ranges, and
    the largest IoU two digits of one scene may have."""

    canvas: int = 64
    digits: tuple[int, int] = (1, 4)
    size: tuple[int, int] = (12, 32)
    max_iou: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.size
        if not (1 <= self.digits[0] <= self.digits[1] and 4 <= lo <= hi <= self.canvas and 0 <= self.max_iou < 1):
            raise ValueError(f"impossible scene layout {self}: need 1 <= digits, 4 <= size <= canvas, 0 <= max_iou < 1")


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return np.asarray(inter / (area(box) + area(boxes) - inter))


def _scaled(glyph: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 glyph (0-255) resized to side x side, bilinear (as the classification dataset resizes)."""
    x = torch.from_numpy(glyph.astype(np.float32))[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[0, 0].round().clamp(0, 255).numpy()


def compose_scenes(glyphs: np.ndarray, labels: np.ndarray, count: int, layout: SceneLayout,
                   seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """`count` scenes from `glyphs` (N, h, w) uint8 with their classes `labels` (N,).

    Returns the canvases (count, side, side) uint8, and per scene its boxes (k, 4) float32 and classes (k,)
    int64 (the glyphs' own labels).
    """
    rng = np.random.default_rng(seed)
    side = layout.canvas
    canvases = np.zeros((count, side, side), np.uint8)
    all_boxes, all_labels = [], []
    for n in range(count):
        boxes: list[np.ndarray] = []
        classes: list[int] = []
        for _ in range(int(rng.integers(layout.digits[0], layout.digits[1] + 1))):
            pick = int(rng.integers(len(glyphs)))
            digit = _scaled(glyphs[pick], int(rng.integers(layout.size[0], layout.size[1] + 1)))
            ys, xs = np.nonzero(digit > INK)
            if not len(ys):
                continue
            for _ in range(PLACEMENT_TRIES):
                top, left = (int(v) for v in rng.integers(0, side - digit.shape[0] + 1, size=2))
                box = np.array([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1], np.float32)
                if not boxes or _iou(box, np.stack(boxes)).max() <= layout.max_iou:
                    window = canvases[n, top:top + digit.shape[0], left:left + digit.shape[1]]
                    np.maximum(window, digit.astype(np.uint8), out=window)
                    boxes.append(box)
                    classes.append(int(labels[pick]))
                    break
        all_boxes.append(np.stack(boxes) if boxes else np.zeros((0, 4), np.float32))
        all_labels.append(np.array(classes, np.int64))
    return canvases, all_boxes, all_labels


class DigitScenes(Dataset):
    """Scenes as torchvision's detectors take them: a float image (3, H, W) in [0, 1] and a target dict with
    `boxes` (k, 4) and `labels` (k,), the digit's class plus one (0 is the background class)."""

    def __init__(self, canvases: np.ndarray, boxes: list[np.ndarray], labels: list[np.ndarray]) -> None:
        self.images = torch.from_numpy(canvases)
        self.boxes = [torch.from_numpy(b) for b in boxes]
        self.labels = [torch.from_numpy(c + 1) for c in labels]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = self.images[index].float().div(255).expand(3, -1, -1).contiguous()
        return image, {"boxes": self.boxes[index].clone(), "labels": self.labels[index].clone()}


NUM_CLASSES = 11
"""Ten digits and the background."""


def digit_scenes(split: str, count: int, layout: SceneLayout | None = None, seed: int = 0) -> DigitScenes:
    """`count` scenes of the `digits` dataset's `split` ("train" or "val") glyphs, drawn with `seed`."""
    from iee_deploy.data.sources import load_digits

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    data = getattr(load_digits(None, 8), split)
    glyphs = data.images[:, 0].numpy()  # 8 px: the glyphs as bundled (scaled to 0-255)
    return DigitScenes(*compose_scenes(glyphs, data.labels.numpy(), count, layout or SceneLayout(), seed))
