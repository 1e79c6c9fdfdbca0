"""The suite holds on any host: it reruns as if on a GPU machine with TensorRT.

`IEE_TEST_HOST=gpu` forces `torch.cuda.is_available()` True and puts a fake `tensorrt` on the path
(tests/hosts/sitecustomize.py), in pytest and in every CLI subprocess; tests that need the opposite
force it with the `cpu_host` fixture or `run_cli(..., host="cpu")`. `make test-gpu-host` (run by CI
after `make test`) reruns the whole suite that way; tests that need a real CUDA device (tests/test_gpu.py)
skip there.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import HOSTS, ROOT


def test_forced_hosts_in_a_subprocess():
    code = "import torch, importlib.util as u; print(torch.cuda.is_available(), u.find_spec('tensorrt') is not None)"
    for host, expected in (("gpu", "True True"), ("cpu", "False")):
        env = dict(os.environ, PYTHONPATH=f"{HOSTS}{os.pathsep}{ROOT}", IEE_TEST_HOST=host)
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
        assert result.stdout.startswith(expected), result.stdout + result.stderr
