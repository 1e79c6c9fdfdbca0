"""Digit scenes: the offline detection data (real glyphs, synthetic layout), deterministic and with tight boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iee_deploy.data.scenes import INK, NUM_CLASSES, SceneLayout, compose_scenes, digit_scenes
from iee_deploy.errors import UserError


def test_boxes_are_the_tight_ink_boxes_and_digits_keep_apart():
    glyphs = np.zeros((2, 8, 8), np.uint8)
    glyphs[0, 2:6, 3:5] = 255  # a bar
    glyphs[1, 1:7, 1:7] = 255  # a block
    layout = SceneLayout(canvas=48, digits=(3, 3), size=(8, 16), max_iou=0.0)
    canvases, boxes, labels = compose_scenes(glyphs, np.array([4, 7]), 20, layout, seed=3)
    assert canvases.shape == (20, 48, 48) and canvases.dtype == np.uint8
    for canvas, b, c in zip(canvases, boxes, labels):
        assert len(b) == len(c) >= 1 and set(c.tolist()) <= {4, 7}
        ink = canvas > INK
        covered = np.zeros_like(ink)
        for x1, y1, x2, y2 in b.astype(int):
            assert 0 <= x1 < x2 <= 48 and 0 <= y1 < y2 <= 48
            region = ink[y1:y2, x1:x2]
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()  # tight
            covered[y1:y2, x1:x2] = True
        assert not (ink & ~covered).any()  # no ink outside the boxes
        for i in range(len(b)):  # max_iou 0: boxes may touch, never overlap
            for j in range(i):
                lo, hi = np.maximum(b[i, :2], b[j, :2]), np.minimum(b[i, 2:], b[j, 2:])
                assert np.prod(np.clip(hi - lo, 0, None)) == 0


def test_the_same_seed_gives_the_same_scenes_and_another_seed_others():
    a, b = digit_scenes("train", 6, seed=1), digit_scenes("train", 6, seed=1)
    c = digit_scenes("train", 6, seed=2)
    assert torch.equal(a.images, b.images) and all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not torch.equal(a.images, c.images)


def test_scenes_as_torchvision_detectors_take_them():
    scenes = digit_scenes("val", 4, SceneLayout(canvas=64), seed=0)
    image, target = scenes[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert target["labels"].dtype == torch.int64 and int(target["labels"].min()) >= 1 and int(target["labels"].max()) < NUM_CLASSES


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SceneLayout(canvas=0), r"^`canvas` 0 is not a side in whole px that holds a digit; pass an integer "
     r"`canvas` of at least 4$"),
    (lambda: SceneLayout(canvas=64.0), r"^`canvas` 64.0 is not a side"),
    (lambda: SceneLayout(canvas=16, size=(8, 32)), r"^`size` \(8, 32\) px is not a range .* <= `canvas` 16; pass "
     r"e.g. `size`=\(4, 16\)$"),
    (lambda: SceneLayout(size=(2, 8)), r"^`size` \(2, 8\) px"),
    (lambda: SceneLayout(digits=(3, 1)), r"^`digits` \(3, 1\) is not a range"),
    (lambda: SceneLayout(digits=(0, 2)), r"^`digits` \(0, 2\) is not a range"),
    (lambda: SceneLayout(max_iou=1.0), r"^`max_iou` 1 is not a fraction in \[0, 1\)"),
    (lambda: digit_scenes("test", 1), r"^`split` 'test' is not a split of the digits; pass `split` 'train' or 'val'$"),
    (lambda: digit_scenes("train", -1), r"^`count` -1 is not a positive integer number of scenes"),
    (lambda: digit_scenes("train", 2.5), r"^`count` 2.5 is not a positive integer"),
    (lambda: digit_scenes("train", 2, seed=-1), r"^`seed` -1 is not a non-negative integer; pass e.g. `seed`=0$"),
    (lambda: digit_scenes("train", 1, layout=64), r"^`layout` is a int, not a SceneLayout"),
], ids=["canvas-0", "canvas-float", "size-over-canvas", "size-tiny", "digits-reversed", "digits-0", "max-iou-1",
        "split", "count-negative", "count-float", "seed-negative", "layout-int"])
def test_impossible_layouts_counts_seeds_and_splits_are_one_line_naming_the_argument(make, message):
    """Unchecked, these were numpy tracebacks (a negative or float count, a negative seed) or a bare ValueError."""
    with pytest.raises(UserError, match=message):
        make()


def test_scenes_that_cannot_fit_in_memory_are_refused_before_any_is_drawn(monkeypatch):
    """1,200 grey canvases of 2048 px are 4.7 GiB: with 1 GiB free, refused at once with the largest side that fits."""
    import runtime.machine
    from iee_deploy.data.detection import load_scenes

    monkeypatch.setattr(runtime.machine, "free_memory_bytes", lambda: 2**30)
    with pytest.raises(UserError) as info:
        load_scenes(None, 2048)
    assert info.value.problem == ("the digit scenes at `resolution` 2048 px needs 4.7 GiB in memory for its 1,200 "
                                  "images, more than the 1.0 GiB free")
    assert info.value.fix == "use a `resolution` of at most 846 px"
