import pytest
import torch

from iee_deploy.data import build_datasets, build_loaders
from iee_deploy.errors import UserError


def test_digits_is_offline_real_and_split_deterministically():
    a, b = build_datasets("digits"), build_datasets("digits")
    assert (len(a.train), len(a.val)) == (1438, 359)
    assert a.num_classes == 10 and a.resolution == 32
    assert torch.equal(a.val.images, b.val.images)
    x, y = a.val[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    assert sorted(set(a.val.labels.tolist())) == list(range(10))


def test_loaders_are_seeded_and_subset_works():
    bundle = build_datasets("digits", subset=100)
    assert len(bundle.train) == 100 and len(bundle.val) == 20
    order = lambda seed: next(iter(build_loaders(bundle, 16, seed=seed)[0]))[1]  # noqa: E731
    torch.manual_seed(1)
    first = order(3)
    torch.manual_seed(2)
    assert torch.equal(first, order(3))


def test_val_subset_sets_the_validation_sample_apart_from_the_training_one():
    full = build_datasets("digits")
    assert len(build_datasets("digits", subset=100, val_subset=300).val) == 300
    assert len(build_datasets("digits", val_subset=50).train) == len(full.train)  # training images untouched
    both = build_datasets("digits", subset=100, val_subset=50)
    assert len(both.train) == 100 and len(both.val) == 50
    assert both.val.indices == build_datasets("digits", subset=999, val_subset=50).val.indices  # fixed sample
    assert len(build_datasets("digits", subset=100, val_subset=10**6).val) == len(full.val)  # at most all of them
    with pytest.raises(UserError, match="`val_subset` must be positive"):
        build_datasets("digits", val_subset=0)


def test_subset_mixes_classes_of_a_class_sorted_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in range(5):
            (tmp_path / split / f"class{c}").mkdir(parents=True)
            for i in range(20):
                Image.new("RGB", (8, 8), (c * 50, i, 0)).save(tmp_path / split / f"class{c}" / f"{i}.png")
    bundle = build_datasets("imagefolder", tmp_path, resolution=8, subset=20)
    labels = [bundle.train[i][1] for i in range(len(bundle.train))]
    assert len(labels) == 20 and len(set(labels)) >= 4  # a prefix would hold class0 only
    again = build_datasets("imagefolder", tmp_path, resolution=8, subset=20)
    assert bundle.train.indices == again.train.indices


def test_fashion_mnist_from_shared_raw_files(fashion_root):
    bundle = build_datasets("fashion-mnist", fashion_root, subset=500)
    assert bundle.num_classes == 10
    x, _ = bundle.train[0]
    assert x.shape == (3, 32, 32)


def test_imagefolder_small_images(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), (i * 40, 100, 200 if c == "cat" else 0)).save(tmp_path / split / c / f"{i}.jpg")
    bundle = build_datasets("imagefolder", tmp_path, resolution=32)
    assert bundle.num_classes == 2 and len(bundle.train) == 6 and bundle.classes == ("cat", "dog")
    assert bundle.val[0][0].shape == (3, 32, 32)


def test_validate_refuses_data_whose_classes_differ_from_the_runs():
    from iee_deploy.deploy.validate import check_same_classes

    check_same_classes(("cat", "dog"), ["cat", "dog"], "imagefolder")
    check_same_classes(None, ["cat", "dog"], "cifar10")  # a built-in dataset names no folders: nothing to compare
    check_same_classes(("ant", "bee"), None, "imagefolder")  # a run from before runs recorded their classes
    with pytest.raises(UserError, match="names its label 0 'ant' where the run was trained on 'cat'"):
        check_same_classes(("ant", "bee"), ["cat", "dog"], "imagefolder")
    with pytest.raises(UserError, match="label 1 'cow'"):
        check_same_classes(("cat", "cow"), ["cat", "dog"], "imagefolder")


@pytest.mark.parametrize("name,make_dir,match", [
    ("imagefolder", True, "no train/ and val/"),
    ("cifar10", True, "no CIFAR-10"),
    ("fashion-mnist", True, "no FashionMNIST/raw"),
    ("imagefolder", False, "does not exist"),
    ("imagenette", True, "unknown dataset"),
])
def test_bad_data_is_a_user_error(tmp_path, name, make_dir, match):
    root = tmp_path / "data"
    if make_dir:
        root.mkdir()
    with pytest.raises(UserError, match=match):
        build_datasets(name, root)


def _png_tree(root, splits, per_class=2):
    from PIL import Image

    for split, classes in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (30 * i, 60, 90)).save(root / split / c / f"{i}.png")


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "per-item"])
def test_imagefolder_labels_ignore_hidden_entries_and_allow_linked_class_folders(tmp_path, large):
    """Hidden folders and files (.ipynb_checkpoints, ._x.png) are never classes or images; a class folder
    that is a link to a folder elsewhere is that class."""
    _png_tree(tmp_path / "data", {"train": ["cat", ".ipynb_checkpoints"], "val": ["cat", "dog", ".hidden"]})
    _png_tree(tmp_path / "elsewhere", {"dogs": ["x"]}, per_class=3)
    (tmp_path / "data" / "train" / "dog").symlink_to(tmp_path / "elsewhere" / "dogs" / "x")
    (tmp_path / "data" / "train" / "cat" / "._0.png").write_bytes(b"AppleDouble")
    bundle = build_datasets("imagefolder", tmp_path / "data", resolution=96 if large else 8)
    assert bundle.num_classes == 2
    labels = sorted(bundle.train[i][1] for i in range(len(bundle.train)))
    assert labels == [0, 0, 1, 1, 1]  # 2 cats, 3 linked dogs, no hidden file
    assert sorted(bundle.val[i][1] for i in range(len(bundle.val))) == [0, 0, 1, 1]


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "per-item"])
def test_imagefolder_refuses_a_validation_folder_or_image_that_links_into_training(tmp_path, large):
    _png_tree(tmp_path / "data", {"train": ["cat", "dog"], "val": ["cat"]})
    (tmp_path / "data" / "val" / "dog").symlink_to(tmp_path / "data" / "train" / "dog")
    with pytest.raises(UserError, match="train/dog' in class 'dog' leads into the val/ split's class 'dog' folder"):
        build_datasets("imagefolder", tmp_path / "data", resolution=96 if large else 8)
    (tmp_path / "data" / "val" / "dog").unlink()
    _png_tree(tmp_path / "data", {"val": ["dog"]})
    (tmp_path / "data" / "val" / "cat" / "linked.png").symlink_to(tmp_path / "data" / "train" / "cat" / "0.png")
    with pytest.raises(UserError, match="val/cat/linked.png' in class 'cat' is a link to the train/ split's class 'cat' image"):
        build_datasets("imagefolder", tmp_path / "data", resolution=96 if large else 8)
    _png_tree(tmp_path / "whole", {"train": ["cat", "dog"]})
    (tmp_path / "whole" / "val").symlink_to(tmp_path / "whole" / "train")  # the validation split is the training one
    with pytest.raises(UserError, match="leads into the val/ split's class 'cat' folder"):
        build_datasets("imagefolder", tmp_path / "whole", resolution=96 if large else 8)


def test_imagefolder_refuses_an_empty_class_folder(tmp_path):
    _png_tree(tmp_path, {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        build_datasets("imagefolder", tmp_path, resolution=8)


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "per-item"])
def test_imagefolder_reads_16_bit_images_by_value_and_names_an_unreadable_one(tmp_path, large):
    """A 16-bit PNG keeps its values (Pillow's RGB conversion clipped it to white); a broken file is one
    line naming it, whether images are decoded at load or per item."""
    import numpy as np
    from PIL import Image

    _png_tree(tmp_path, {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    for c in ("cat", "dog"):
        Image.fromarray(np.full((8, 8), 0x8000, dtype=np.uint16)).save(tmp_path / "val" / c / "0.png")
    bundle = build_datasets("imagefolder", tmp_path, resolution=96 if large else 8)
    pixels = bundle.val[0][0] if large else bundle.val.images[0]
    stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    value = pixels[0, 4, 4] * stats[1][0] + stats[0][0] if large else pixels[0, 4, 4] / 255
    assert float(value) == pytest.approx(128 / 255, abs=0.01)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(UserError, match="cannot read the image '.*cat/0.png'"):
        bundle = build_datasets("imagefolder", tmp_path, resolution=96 if large else 8)
        [bundle.train[i] for i in range(len(bundle.train))]


def test_an_unreadable_image_read_by_a_loader_worker_is_still_one_line(tmp_path):
    """torch re-raises a worker's UserError with the worker's traceback as its text; the user still sees one line."""
    from torch.utils.data import DataLoader

    _png_tree(tmp_path, {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"broken")
    bundle = build_datasets("imagefolder", tmp_path, resolution=96)  # above 64 px: images are read per item
    with pytest.raises(UserError) as err:
        list(DataLoader(bundle.train, batch_size=2, num_workers=1))
    assert str(err.value).startswith("cannot read the image '") and "\n" not in str(err.value), str(err.value)


def test_an_unreadable_image_is_one_line_behind_another_packages_open_hook(tmp_path, monkeypatch):
    """ultralytics, once imported, wraps `Image.open`: on a file Pillow cannot identify it imports a HEIF plugin,
    and where that is missing the user got its ModuleNotFoundError traceback instead of our line."""
    from PIL import Image

    from iee_deploy.data.sources import read_rgb

    pillow_open = Image.open

    def hooked_open(fp, *args, **kwargs):  # the same shape as ultralytics.utils.patches.image_open
        try:
            return pillow_open(fp, *args, **kwargs)
        except Image.UnidentifiedImageError:
            import a_heif_plugin_that_is_not_installed  # noqa: F401

    monkeypatch.setattr(Image, "open", hooked_open)
    bad = tmp_path / "0.jpg"
    bad.write_bytes(b"broken")
    with pytest.raises(UserError, match="cannot read the image '.*0.jpg' .*a_heif_plugin_that_is_not_installed"):
        read_rgb(str(bad))
    with pytest.raises(UserError, match="cannot read the image '.*missing.jpg'"):  # a missing file: OSError as before
        read_rgb(str(tmp_path / "missing.jpg"))


def test_a_fashion_mnist_file_failing_its_checksum_is_never_downloaded_again(tmp_path, monkeypatch):
    """Offline: a damaged archive is refused naming the file and telling the user to copy it again; nothing
    tries the network (any download attempt fails this test)."""
    import torchvision.datasets.utils as tv_utils

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tv_utils, "download_url", no_download)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes(b"\x1f\x8b not the original archive")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz' fails its checksum.*copy the original .gz file"):
        build_datasets("fashion-mnist", tmp_path)


def test_a_resolution_whose_images_cannot_fit_in_memory_is_refused_before_allocation():
    from iee_deploy.data.sources import check_fits_in_memory, in_memory_bytes

    assert in_memory_bytes(10, 8) == 10 * 64 * 15
    check_fits_in_memory(1000, 32, "digits", free=10**9)  # 15 MB of 1 GB: fine
    check_fits_in_memory(1000, 32, "digits", free=None)  # unknown free memory: not refused
    with pytest.raises(UserError, match=r"digits at `resolution` 2048 px needs 58.6 GiB .* at most 73 px"):
        check_fits_in_memory(1000, 2048, "digits", free=100 * 10**6)
