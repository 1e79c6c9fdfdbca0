"""Inference backends behind one interface (`Backend` / `Engine`), chosen by name.

| name | runs on | artefact |
|---|---|---|
| `onnxruntime` | CPU execution provider (the embedded default) | ONNX optimised at level ALL (`*.ort.onnx`) |
| `tensorrt` | NVIDIA GPU with TensorRT 10.x/11.x | serialized strongly typed engine (`*.plan`) |
| `torch-cuda` | NVIDIA GPU with a CUDA build of torch | the module in the engine dtype, replayed as a CUDA graph (`*.torch.pt`) |

Libraries a backend needs only on a GPU machine (tensorrt) are imported when it is used.
"""

from __future__ import annotations

import difflib

from iee_deploy.deploy.engines.base import PRECISIONS, Backend, BuildSpec, Engine, ModelSource
from iee_deploy.deploy.engines.onnxruntime_cpu import OnnxRuntimeBackend
from iee_deploy.deploy.engines.tensorrt_gpu import TensorRTBackend
from iee_deploy.deploy.engines.torch_cuda import TorchCudaBackend
from iee_deploy.errors import UserError

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BuildSpec", "Engine", "ModelSource", "get_backend"]

BACKENDS: dict[str, Backend] = {b.name: b for b in (OnnxRuntimeBackend(), TensorRTBackend(), TorchCudaBackend())}


def get_backend(name: str) -> Backend:
    """The backend called `name`, or a UserError listing the closest names."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=2)
        raise UserError(f"unknown backend '{name}'",
                        f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]
