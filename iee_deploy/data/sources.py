"""Loaders for each dataset layout. Each returns a `DataBundle` (imported lazily to avoid a cycle)."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from iee_deploy.errors import UserError
from runtime.machine import free_memory_bytes

if TYPE_CHECKING:
    from iee_deploy.data import DataBundle

SMALL = 64
"""At or below this resolution: crop-with-padding augmentation and in-memory decoding."""

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class TensorImageDataset(Dataset):
    """Images held in memory as uint8 (N, 3, R, R); normalises and, for training, augments per item.

    Augmentation: random crop with `pad` pixels of zero padding and a horizontal flip (`flip`;
    off for digits, whose mirror images are other glyphs).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 train: bool, pad: int = 4, flip: bool = True) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3
        self.images, self.labels = images, labels.long()
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.train, self.pad, self.flip = train, pad, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255)
        if self.train:
            if self.pad:
                size = x.shape[-1]
                x = F.pad(x, (self.pad,) * 4)
                i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
                x = x[:, i : i + size, j : j + size]
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std, int(self.labels[index])


SizedDataset: TypeAlias = TensorImageDataset | Subset | ImageFolder
"""The map-style datasets with a length that the loaders return."""


RGB_WITH_FLOAT_COPY = 3 + 3 * 4
"""Bytes per pixel of an image held as uint8 RGB, plus the float copy a resize makes."""


def in_memory_bytes(count: int, resolution: int, bytes_per_pixel: int = RGB_WITH_FLOAT_COPY) -> int:
    """Bytes to hold `count` images at `resolution` px, `bytes_per_pixel` each (default: uint8 RGB plus the
    float copy a resize makes)."""
    return count * resolution * resolution * bytes_per_pixel


def check_fits_in_memory(count: int, resolution: int, name: str, free: int | None,
                         bytes_per_pixel: int = RGB_WITH_FLOAT_COPY) -> None:
    """Refuse, before allocating, a resolution whose in-memory images would not fit (they would swap or be killed)."""
    need = in_memory_bytes(count, resolution, bytes_per_pixel)
    if free is None or need <= 0.8 * free:
        return
    largest = int((0.8 * free / in_memory_bytes(count, 1, bytes_per_pixel)) ** 0.5)  # bytes grow with the square of the size
    raise UserError(f"{name} at `resolution` {resolution} px needs {need / 2**30:.1f} GiB in memory for its {count:,} "
                    f"images, more than the {free / 2**30:.1f} GiB free", f"use a `resolution` of at most {largest} px",
                    fields=("resolution",))


def _to_rgb_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, 3, R, R) uint8, bilinear resize when R differs."""
    check_fits_in_memory(len(images), resolution, "the dataset", free_memory_bytes())
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.shape[-1] != resolution:
        images = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", align_corners=False)
        images = images.round().clamp_(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def _bundle(name: str, train: SizedDataset, val: SizedDataset, num_classes: int, resolution: int,
            classes: tuple[str, ...] | None = None) -> DataBundle:
    from iee_deploy.data import DataBundle

    return DataBundle(name, train, val, num_classes, resolution, classes)


def load_digits(root: Path | None, resolution: int | None) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images): the offline default.

    A fixed stratified 80/20 split (independent of the training seed) gives 1,437 / 360 images.
    """
    from sklearn.datasets import load_digits as sk_digits

    if root is not None:  # a folder of the user's images would be silently ignored
        raise UserError(f"`dataset` digits is embedded (offline) and reads no `data_dir` ('{root}')",
                        "leave `data_dir` out, or name the dataset that lies there with `dataset`",
                        fields=("data_dir", "dataset"))
    res = resolution or 32
    data = sk_digits()
    images = torch.from_numpy((data.images * (255.0 / 16.0)).round().astype(np.uint8))
    labels = torch.from_numpy(data.target)
    rng = np.random.default_rng(0)
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(data.target == c))[: int(round(0.2 * (data.target == c).sum()))]
                              for c in range(10)])
    val_mask = np.zeros(len(labels), bool)
    val_mask[val_idx] = True
    rgb = _to_rgb_uint8(images, res)
    stats = ((0.5,) * 3, (0.5,) * 3)
    train = TensorImageDataset(rgb[~val_mask], labels[~val_mask], *stats, train=True, pad=res // 8, flip=False)
    val = TensorImageDataset(rgb[val_mask], labels[val_mask], *stats, train=False)
    return _bundle("digits", train, val, 10, res)


def _fashion_root(root: Path) -> Path:
    """Accept DIR, DIR/FashionMNIST or DIR/FashionMNIST/raw; return the folder holding FashionMNIST/."""
    for candidate in (root, root.parent, root.parent.parent):
        if (candidate / "FashionMNIST" / "raw").is_dir():
            return candidate
    raise UserError(f"no FashionMNIST/raw folder under '{root}'",
                    "copy the four Fashion-MNIST .gz files into DIR/FashionMNIST/raw and pass DIR as `data_dir`",
                    fields=("data_dir",))


def load_fashion_mnist(root: Path | None, resolution: int | None) -> DataBundle:
    """Fashion-MNIST from the torchvision layout; verified by md5 and extracted offline."""
    import torchvision

    if root is None:
        raise UserError("fashion-mnist needs a `data_dir`", "pass the folder that holds FashionMNIST/raw/*.gz",
                        fields=("data_dir",))
    base = _fashion_root(root)
    raw = base / "FashionMNIST" / "raw"
    missing = [f for f in FASHION_FILES if not (raw / f).exists() and not (raw / f.removesuffix(".gz")).exists()]
    if missing:
        raise UserError(f"Fashion-MNIST files missing in '{raw}': {', '.join(missing)}", "copy the four original .gz files there")
    _verify_fashion_files(raw)
    if not _writable(raw):
        # torchvision extracts next to the archives; work on a private copy of a read-only source.
        scratch = Path(tempfile.mkdtemp(prefix="iee-fmnist-")) / "FashionMNIST" / "raw"
        shutil.copytree(raw, scratch)
        base = scratch.parent.parent
    res = resolution or 32
    try:
        sets = [torchvision.datasets.FashionMNIST(str(base), train=t, download=True) for t in (True, False)]
    except RuntimeError as exc:
        raise UserError(f"Fashion-MNIST files in '{raw}' are corrupt ({exc})", "copy the original .gz files again") from None
    stats = ((0.2860,) * 3, (0.3530,) * 3)
    train, val = (TensorImageDataset(_to_rgb_uint8(s.data, res), s.targets, *stats, train=t, pad=res // 8)
                  for s, t in zip(sets, (True, False)))
    return _bundle("fashion-mnist", train, val, 10, res)


def _verify_fashion_files(raw: Path) -> None:
    """Check every .gz archive against torchvision's md5 before torchvision sees it: torchvision would try
    to download a file that fails its checksum, and this toolkit never downloads (it runs offline)."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import check_integrity

    for name, md5 in FashionMNIST.resources:
        archive = raw / Path(name).name
        if archive.exists() and not check_integrity(str(archive), md5):
            raise UserError(f"Fashion-MNIST file '{archive}' fails its checksum (damaged or not the original)",
                            "copy the original .gz file there again", fields=("data_dir",))


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def load_cifar10(root: Path | None, resolution: int | None) -> DataBundle:
    """CIFAR-10 from torchvision's `cifar-10-batches-py` layout, or an ImageFolder train/test tree."""
    import torchvision

    if root is None:
        raise UserError("cifar10 needs a `data_dir`", "pass the folder holding cifar-10-batches-py (or train/ and test/)",
                        fields=("data_dir",))
    res = resolution or 32
    if (root / "cifar-10-batches-py").is_dir():
        try:
            sets = [torchvision.datasets.CIFAR10(str(root), train=t, download=False) for t in (True, False)]
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:  # missing or damaged batches
            raise UserError(f"CIFAR-10 under '{root / 'cifar-10-batches-py'}' is incomplete or damaged ({exc})",
                            "copy the complete cifar-10-batches-py folder (data_batch_1-5, test_batch) there again",
                            fields=("data_dir",)) from None
        train, val = (
            TensorImageDataset(_to_rgb_uint8(torch.from_numpy(s.data).permute(0, 3, 1, 2), res), torch.tensor(s.targets),
                               *CIFAR_STATS, train=t, pad=res // 8)
            for s, t in zip(sets, (True, False))
        )
        return _bundle("cifar10", train, val, 10, res)
    if _split_dirs(root) is not None:
        bundle = load_imagefolder(root, res, stats=CIFAR_STATS)
        if bundle.num_classes != 10:  # trained and reported as CIFAR-10, with another head and other labels
            raise UserError(f"'{root}' holds {bundle.num_classes} class folders; CIFAR-10 has 10",
                            "pass `dataset` imagefolder for your own classes", fields=("dataset",))
        bundle.name = "cifar10"
        return bundle
    raise UserError(f"no CIFAR-10 under '{root}'", "pass the folder holding cifar-10-batches-py, or train/ and test/ class folders")


def read_rgb(path: str) -> Any:
    """The image file at `path` as an 8-bit RGB PIL image; a file Pillow cannot read is a one-line UserError naming it.

    16-bit images (mode I;16: 16-bit PNGs and TIFFs) keep their top 8 bits first: Pillow's RGB conversion
    clips them instead, and nearly every pixel of a 16-bit image would read as white. Another package may hook
    `Image.open` (ultralytics, once imported, installs a HEIF plugin on the first file Pillow cannot identify, and
    raises ImportError where that plugin is missing): an ImportError from opening a file is the same unreadable file.
    """
    from PIL import Image

    try:
        with Image.open(path) as source:
            if source.mode.startswith("I;16"):
                return Image.fromarray((np.asarray(source) >> 8).astype(np.uint8)).convert("RGB")
            return source.convert("RGB")
    except (OSError, ImportError) as exc:
        raise UserError(f"cannot read the image '{path}' ({exc})", "replace or remove the file",
                        fields=("data_dir",)) from None


TOOL_RECORDS = ("run.json", "engine.json", "report.json")
"""Files that train, build-engine and report write beside their PNG plots: a folder holding one is no class's images."""


class ClassFolder(ImageFolder):
    """torchvision's ImageFolder with labels a user can trust, reading images with `read_rgb`.

    - Hidden entries (`.ipynb_checkpoints`, `.DS_Store`, macOS `._*` files) are never classes or images.
    - A class folder (or a link inside it, to a folder or to one image) that leads into another class's folder
      would label that class's images twice, once wrongly: refused in one line naming both. So is one that leads into
      the other split's folder of its own class (the run would be scored on images it trains on). A whole class folder
      that is a link to a folder elsewhere is fine.
    - A class folder holding a run, an engine or a report (`TOOL_RECORDS`: a run or report written into it)
      would read their plots as images of that class: refused.
    - Fewer than two classes cannot train a classifier: refused.
    """

    def __init__(self, root: str, transform: Any = None) -> None:
        super().__init__(root, transform=transform, loader=read_rgb)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in Path(directory).iterdir() if e.is_dir() and not e.name.startswith("."))
        if len(classes) < 2:
            raise UserError(f"'{directory}' holds {len(classes)} class folder(s); a classifier needs at least 2",
                            "put each class's images in a sub-folder of its own: <split>/<class>/*.jpg",
                            fields=("data_dir",))
        return classes, {c: i for i, c in enumerate(classes)}

    @staticmethod
    def make_dataset(directory: str | Path, class_to_idx: dict[str, int] | None = None,
                     extensions: tuple[str, ...] | None = None, is_valid_file: Any = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        assert class_to_idx is not None
        root = Path(directory)
        # every class folder of every split (train/, val/, test/ beside `directory`): a link from one class into
        # another class's folder, in this split or the other, would label that class's images wrongly; one into the
        # other split's folder of its own class would score the run on images it trains on
        splits = [root, *(root.parent / s for s in ("train", "val", "test") if s != root.name)]
        homes = [(c, split, (split / c).resolve()) for split in splits for c in class_to_idx if (split / c).is_dir()]

        def elsewhere(cls: str, real: Path) -> str | None:
            """Whose folder `real` (reached from class `cls`) lies in, when it is not `cls`'s own in this split."""
            return next((f"class '{c}''s" if c != cls else f"the {split.name}/ split's class '{c}'"
                         for c, split, home in homes if (c != cls or split != root) and real.is_relative_to(home)), None)

        samples: list[tuple[str, int]] = []
        for cls, label in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            found = 0
            for folder, dirs, files in os.walk(root / cls, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                real = Path(folder).resolve()
                other = elsewhere(cls, real)
                if other is not None:
                    raise UserError(f"'{folder}' in class '{cls}' leads into {other} folder ({real})",
                                    "remove the link: each image must sit under its own class of one split only",
                                    fields=("data_dir",))
                written = next((name for name in TOOL_RECORDS if name in files), None)
                if written is not None:
                    raise UserError(f"'{folder}' in class '{cls}' holds the output of a command of this tool ({written}):"
                                    f" its plots would be read as images of class '{cls}'",
                                    "move that run, engine or report folder out of the data folder", fields=("data_dir",))
                for name in sorted(files):
                    if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                        path = os.path.join(folder, name)
                        target = Path(path).resolve() if os.path.islink(path) else None  # its folder is checked above
                        owner = elsewhere(cls, target) if target is not None else None
                        if owner is not None:
                            raise UserError(f"'{path}' in class '{cls}' is a link to {owner} image ({target})",
                                            "remove the link: each image must sit under its own class of one split "
                                            "only", fields=("data_dir",))
                        samples.append((path, label))
                        found += 1
            if not found and not allow_empty:
                raise UserError(f"class folder '{root / cls}' holds no images ({', '.join(IMG_EXTENSIONS)})",
                                "add its images, or remove the empty folder", fields=("data_dir",))
        return samples


def _same_classes(train: ImageFolder, val: ImageFolder, root: Path) -> None:
    """Validation labels mean the training labels only when both splits name the same class folders."""
    if train.classes == val.classes:
        return
    only_val = sorted(set(val.classes) - set(train.classes))
    only_train = sorted(set(train.classes) - set(val.classes))
    parts = ([f"only in validation: {', '.join(only_val)}"] if only_val else []) + (
        [f"only in training: {', '.join(only_train)}"] if only_train else [])
    raise UserError(f"the class folders of the two splits under '{root}' differ ({'; '.join(parts)})",
                    "give train/ and val/ (or test/) the same class sub-folders", fields=("data_dir",))


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    train = root / "train"
    for name in ("val", "test"):
        if train.is_dir() and (root / name).is_dir():
            return train, root / name
    return None


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_imagefolder(root: Path | None, resolution: int | None,
                     stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS) -> DataBundle:
    """ImageNet-style `train/<class>/*` and `val/<class>/*` (or `test/`) folders.

    At <= 64 px the images are decoded once into memory; at larger sizes they are decoded per
    item with RandomResizedCrop + flip (train) and Resize + CenterCrop (val).
    """
    from torchvision import transforms as T

    if root is None:
        raise UserError("imagefolder needs a `data_dir`", "pass a folder with train/ and val/ class sub-folders",
                        fields=("data_dir",))
    dirs = _split_dirs(root)
    if dirs is None:
        raise UserError(f"'{root}' has no train/ and val/ (or test/) folders", "arrange images as train/<class>/*.jpg and val/<class>/*.jpg")
    res = resolution or 224
    try:
        if res <= SMALL:
            sets = [ClassFolder(str(d)) for d in dirs]
            _same_classes(sets[0], sets[1], root)
            train, val = (_decode_all(s, res, stats, t) for s, t in zip(sets, (True, False)))
            return _bundle("imagefolder", train, val, len(sets[0].classes), res, tuple(sets[0].classes))
        norm = T.Normalize(*stats)
        train_tf = T.Compose([T.RandomResizedCrop(res), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        val_tf = T.Compose([T.Resize(int(res * 256 / 224)), T.CenterCrop(res), T.ToTensor(), norm])
        tr = ClassFolder(str(dirs[0]), transform=train_tf)
        va = ClassFolder(str(dirs[1]), transform=val_tf)
        _same_classes(tr, va, root)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"cannot read images under '{root}' ({exc})", "check the folder holds readable images per class") from None
    return _bundle("imagefolder", tr, va, len(tr.classes), res, tuple(tr.classes))


def _decode_all(folder: ImageFolder, res: int, stats: tuple[tuple[float, ...], tuple[float, ...]], train: bool) -> TensorImageDataset:
    from PIL import Image

    samples = folder.samples
    check_fits_in_memory(len(samples), res, f"'{folder.root}'", free_memory_bytes())
    images = torch.empty((len(samples), 3, res, res), dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        rgb = read_rgb(path)
        if rgb.size != (res, res):
            rgb = rgb.resize((res, res), Image.Resampling.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in samples])
    return TensorImageDataset(images, labels, *stats, train=train, pad=res // 8)
