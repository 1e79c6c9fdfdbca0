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

import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from iee_deploy.errors import ConfigError, UserError, check_fraction

INK = 64
"""A pixel (0-255) above this is ink: what a digit's box holds."""
MIN_SIDE = 4
"""The smallest digit side (px): an 8x8 glyph scaled below it loses its shape."""
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
        if not _is_int(self.canvas) or self.canvas < MIN_SIDE:
            raise ConfigError("canvas", f"`canvas` {self.canvas!r} is not a side in whole px that holds a "
                              f"digit", f"pass an integer `canvas` of at least {MIN_SIDE}")
        if not _is_range(self.digits, 1):
            raise ConfigError("digits", f"`digits` {self.digits!r} is not a range (low, high) of whole digits per "
                              "scene with 1 <= low <= high", "pass e.g. `digits`=(1, 4)")
        if not _is_range(self.size, MIN_SIDE) or self.size[1] > self.canvas:
            raise ConfigError("size", f"`size` {self.size!r} px is not a range (low, high) of digit sides with "
                              f"{MIN_SIDE} <= low <= high <= `canvas` {self.canvas}",
                              f"pass e.g. `size`=({MIN_SIDE}, {self.canvas})")
        check_fraction("max_iou", self.max_iou, high_open=True)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_range(pair: object, low: int) -> bool:
    """Whether `pair` is (lo, hi), two integers with low <= lo <= hi."""
    return (isinstance(pair, tuple) and len(pair) == 2 and all(_is_int(v) for v in pair)
            and low <= pair[0] <= pair[1])


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
    if not _is_int(count) or count < 1:
        raise UserError(f"`count` {count!r} is not a positive integer number of scenes", "pass an integer `count` of at least 1",
                        fields=("count",))
    if not _is_int(seed) or seed < 0:
        raise UserError(f"`seed` {seed!r} is not a non-negative integer", "pass e.g. `seed`=0", fields=("seed",))
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
        raise UserError(f"`split` {split!r} is not a split of the digits", "pass `split` 'train' or 'val'",
                        fields=("split",))
    if layout is not None and not isinstance(layout, SceneLayout):
        raise UserError(f"`layout` is a {type(layout).__name__}, not a SceneLayout",
                        "pass SceneLayout(canvas=..., digits=..., size=..., max_iou=...) or leave `layout` out",
                        fields=("layout",))
    data = getattr(load_digits(None, 8), split)
    glyphs = data.images[:, 0].numpy()  # 8 px: the glyphs as bundled (scaled to 0-255)
    return DigitScenes(*compose_scenes(glyphs, data.labels.numpy(), count, layout or SceneLayout(), seed))
