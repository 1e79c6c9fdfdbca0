"""Makes a test process believe it runs on another host (`IEE_TEST_HOST`), so the suite holds anywhere.

- `IEE_TEST_HOST=gpu`: `torch.cuda.is_available()` is True (one "Fake GPU (tests)" device) and a fake
  `tensorrt` package (`fake_modules/tensorrt`) is importable; nothing can really run on that GPU.
- `IEE_TEST_HOST=cpu`: no CUDA and no TensorRT, whatever the machine has.
- unset: the real host.

Loaded by Python at start-up when this folder is on PYTHONPATH (`tests/conftest.py::run_cli` puts it
there for every CLI subprocess); `tests/conftest.py` applies the same forcing in the pytest process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FAKE_MODULES = Path(__file__).resolve().parent / "fake_modules"
FAKE_GPU = "Fake GPU (tests)"


def force_host(host: str) -> None:
    """Apply `IEE_TEST_HOST` semantics (see the module docstring) to this process."""
    if host not in ("gpu", "cpu"):
        return
    import torch

    if host == "gpu":
        if str(FAKE_MODULES) not in sys.path:
            sys.path.insert(0, str(FAKE_MODULES))
        sys.modules.pop("tensorrt", None)
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 1
        torch.cuda.get_device_name = lambda device=None: FAKE_GPU
    else:
        sys.modules["tensorrt"] = None  # type: ignore[assignment]  # `import tensorrt` raises ImportError
        torch.cuda.is_available = lambda: False
        torch.cuda.device_count = lambda: 0


force_host(os.environ.get("IEE_TEST_HOST", ""))
