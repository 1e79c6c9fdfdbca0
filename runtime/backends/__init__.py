"""Inference backends behind one interface: one `Backend` per runtime, one name each.

| name | devices | session | artefact |
|---|---|---|---|
| `onnxruntime` | cpu | ONNX Runtime CPU execution provider, host clock (the embedded default) | ONNX optimised at level ALL (`*.ort.onnx`) |
| `torch` | cpu, cuda | eager PyTorch; on CUDA cuDNN autotuning, channels-last, a CUDA graph, CUDA events | a `torch.export` program in the engine dtype (`*.torch.pt2`) |
| `tensorrt` | cuda | a strongly typed TensorRT 10.x/11.x engine in a CUDA graph, CUDA events | serialized engine (`*.plan`) |

A precision is the dtype of the whole graph (fp32, fp16) or a quantized graph (int8, fp8: QDQ pairs
that the runtime fuses into integer kernels, float I/O; see `runtime.quantize`). Each backend says
which precisions it builds (`precisions`, with the QDQ scheme of each quantized one in
`quantization`), so an impossible one is a one-line error before any work.

A backend turns a `ModelSource` (a module, an ONNX model, or both) into a `Session`, either in
memory (`session`: the profiler's one-layer networks) or through a built artefact (`build`, then
`load`: deployed engines). A session runs batches (`infer_batch`, `run`) and hands the timing loop
(`runtime.timing.measure`) a `Runner` on a resident input. Backend modules are imported when
their backend is asked for, so a missing library (TensorRT) is a one-line `NotAvailableError`.
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from iee_deploy.errors import UserError, check_whole
from runtime.quantize import QUANTIZED, QdqScheme
from runtime.timing import Runner

PRECISIONS = ("fp32", "fp16", *QUANTIZED)
DEVICES = ("cpu", "cuda")
BACKENDS = ("onnxruntime", "torch", "tensorrt")
ALIASES = {"torch-cuda": "torch"}
"""Names of earlier versions still read from engine reports."""

_MODULES = {"onnxruntime": ("runtime.backends.ort", "OnnxRuntimeBackend"),
            "torch": ("runtime.backends.pytorch", "TorchBackend"),
            "tensorrt": ("runtime.backends.trt", "TensorRTBackend")}


@dataclass(frozen=True)
class BuildSpec:
    """What a session is built for: input shape, precision, device, CPU threads, sparse weights.

    The input is (batch, 3, resolution, resolution) images unless `shape` gives another one (the
    profiler's one-layer networks).
    """

    batch: int
    resolution: int
    precision: str  # "fp32"/"fp16": the dtype of input, weights and output; "int8"/"fp8": a QDQ graph, fp32 I/O
    threads: int  # intra-op CPU threads (ONNX Runtime, torch on the CPU); GPU sessions ignore it
    sparse_weights: bool = False  # N:M (2:4) weights: let TensorRT pick sparse tensor-core kernels
    device: str = "cpu"  # "cpu" or "cuda"
    warmup: int = 3  # runs before a CUDA graph is captured (cuDNN autotuning, lazy initialisation)
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision '{self.precision}'", f"choose one of: {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device '{self.device}'", f"choose one of: {', '.join(DEVICES)}")
        for name, least in (("batch", 1), ("resolution", 1), ("threads", 0)):  # 0 threads: every core
            check_whole(name, getattr(self, name), least, 1)
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape if self.shape is not None else (self.batch, 3, self.resolution, self.resolution)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.precision == "fp16" else np.float32)


@dataclass(frozen=True)
class ModelSource:
    """A model to run, in the forms a backend may start from (at least one of them)."""

    name: str  # "pruned", "dense", "layer": the stem of every file built from it
    module: nn.Module | None = None  # fp32, eval mode, on the CPU
    onnx: Path | bytes | None = None  # the same model in the session precision, as a file or serialized


class Session(ABC):
    """A loaded model for a fixed input shape: runs batches and times them."""

    def __init__(self, spec: BuildSpec) -> None:
        self.spec = spec

    @abstractmethod
    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        """Outputs for exactly one input of `spec.input_shape` (in `spec.input_dtype`), as a host array."""

    @abstractmethod
    def runner(self, x: np.ndarray) -> Runner:
        """Timed runs of one inference on `x`, kept resident where the session wants its input."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float32 outputs for N images: full batches, the last one zero-padded (eval-mode samples are independent)."""
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
    """One runtime: checks it can run here, and turns models into sessions."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]]
    artefact_suffix: ClassVar[str]  # file name of the built artefact: f"{source.name}{artefact_suffix}"
    needs_onnx: ClassVar[bool]  # sessions start from the ONNX (else from the module)
    quantization: ClassVar[dict[str, QdqScheme]] = {}  # quantized precision -> how this backend wants it quantized

    def default_precision(self, device: str) -> str:
        """fp16 on a GPU (tensor cores), fp32 on the CPU."""
        return "fp16" if device == "cuda" else "fp32"

    def precisions(self) -> tuple[str, ...]:
        """The precisions this backend builds: fp32, fp16 and its quantized ones."""
        return ("fp32", "fp16", *self.quantization)

    def check_precision(self, precision: str, device: str) -> None:
        """Raise a one-line UserError when this backend cannot build `precision` on `device`."""
        if precision not in self.precisions():
            able = [b for b in BACKENDS if b != self.name and precision in get_backend(b).precisions()]
            raise UserError(f"the {self.name} backend does not build {precision} engines (it builds "
                            f"{', '.join(self.precisions())})",
                            f"choose `precision` {' or '.join(self.precisions())}"
                            + (f", or the {' or '.join(able)} backend for {precision}" if able else ""),
                            fields=("precision", "backend"))

    def qdq_scheme(self, precision: str) -> QdqScheme | None:
        """How this backend quantizes `precision` (None for fp32 and fp16)."""
        return self.quantization.get(precision)

    def check_available(self, device: str) -> None:
        """Raise a one-line UserError (NotAvailableError) naming what is missing here for `device`."""
        if device not in self.devices:
            raise UserError(f"the {self.name} backend runs on {' or '.join(self.devices)}, not {device}",
                            f"choose a backend for {device}: {', '.join(b for b in BACKENDS if b != self.name)}")

    @abstractmethod
    def versions(self, device: str) -> dict[str, str]:
        """Versions of the libraries (and the GPU) that produce the numbers."""

    @abstractmethod
    def session(self, source: ModelSource, spec: BuildSpec, timing_cache: Path | None = None) -> Session:
        """An in-memory session of `source` for `spec` (TensorRT: `timing_cache` is read and updated)."""

    @abstractmethod
    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        """Build `source` for `spec` into folder `out`; return the artefact's path."""

    @abstractmethod
    def load(self, artefact: Path, spec: BuildSpec) -> Session:
        """Load a built artefact for inference."""


def canonical_name(name: str) -> str:
    """The backend name of `name`, reading names of earlier versions (`torch-cuda` is `torch`)."""
    return ALIASES.get(name, name)


def get_backend(name: str) -> Backend:
    """The backend called `name` (imports only its module), or a UserError listing the closest names."""
    name = canonical_name(name)
    if name not in _MODULES:
        close = difflib.get_close_matches(name, BACKENDS, n=2)
        raise UserError(f"unknown backend '{name}'",
                        f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(BACKENDS)}")
    module, cls = _MODULES[name]
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found()
