"""The device check shared by the GPU backends: a one-line "wrong device" error naming what was found."""

from __future__ import annotations

import torch

from iee_deploy.errors import UserError
from profiler.targets import cpu_name, detect_gpus


def found_devices() -> str:
    """What this machine offers torch: the GPUs, or why there are none (CPU-only build, no driver)."""
    gpus = detect_gpus()
    if gpus:
        return ", ".join(gpus)
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " without CUDA")
    return f"no CUDA device ({build}; CPU: {cpu_name()})"


def require_cuda(backend: str) -> None:
    """Raise a UserError unless torch sees an NVIDIA GPU."""
    if not torch.cuda.is_available():
        raise UserError(f"wrong device: --backend {backend} needs an NVIDIA GPU, found {found_devices()}",
                        "use --backend onnxruntime on this machine")
