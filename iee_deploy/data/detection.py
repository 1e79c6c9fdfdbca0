"""Detection datasets by name: `digits` (scenes of the bundled digits, offline), `voc` and `coco` at `data_dir`.

Every dataset yields (3 x H x W float image in [0, 1], {"boxes": (k, 4) x1 y1 x2 y2 px, "labels": (k,)})
with labels from 1 (0 is the background), as torchvision's detectors take them; the detector's own
pre-processing resizes and normalises. No augmentation.

- `digits`: `iee_deploy.data.scenes` (a synthetic layout of real handwritten digits; see there),
  at `resolution` px (default 128), 1,000 training and 200 validation scenes unless `subset` says.
- `voc`: Pascal VOC 2007 as released, `DIR/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}`,
  listed by torchvision's `VOCDetection`; `train.txt` trains, `val.txt` validates; 20 classes.
  Boxes: VOC's 1-based corners as x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax; objects marked
  difficult are kept.
- `coco`: `DIR/annotations/instances_train*.json` and `instances_val*.json` with their images in
  `DIR/<train2017 or val2017>/` (the JSON's name after `instances_`) or `DIR/images/<that>/`;
  categories numbered 1..K in the order of their ids; crowd regions are left out.

Every annotation is read and checked when the dataset is loaded, before any training: a file that
does not parse, lacks a key, or holds a box that is empty or outside its image is a one-line
UserError naming the file and the problem.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from iee_deploy.data import DataBundle, sample_indices
from iee_deploy.data.sources import read_rgb
from iee_deploy.errors import UserError, is_whole

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SCENES = (1000, 200)
"""Training and validation scenes of `digits` when no subset is asked for."""
DEFAULT_RESOLUTION = 128
"""Scene side, and the side VOC and COCO images are resized to, when no resolution is given (px)."""
MIN_SCENE = 16
"""The smallest scene side (px): a digit of 3/16 of it must still be 3 px or more."""
EDGE = 1.0
"""Pixels a box may stick out of its image (annotation tools round corners outward)."""


@dataclass(frozen=True)
class Annotated:
    """One image file and its boxes (k, 4) and labels (k,)."""

    path: Path
    boxes: torch.Tensor
    labels: torch.Tensor


class ImageBoxes(Dataset):
    """Images read from disk as they are asked for, with the boxes checked when the dataset was built."""

    def __init__(self, items: list[Annotated]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision.transforms.functional import pil_to_tensor

        item = self.items[index]
        pixels = pil_to_tensor(read_rgb(str(item.path))).float().div(255)  # as imagefolder: 16-bit keeps its top 8 bits
        return pixels, {"boxes": item.boxes.clone(), "labels": item.labels.clone()}


def check_box(box: list[float], width: float, height: float) -> str | None:
    """Why box (x1, y1, x2, y2) cannot be one of a width x height image's, or None."""
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        return f"box {[round(v, 2) for v in box]} is empty"
    if x1 < -EDGE or y1 < -EDGE or x2 > width + EDGE or y2 > height + EDGE:
        return f"box {[round(v, 2) for v in box]} lies outside the {width:g} x {height:g} image"
    return None


def _as_items(rows: list[tuple[Path, list[list[float]], list[int]]]) -> list[Annotated]:
    return [Annotated(path, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64))
            for path, boxes, labels in rows]


# --- Pascal VOC --------------------------------------------------------------------------------
def _voc_objects(path: Path) -> tuple[list[list[float]], list[int]]:
    """The boxes and labels of one VOC annotation file, checked (see the module docstring)."""
    from torchvision.datasets import VOCDetection

    fix = "fix or remove the file (and its line in ImageSets/Main)"
    try:
        tree = VOCDetection.parse_voc_xml(ET.parse(path).getroot())
    except ET.ParseError as exc:
        raise UserError(f"VOC annotation '{path}' is not valid XML ({exc})", fix) from None
    try:
        note = tree["annotation"]
        width, height = float(note["size"]["width"]), float(note["size"]["height"])
        objects = note.get("object", [])
        objects = objects if isinstance(objects, list) else [objects]
        boxes, labels = [], []
        for obj in objects:
            name, corners = obj["name"], obj["bndbox"]
            if name not in VOC_CLASSES:
                raise UserError(f"VOC annotation '{path}' names the class '{name}', not one of VOC's 20", fix)
            box = [float(corners["xmin"]) - 1, float(corners["ymin"]) - 1, float(corners["xmax"]), float(corners["ymax"])]
            problem = check_box(box, width, height)
            if problem:
                raise UserError(f"VOC annotation '{path}': {problem}", fix)
            boxes.append(box)
            labels.append(VOC_CLASSES.index(name) + 1)
    except KeyError as exc:
        raise UserError(f"VOC annotation '{path}' has no <{exc.args[0]}>", fix) from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"VOC annotation '{path}' holds a size or corner that is not a number ({exc})", fix) from None
    return boxes, labels


def voc_split(root: Path, split: str) -> ImageBoxes:
    """VOC 2007's `split` ("train" or "val") under `root`, every annotation checked."""
    from torchvision.datasets import VOCDetection

    try:
        voc = VOCDetection(str(root), year="2007", image_set=split, download=False)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        # torchvision's RuntimeError text ("... use download=True") names an option the tool does not have
        detail = "" if isinstance(exc, RuntimeError) else f" ({str(exc).splitlines()[0]})"
        raise UserError(f"no Pascal VOC 2007 '{split}' split under '{root}'{detail}",
                        "pass the folder that holds VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main} "
                        "as `data_dir`", fields=("data_dir",)) from None
    rows = []
    for image, annotation in zip(voc.images, voc.annotations):
        if not Path(annotation).is_file() or not Path(image).is_file():
            missing = annotation if not Path(annotation).is_file() else image
            raise UserError(f"VOC '{split}' lists '{missing}', which does not exist",
                            f"restore it or remove its line from ImageSets/Main/{split}.txt")
        rows.append((Path(image), *_voc_objects(Path(annotation))))
    return ImageBoxes(_as_items(rows))


def load_voc(root: Path | None, resolution: int | None) -> DataBundle:
    if root is None:
        raise UserError("`dataset` voc needs `data_dir`", "pass the folder that holds VOCdevkit/VOC2007",
                        fields=("data_dir",))
    return DataBundle("voc", voc_split(root, "train"), voc_split(root, "val"), len(VOC_CLASSES) + 1,
                      resolution or DEFAULT_RESOLUTION)


# --- COCO --------------------------------------------------------------------------------------
def _coco_file(root: Path, split: str) -> Path:
    found = sorted((root / "annotations").glob(f"instances_{split}*.json"))
    if not found:
        raise UserError(f"no COCO annotations '{root / 'annotations'}/instances_{split}*.json'",
                        "pass the folder that holds annotations/instances_train2017.json (and val) as `data_dir`",
                        fields=("data_dir",))
    return found[0]


def _coco_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"COCO annotation file '{path}' is not readable JSON ({exc})", "restore the file") from None
    if not isinstance(data, dict):
        raise UserError(f"COCO annotation file '{path}' holds a {type(data).__name__}, not an object", "restore the file")
    return data


def _coco_id(value: Any, what: str, path: Path) -> int:
    """A COCO id as an int: a whole number (or its digits as text); 1.7 or true would be truncated to another id."""
    if is_whole(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise UserError(f"COCO annotation file '{path}' has {what} id {value!r}, which is not a whole number",
                    "give every id as a whole number")


def _refuse_repeated(ids: list[int], what: str, path: Path) -> None:
    """A UserError naming the first of `ids` listed more than once (a later entry would replace an earlier one)."""
    if len(set(ids)) < len(ids):
        twice = Counter(ids).most_common(1)[0][0]
        raise UserError(f"COCO annotation file '{path}' lists {what} id {twice} more than once",
                        f"give every {what} its own id")


def coco_split(root: Path, split: str, categories: dict[int, str] | None = None) -> tuple[ImageBoxes, dict[int, str]]:
    """COCO's `split` ("train" or "val") under `root`, every annotation checked; with its categories {id: name} in
    the order of their labels (1..K; `categories` given: those of the training split, which this one must use, and
    whose ids it must not name otherwise)."""
    path = _coco_file(root, split)
    data = _coco_json(path)
    try:
        ids = [_coco_id(c["id"], "category", path) for c in data["categories"]]
        _refuse_repeated(ids, "category", path)  # a later entry would silently rename the class
        names = {i: str(c.get("name", c["id"])) for i, c in sorted(zip(ids, data["categories"]), key=lambda p: p[0])}
        renamed = next((i for i in names if categories is not None and i in categories and names[i] != categories[i]), None)
        if categories is not None and renamed is not None:
            raise UserError(f"COCO annotation file '{path}' names category {renamed} '{names[renamed]}', the training "
                            f"split names it '{categories[renamed]}'", "give both splits the same `categories`")
        categories = categories or names
        label = {cat: i + 1 for i, cat in enumerate(categories)}
        image_ids = [_coco_id(im["id"], "image", path) for im in data["images"]]
        _refuse_repeated(image_ids, "image", path)  # a later entry would silently replace an earlier one's file
        images = {i: (im["file_name"], float(im["width"]), float(im["height"])) for i, im in zip(image_ids, data["images"])}
        boxes: dict[int, list[list[float]]] = {i: [] for i in images}
        labels: dict[int, list[int]] = {i: [] for i in images}
        for note in data["annotations"]:
            if note.get("iscrowd", 0):
                continue
            image, category = _coco_id(note["image_id"], "image", path), _coco_id(note["category_id"], "category", path)
            if image not in images:
                raise UserError(f"COCO annotation file '{path}': annotation {note.get('id')} is of image {image}, "
                                "which `images` does not list", "restore the file")
            if category not in label:
                raise UserError(f"COCO annotation file '{path}': annotation {note.get('id')} has category {category}, "
                                "which the training split's `categories` do not list", "restore the file")
            x, y, w, h = (float(v) for v in note["bbox"])
            problem = check_box([x, y, x + w, y + h], *images[image][1:])
            if problem:
                raise UserError(f"COCO annotation file '{path}': annotation {note.get('id')} of image {image}: {problem}",
                                "fix or remove the annotation")
            boxes[image].append([x, y, x + w, y + h])
            labels[image].append(label[category])
    except KeyError as exc:
        raise UserError(f"COCO annotation file '{path}' lacks the key '{exc.args[0]}'", "restore the file") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"COCO annotation file '{path}' holds a value of the wrong kind ({exc})", "restore the file") from None
    folder = path.stem.removeprefix("instances_")
    images_dir = next((d for d in (root / folder, root / "images" / folder) if d.is_dir()), None)
    if images_dir is None:
        raise UserError(f"no image folder '{root / folder}' (or '{root / 'images' / folder}') for '{path}'",
                        "put the split's images there")
    rows = []
    for image, (name, _, _) in sorted(images.items()):
        if not (images_dir / name).is_file():
            raise UserError(f"COCO annotation file '{path}' lists the image '{images_dir / name}', which does not exist",
                            "restore the image or remove it from the file")
        rows.append((images_dir / name, boxes[image], labels[image]))
    return ImageBoxes(_as_items(rows)), categories


def load_coco(root: Path | None, resolution: int | None) -> DataBundle:
    if root is None:
        raise UserError("`dataset` coco needs `data_dir`", "pass the folder that holds annotations/ and the images",
                        fields=("data_dir",))
    train, categories = coco_split(root, "train")
    val, _ = coco_split(root, "val", categories)
    return DataBundle("coco", train, val, len(categories) + 1, resolution or DEFAULT_RESOLUTION,
                      ("background", *categories.values()))


# --- digit scenes ------------------------------------------------------------------------------
def load_scenes(root: Path | None, resolution: int | None, counts: tuple[int, int] = SCENES) -> DataBundle:
    """Digit scenes of `resolution` px (digits 3/16 to 1/2 of the side), training and validation glyphs apart."""
    from iee_deploy.data.scenes import NUM_CLASSES, SceneLayout, digit_scenes
    from iee_deploy.data.sources import check_fits_in_memory
    from runtime.machine import free_memory_bytes

    if root is not None:
        raise UserError("`dataset` digits is composed offline and reads no `data_dir`",
                        "leave `data_dir` out, or pass `dataset` voc or coco", fields=("data_dir",))
    side = resolution or DEFAULT_RESOLUTION
    if side < MIN_SCENE:
        raise UserError(f"`resolution` {side} px is too small for digit scenes", f"pass at least {MIN_SCENE}",
                        fields=("resolution",))
    # the scenes are held as one grey uint8 canvas each (a batch is made float RGB only when it is drawn)
    check_fits_in_memory(sum(counts), side, "the digit scenes", free_memory_bytes(), bytes_per_pixel=1)
    layout = SceneLayout(canvas=side, size=(max(4, side * 3 // 16), side // 2))
    return DataBundle("digits", digit_scenes("train", counts[0], layout, seed=0),
                      digit_scenes("val", counts[1], layout, seed=1), NUM_CLASSES, side)


DETECTION_DATASETS: dict[str, Callable[[Path | None, int | None], DataBundle]] = {
    "digits": load_scenes, "voc": load_voc, "coco": load_coco,
}


def detection_datasets(name: str, data_dir: str | Path | None, resolution: int | None, subset: int | None = None,
                       val_subset: int | None = None) -> DataBundle:
    """Detection dataset `name` (see the module docstring); `subset` and `val_subset` as for classification
    (a fixed sample; for `digits`, that many scenes are composed)."""
    if name not in DETECTION_DATASETS:
        raise UserError(f"unknown detection dataset '{name}'", f"choose one of: {', '.join(DETECTION_DATASETS)}",
                        fields=("dataset",))
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise UserError(f"`data_dir` '{root}' does not exist", f"pass the {name} dataset root as `data_dir`",
                        fields=("data_dir",))
    val_count = val_subset or (max(1, subset // 5) if subset else None)
    if name == "digits":
        return load_scenes(root, resolution, (subset or SCENES[0], val_count or SCENES[1]))
    bundle = DETECTION_DATASETS[name](root, resolution)
    if subset is not None:
        bundle.train = Subset(bundle.train, sample_indices(len(bundle.train), subset))
    if val_count is not None:
        bundle.val = Subset(bundle.val, sample_indices(len(bundle.val), val_count))
    return bundle


def check_scorable(bundle: DataBundle) -> None:
    """Validation images (a VOC or COCO split, or its sample) that hold no object have no mAP: a run scored on them
    would report NaN as its result. Refused in one line before training or validating."""
    val = bundle.val
    base = val.dataset if isinstance(val, Subset) else val
    if not isinstance(base, ImageBoxes):  # digit scenes always hold digits
        return
    items = [base.items[i] for i in val.indices] if isinstance(val, Subset) else base.items
    if not any(len(item.boxes) for item in items):
        raise UserError(f"the {len(items)} {bundle.name} validation image(s) hold no objects, so their mAP is undefined",
                        "add annotated images to the validation split", fields=("data_dir",))
