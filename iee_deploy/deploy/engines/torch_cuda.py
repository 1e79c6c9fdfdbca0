"""torch on an NVIDIA GPU without TensorRT: the pruned module in FP16 (default), replayed as a CUDA graph.

Build saves the module in the engine dtype (`*.torch.pt`, a whole module like `pruned_model.pt`).
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
from torch import nn

from iee_deploy.deploy.engines.base import Backend, BuildSpec, Engine, ModelSource
from iee_deploy.deploy.engines.cuda import require_cuda
from iee_deploy.errors import UserError
from iee_deploy.io import save_torch

WARMUP_PASSES = 3


class TorchCudaEngine(Engine):
    """A module captured in a CUDA graph on static input/output buffers."""

    def __init__(self, artefact: Path, spec: BuildSpec) -> None:
        super().__init__(spec)
        module = torch.load(artefact, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise UserError(f"'{artefact}' does not hold a model", "run build-engine --backend torch-cuda again")
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
        return save_torch(out / f"{source.name}{self.artefact_suffix}", copy.deepcopy(source.module).to(dtype).eval())

    def load(self, artefact: Path, spec: BuildSpec) -> Engine:
        require_cuda(self.name)
        return TorchCudaEngine(artefact, spec)
