"""The one interface every inference backend implements: build an artefact, load it, run and time it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class BuildSpec:
    """What an engine is built for: input shape (batch, 3, R, R), precision, CPU threads, sparse weights."""

    batch: int
    resolution: int
    precision: str  # "fp32" or "fp16": the dtype of the engine's input, weights and output
    threads: int  # intra-op CPU threads (ONNX Runtime); GPU backends ignore it
    sparse_weights: bool = False  # N:M (2:4) weights: let the builder pick sparse tensor-core kernels

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.resolution, self.resolution)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.precision == "fp16" else np.float32)


@dataclass(frozen=True)
class ModelSource:
    """A model to build, in both forms a backend may start from."""

    name: str  # "pruned" or "dense": the stem of every file built from it
    module: nn.Module  # fp32, eval mode, on the CPU
    onnx: Path  # the same model exported in the engine precision


class Engine(ABC):
    """A loaded engine for a fixed batch size; `run` takes any number of images."""

    def __init__(self, spec: BuildSpec) -> None:
        self.spec = spec

    @abstractmethod
    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits for exactly `spec.batch` images (in `spec.input_dtype`), as a host array."""

    @abstractmethod
    def timed_call(self, x: np.ndarray) -> Callable[[], None]:
        """A synchronous one-batch inference on `x` kept resident where the engine wants its input."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits for N images: full batches, the last one zero-padded (eval-mode samples are independent)."""
        batch = self.spec.batch
        outputs = []
        for start in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[start : start + batch], dtype=self.spec.input_dtype)
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(np.asarray(self.infer_batch(chunk))[:n].astype(np.float32))
        return np.concatenate(outputs)


class Backend(ABC):
    """A way of turning a model into an engine (ONNX Runtime, TensorRT, torch with CUDA graphs)."""

    name: str
    artefact_suffix: str  # file name of the built artefact: f"{source.name}{artefact_suffix}"
    default_precision: str  # what --precision means when not given

    @abstractmethod
    def check_available(self) -> None:
        """Raise a UserError naming what is missing (library, device) before any work is done."""

    @abstractmethod
    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        """Build `source` for `spec` into folder `out`; return the artefact's path."""

    @abstractmethod
    def load(self, artefact: Path, spec: BuildSpec) -> Engine:
        """Load a built artefact for inference."""
