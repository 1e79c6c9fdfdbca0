"""Calibration images of a quantized engine: N training images of the run's dataset, drawn with a seed.

An int8 engine (`build_engine` with precision int8) quantizes the run's models (QDQ,
`runtime.quantize`) with activation scales calibrated on these images. They are the run's own training images (its `subset` when it
trained on one), drawn without replacement by `seed`; `CalibrationSet` records the dataset, the
count, the seed, the indices and the method in `engine.json`, so the engine can be rebuilt exactly.
Every choice is checked before the dataset is read or a model exported: the method must be one
the quantizer has for the precision, and the count between 1 and the images the dataset holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from iee_deploy.deploy.run_models import run_data
from iee_deploy.errors import UserError
from iee_deploy.runs import RunInfo
from iee_deploy.tasks import Task
from iee_deploy.tasks.base import Deployment
from runtime.quantize import DEFAULT_METHOD, QdqScheme, check_method

DEFAULT_IMAGES = 256
CALIBRATION_BATCH = 32  # images per calibration step of the quantizer


@dataclass(frozen=True)
class CalibrationRequest:
    """What the user asks for: how many training images (None: `DEFAULT_IMAGES`, or all the run's training set holds
    when it holds fewer), which method (None: the precision's default), which seed."""

    images: int | None = None
    method: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class CalibrationSet:
    """The images an engine was calibrated on and how (recorded in engine.json)."""

    dataset: str
    data_dir: str | None
    images: int
    seed: int
    method: str  # as onnxruntime.quantization.CalibrationMethod names it
    scheme: str  # QdqScheme.describe()
    indices: list[int] = field(default_factory=list)  # into the run's training set


def check_request(request: CalibrationRequest, scheme: QdqScheme, precision: str) -> str:
    """The request's method by its ONNX Runtime name; a one-line UserError for an impossible request."""
    if request.images is not None and request.images < 1:
        raise UserError(f"calibration_images {request.images} is not a number of images", "give 1 or more, e.g. 256",
                        fields=("calibration_images",))
    return check_method(request.method or DEFAULT_METHOD[precision], scheme, precision)


def calibration_count(request: CalibrationRequest, held: int, dataset: str) -> int:
    """How many of the `held` training images of `dataset` to calibrate on: those asked for, else `DEFAULT_IMAGES` or
    all there are when fewer (a run on a small subset); a UserError for more than there are."""
    if request.images is None:
        return min(DEFAULT_IMAGES, held)
    if request.images > held:
        raise UserError(f"calibration asks for {request.images} training images, but the run's '{dataset}' "
                        f"training set holds {held}", f"give `calibration_images` of at most {held}",
                        fields=("calibration_images",))
    return request.images


def calibration_images(run_dir: str | Path, info: RunInfo, request: CalibrationRequest, scheme: QdqScheme,
                       precision: str, task: Task, deployment: Deployment) -> tuple[CalibrationSet, list[np.ndarray]]:
    """The calibration set of a run and its images in batches (float32, as the engine reads them: the task's
    pre-processing, `deployment.inputs`, applied)."""
    method = check_request(request, scheme, precision)
    data = run_data(run_dir, info, batch_size=CALIBRATION_BATCH)
    train = task.datasets(data).train
    wanted = calibration_count(request, len(train), info.dataset)
    indices = sorted(np.random.default_rng(request.seed).choice(len(train), wanted, replace=False).tolist())
    with torch.random.fork_rng(devices=[]):  # augmentation draws from torch's CPU generator: seeded, so repeatable
        torch.manual_seed(request.seed)
        images = np.concatenate([deployment.inputs(batch)[0].numpy().astype(np.float32)
                                 for batch in task.val_batches(Subset(train, indices), data, 0, 1)])
    batches = [images[i: i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
    record = CalibrationSet(info.dataset, info.data_dir, wanted, request.seed, method, scheme.describe(), indices)
    return record, batches
