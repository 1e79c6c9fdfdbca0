"""torch on an NVIDIA GPU without TensorRT: the pruned module in FP16 (default), replayed as a CUDA graph.

Build saves the module as a `torch.export` program in the engine dtype (`*.torch.pt`; `torch.export.load`
reads a graph and weights, never a Python pickle, so an engine folder cannot carry code).
Load moves it to the GPU with cuDNN autotuning on (`cudnn.benchmark`), warms it up on a side
stream (required before capture, and it lets cuDNN pick its kernels), then captures one forward
pass on a static input buffer into a `torch.cuda.CUDAGraph`; inference copies the batch into
that buffer and replays the graph, which removes the per-kernel launch cost of eager mode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from iee_deploy.deploy.engines.base import Backend, BuildSpec, Engine, ModelSource
from iee_deploy.deploy.engines.cuda import require_cuda
from iee_deploy.errors import UserError
from iee_deploy.io import atomic_path

WARMUP_PASSES = 3


class TorchCudaEngine(Engine):
    """A module captured in a CUDA graph on static input/output buffers."""

    def __init__(self, artefact: Path, spec: BuildSpec) -> None:
        super().__init__(spec)
        try:
            module = torch.export.load(artefact).module()
        except Exception as exc:  # a torn or foreign file
            raise UserError(f"'{artefact}' does not hold an exported model ({type(exc).__name__})",
                            "build the torch-cuda engine again") from None
        dtype = torch.float16 if spec.precision == "fp16" else torch.float32
        torch.backends.cudnn.benchmark = True
        self.module = module.to("cuda", dtype).eval()
        self.input = torch.zeros(spec.input_shape, dtype=dtype, device="cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                self.module(self.input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.output = self.module(self.input)

    def _replay(self) -> None:
        self.graph.replay()
        torch.cuda.synchronize()

    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        self.input.copy_(torch.from_numpy(x))
        self._replay()
        return self.output.float().cpu().numpy()

    def timed_call(self, x: np.ndarray) -> Callable[[], None]:
        self.input.copy_(torch.from_numpy(x))
        return self._replay


class TorchCudaBackend(Backend):
    name = "torch-cuda"
    artefact_suffix = ".torch.pt"
    default_precision = "fp16"

    def check_available(self) -> None:
        require_cuda(self.name)

    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        dtype = torch.float16 if spec.precision == "fp16" else torch.float32
        path = out / f"{source.name}{self.artefact_suffix}"
        module = copy.deepcopy(source.module).to(dtype).eval()
        with atomic_path(path) as tmp:
            torch.export.save(torch.export.export(module, (torch.zeros(spec.input_shape, dtype=dtype),)), tmp)
        return path

    def load(self, artefact: Path, spec: BuildSpec) -> Engine:
        require_cuda(self.name)
        return TorchCudaEngine(artefact, spec)
