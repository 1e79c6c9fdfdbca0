"""Digit scenes: the offline detection data (real glyphs, synthetic layout), deterministic and with tight boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iee_deploy.data.scenes import INK, NUM_CLASSES, SceneLayout, compose_scenes, digit_scenes


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


def test_impossible_layouts_and_splits_are_refused():
    with pytest.raises(ValueError, match="impossible scene layout"):
        SceneLayout(canvas=16, size=(8, 32))
    with pytest.raises(ValueError, match="split"):
        digit_scenes("test", 1)
