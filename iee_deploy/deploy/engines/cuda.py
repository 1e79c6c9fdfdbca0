"""The device check shared by the GPU backends: a one-line "wrong device" error naming what was found."""

from __future__ import annotations

import platform

import torch

from iee_deploy.errors import UserError


def found_devices() -> str:
    """What this machine offers torch: the GPUs, or why there are none (CPU-only build, no driver)."""
    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " without CUDA")
    return f"no CUDA device ({build}; CPU: {platform.processor() or platform.machine()})"


def require_cuda(backend: str) -> None:
    """Raise a UserError unless torch sees an NVIDIA GPU."""
    if not torch.cuda.is_available():
        raise UserError(f"wrong device: --backend {backend} needs an NVIDIA GPU, found {found_devices()}",
                        "use --backend onnxruntime on this machine")
