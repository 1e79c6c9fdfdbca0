"""Shared fixtures: CLI runner through a real subprocess, the shared data folder, and the host a test assumes.

Tests never assume the machine's hardware. A test that needs "no GPU, no TensorRT" asks for the
`cpu_host` fixture (and `run_cli(..., host="cpu")`); one that needs a GPU host asks for `gpu_host`
(a forced `torch.cuda.is_available` and a fake `tensorrt`). `IEE_TEST_HOST=gpu` (or `cpu`) runs the
whole suite, CLI subprocesses included, as if on such a host (see tests/hosts/sitecustomize.py);
`make test-gpu-host` does that.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HOSTS = ROOT / "tests" / "hosts"

_spec = importlib.util.spec_from_file_location("iee_test_hosts", HOSTS / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
hosts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosts)  # applies IEE_TEST_HOST to this pytest process too


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            host: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m iee_deploy ARGS` as a user would and capture its output.

    `host` ("cpu" or "gpu") forces the host the process sees; None keeps the suite's (`IEE_TEST_HOST`).
    """
    # HOSTS and ROOT first; an inherited PYTHONPATH stays (the GPU machine's carried wheels live in /tmp/site)
    path = [str(HOSTS), str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)), PYTHONUNBUFFERED="1")
    if host is not None:
        env["IEE_TEST_HOST"] = host
    return subprocess.run([sys.executable, "-m", "iee_deploy", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


def run_cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """`run_cli` in this process, through click's runner: the same command code without a new interpreter's
    seconds of imports, for a command's many one-line refusals (each such test keeps one real `run_cli`).

    An exception that escapes the command is put on stderr as its traceback, so `assert_user_error` fails on it
    as it would on a subprocess. The host is this process's (the `cpu_host` or `gpu_host` fixture, or the suite's).
    """
    import traceback

    from click.testing import CliRunner

    from iee_deploy.cli import main

    result = CliRunner().invoke(main, list(args))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["iee-deploy", *args], result.exit_code, result.stdout, stderr)


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def one_thread():
    """One intra-op thread: exact, and many times faster than two on a shared, busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    root = SHARED / "data"
    if not (root / "FashionMNIST" / "raw").is_dir():
        pytest.skip("../shared/data/FashionMNIST is not beside this checkout")
    return root


@pytest.fixture
def cpu_host(monkeypatch):
    """This process sees no CUDA device and no TensorRT, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def gpu_host(monkeypatch):
    """This process sees one CUDA device and an importable (fake) TensorRT; nothing runs on them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: hosts.FAKE_GPU)
    monkeypatch.syspath_prepend(str(hosts.FAKE_MODULES))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
