"""PyTorch: eager on the CPU; on an NVIDIA GPU the way cuDNN latency tables are measured.

On CUDA a session turns on `cudnn.benchmark` (cuDNN times its algorithms during warm-up and keeps
the fastest), puts module and input in channels-last memory format and captures one forward pass
on a static input buffer in a CUDA graph (`runtime.cuda.capture_graph`); inference copies a batch
into that buffer and replays the graph, and timing puts CUDA events around replays. On the CPU the
module runs eagerly with the spec's thread count and is timed with the host clock. A built
artefact is a `torch.export` program in the engine dtype (`*.torch.pt2`): `torch.export.load` reads
a graph and weights, never a Python pickle, so an engine folder cannot carry code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.io import atomic_write
from runtime.backends import Backend, BuildSpec, ModelSource, Session
from runtime.cuda import capture_graph, cuda_runner, require_cuda
from runtime.timing import Runner, host_runner

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchSession(Session):
    """A module on the spec's device and dtype, replayed as a CUDA graph on a GPU."""

    def __init__(self, module: nn.Module, spec: BuildSpec) -> None:
        super().__init__(spec)
        cuda = spec.device == "cuda"
        dtype = _DTYPES[spec.precision]
        layout = torch.channels_last if cuda and len(spec.input_shape) == 4 else torch.contiguous_format
        if cuda:
            require_cuda("torch")
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(spec.threads)
        if not isinstance(module, torch.fx.GraphModule):  # an exported program is already in eval mode (and refuses eval())
            module = module.eval()
        self.module = module.to(spec.device, dtype).to(memory_format=layout)
        self.input = torch.zeros(spec.input_shape, dtype=dtype, device=spec.device).contiguous(memory_format=layout)
        self.output = torch.empty(0)

        def forward() -> None:
            with torch.inference_mode():
                self.output = self.module(self.input)

        self._step: Callable[[], object] = forward
        self._stream = None
        if cuda:
            self._stream = torch.cuda.Stream(spec.device)
            self._step = capture_graph(forward, self._stream, spec.warmup)

    def _load(self, x: np.ndarray) -> None:
        self.input.copy_(torch.from_numpy(np.ascontiguousarray(x)))

    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        self._load(x)
        if self._stream is not None:
            with torch.cuda.stream(self._stream):
                self._step()
            self._stream.synchronize()
        else:
            self._step()
        return self.output.float().cpu().numpy()

    def runner(self, x: np.ndarray) -> Runner:
        self._load(x)
        if self._stream is not None:
            return cuda_runner(self._step, self._stream)
        return host_runner(self._step)


class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda")
    artefact_suffix = ".torch.pt2"
    needs_onnx = False

    def check_available(self, device: str) -> None:
        super().check_available(device)
        if device == "cuda":
            require_cuda(self.name)

    def versions(self, device: str) -> dict[str, str]:
        found = {"torch": torch.__version__, "device": device}
        if device == "cuda":
            found.update(cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()),
                         gpu=torch.cuda.get_device_name(0))
        return found

    def session(self, source: ModelSource, spec: BuildSpec, timing_cache: Path | None = None) -> Session:
        if source.module is None:
            raise ValueError("the torch backend runs a module")
        return TorchSession(copy.deepcopy(source.module), spec)

    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        if source.module is None:
            raise ValueError("the torch backend builds from a module")
        dtype = _DTYPES[spec.precision]
        module = copy.deepcopy(source.module).to(dtype).eval()
        path = out / f"{source.name}{self.artefact_suffix}"
        program = torch.export.export(module, (torch.zeros(spec.input_shape, dtype=dtype),))
        atomic_write(path, lambda handle: torch.export.save(program, handle), mode="wb")
        return path

    def load(self, artefact: Path, spec: BuildSpec) -> Session:
        self.check_available(spec.device)
        try:
            module = torch.export.load(artefact).module()
        except Exception as exc:  # a truncated, corrupt or foreign file
            raise UserError(f"'{artefact}' does not hold an exported model ({type(exc).__name__})",
                            "build the engine again") from None
        return TorchSession(module, spec)
