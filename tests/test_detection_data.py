"""Detection datasets at `data_dir`: Pascal VOC 2007 and COCO fixture folders of three tiny images, and one-line
errors for malformed annotation files (naming the file and the problem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from iee_deploy.data.detection import VOC_CLASSES, check_scorable, detection_datasets
from iee_deploy.errors import UserError

W, H = 32, 24


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (200, 10, 10)).save(path)


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    boxes = "".join(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                    f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for name, (a, b, c, d) in objects)
    return f"<annotation><size><width>{W}</width><height>{H}</height><depth>3</depth></size>{boxes}</annotation>"


def voc_folder(root: Path, xml: dict[str, str]) -> Path:
    """VOCdevkit/VOC2007 with images 000001..000003: the first two train, the third validates."""
    base = root / "VOCdevkit" / "VOC2007"
    for name, text in xml.items():
        image(base / "JPEGImages" / f"{name}.jpg")
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / f"{name}.xml").write_text(text)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("000003\n")
    return base


GOOD_VOC = {"000001": voc_xml([("dog", (1, 1, 10, 12)), ("person", (5, 6, 32, 24))]), "000002": voc_xml([("cat", (3, 4, 20, 20))]),
            "000003": voc_xml([])}


def test_voc_folder_loads_with_torchvisions_reader(tmp_path):
    voc_folder(tmp_path, GOOD_VOC)
    bundle = detection_datasets("voc", tmp_path, 64)
    assert (bundle.name, len(bundle.train), len(bundle.val), bundle.num_classes, bundle.resolution) == ("voc", 2, 1, 21, 64)
    pixels, target = bundle.train[0]
    assert pixels.shape == (3, H, W) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1
    assert target["boxes"].tolist() == [[0, 0, 10, 12], [4, 5, 32, 24]]  # 1-based corners to x1 = xmin - 1
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert bundle.val[0][1]["boxes"].shape == (0, 4)  # an image without objects


def test_detection_images_are_read_as_imagefolder_reads_them(tmp_path):
    import numpy as np

    base = voc_folder(tmp_path, GOOD_VOC)
    # a 16-bit image (Pillow reads by content, whatever the name): a plain convert("RGB") clipped it to white
    Image.fromarray(np.full((H, W), 0x8000, dtype=np.uint16)).save(base / "JPEGImages" / "000001.jpg", format="PNG")
    (base / "JPEGImages" / "000002.jpg").write_bytes(b"broken")
    bundle = detection_datasets("voc", tmp_path, 64)
    assert float(bundle.train[0][0][0, 4, 4]) == pytest.approx(128 / 255, abs=0.01)
    with pytest.raises(UserError, match="cannot read the image '.*000002.jpg'"):
        bundle.train[1]


@pytest.mark.parametrize(("text", "problem"), [
    ("<annotation><size><width>32", "is not valid XML"),
    (voc_xml([("dog", (1, 1, 40, 12))]), "lies outside the 32 x 24 image"),
    (voc_xml([("unicorn", (1, 1, 10, 12))]), "names the class 'unicorn'"),
    ("<annotation><object><name>dog</name></object></annotation>", "has no <size>"),
])
def test_a_malformed_voc_annotation_is_one_line_naming_the_file(tmp_path, text, problem):
    voc_folder(tmp_path, {**GOOD_VOC, "000002": text})
    with pytest.raises(UserError) as err:
        detection_datasets("voc", tmp_path, 64)
    assert "000002.xml" in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)


def test_validation_images_without_objects_are_refused_before_a_nan_map(tmp_path):
    """GOOD_VOC validates on one image without objects: its mAP is undefined, so training or validating on it is
    refused (a run reported `mAP@0.5 nan%` as its result); one annotated image makes it scorable."""
    voc_folder(tmp_path / "empty", GOOD_VOC)
    with pytest.raises(UserError, match="the 1 voc validation image\\(s\\) hold no objects, so their mAP is undefined"):
        check_scorable(detection_datasets("voc", tmp_path / "empty", 64))
    voc_folder(tmp_path / "one", {**GOOD_VOC, "000003": voc_xml([("dog", (1, 1, 10, 12))])})
    check_scorable(detection_datasets("voc", tmp_path / "one", 64))
    check_scorable(detection_datasets("digits", None, 32, subset=5))


def coco_folder(root: Path, train: dict | None = None) -> None:
    """annotations/instances_{train,val}2017.json and the images in train2017/ and val2017/."""
    categories = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]
    files = {
        "train2017": {"images": [{"id": 7, "file_name": "a.jpg", "width": W, "height": H},
                                 {"id": 9, "file_name": "b.jpg", "width": W, "height": H}],
                      "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 5], "iscrowd": 0},
                                      {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 32, 24], "iscrowd": 1},
                                      {"id": 3, "image_id": 9, "category_id": 1, "bbox": [1.5, 2, 4, 4], "iscrowd": 0}],
                      "categories": categories},
        "val2017": {"images": [{"id": 1, "file_name": "c.jpg", "width": W, "height": H}],
                    "annotations": [{"id": 4, "image_id": 1, "category_id": 18, "bbox": [0, 0, 8, 8]}],
                    "categories": categories},
    }
    if train is not None:
        files["train2017"] = train
    (root / "annotations").mkdir(parents=True)
    for split, data in files.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        for entry in data.get("images", []):
            image(root / split / entry["file_name"])


def test_coco_folder_loads(tmp_path):
    coco_folder(tmp_path)
    bundle = detection_datasets("coco", tmp_path, 64)
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (2, 1, 3)
    pixels, target = bundle.train[0]
    assert pixels.shape == (3, H, W)
    assert target["boxes"].tolist() == [[2, 3, 12, 8]] and target["labels"].tolist() == [2]  # crowd left out; id 18 is 2nd
    assert bundle.train[1][1]["boxes"].tolist() == [[1.5, 2, 5.5, 6]] and bundle.train[1][1]["labels"].tolist() == [1]
    assert bundle.val[0][1]["labels"].tolist() == [2] and torch.equal(bundle.val[0][1]["boxes"], torch.tensor([[0.0, 0, 8, 8]]))


def test_a_validation_split_naming_a_category_id_otherwise_is_refused(tmp_path):
    """Labels follow category ids: a validation file whose id 18 is 'person' where training's is 'dog' would score
    persons as dogs. Refused naming both names; an extra category the annotations never use is fine."""
    coco_folder(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "categories": [*data["categories"], {"id": 5, "name": "cat"}]}))
    assert detection_datasets("coco", tmp_path, 64).num_classes == 3
    path.write_text(json.dumps({**data, "categories": [{"id": 18, "name": "person"}, {"id": 1, "name": "dog"}]}))
    with pytest.raises(UserError, match="instances_val2017.json' names category 1 'dog', the training split names it 'person'"):
        detection_datasets("coco", tmp_path, 64)


def test_malformed_coco_annotations_are_one_line_naming_the_file(tmp_path):
    cases = [
        ({"images": [], "annotations": []}, "lacks the key 'categories'"),
        ({"images": [{"id": 7, "file_name": "a.jpg", "width": W, "height": H}], "categories": [{"id": 1}],
          "annotations": [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [20, 3, 20, 5]}]},
         "annotation 5 of image 7: box [20.0, 3.0, 40.0, 8.0] lies outside the 32 x 24 image"),
        ({"images": [{"id": 7, "file_name": "a.jpg", "width": W, "height": H},
                     {"id": 7, "file_name": "b.jpg", "width": W, "height": H}], "categories": [{"id": 1}],
          "annotations": []}, "lists image id 7 more than once"),
        ({"images": [], "categories": [{"id": 1, "name": "x"}, {"id": 1, "name": "z"}], "annotations": []},
         "lists category id 1 more than once"),  # 'x' was renamed 'z'
        *[({"images": [{"id": 7, "file_name": "a.jpg", "width": W, "height": H}], "categories": [{"id": 1}],
            "annotations": [{"id": 5, "image_id": 7, "category_id": bad, "bbox": [2, 3, 4, 5]}]},
           f"has category id {bad!r}, which is not a whole number") for bad in (1.7, True)],  # read as 1 before
    ]
    for n, (train, problem) in enumerate(cases):
        coco_folder(tmp_path / str(n), train)
        with pytest.raises(UserError) as err:
            detection_datasets("coco", tmp_path / str(n), 64)
        assert "instances_train2017.json" in str(err.value) and problem in str(err.value), str(err.value)
    (tmp_path / "0" / "annotations" / "instances_train2017.json").write_text("{not json")
    with pytest.raises(UserError, match="instances_train2017.json' is not readable JSON"):
        detection_datasets("coco", tmp_path / "0", 64)


def test_digit_scenes_are_the_offline_default_and_other_names_are_refused(tmp_path):
    bundle = detection_datasets("digits", None, 32, subset=5)
    assert (len(bundle.train), len(bundle.val), bundle.num_classes, bundle.resolution) == (5, 1, 11, 32)
    assert bundle.train[0][0].shape == (3, 32, 32)
    with pytest.raises(UserError, match="unknown detection dataset 'cifar10'; choose one of: digits, voc, coco"):
        detection_datasets("cifar10", None, 32)
    with pytest.raises(UserError, match="no Pascal VOC 2007 'train' split") as refused:
        detection_datasets("voc", tmp_path, 32)
    assert "download" not in str(refused.value)  # torchvision's advice names an option the tool does not have
