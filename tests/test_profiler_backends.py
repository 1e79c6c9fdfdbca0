"""Measuring through `runtime`: ONNX Runtime and torch on this CPU for real; CUDA and TensorRT against doubles.

No GPU or TensorRT can exist on this project's machines, so the CUDA runner and the TensorRT
engine build are checked against small stand-ins for `torch.cuda` and `tensorrt` (in addition to
mypy, which checks the TensorRT backend against `tensorrt-stubs`), and the host a test assumes is
forced (`cpu_host`, `gpu_host`), never read from the machine.
"""

import contextlib
import subprocess
import sys
import types
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from iee_deploy.errors import NotAvailableError
from iee_deploy.models import build_model
from profiler.layers import enumerate_layers
from profiler.measurer import BackendSettings, choose_measurer, make_measurer, settings_for
from profiler.targets import load_target
from runtime.backends import trt as trt_backend
from runtime.cuda import capture_graph, cuda_runner
from runtime.timing import Timing, TimingConfig, host_runner, measure

ROOT = Path(__file__).resolve().parents[1]
CPU = BackendSettings(device="cpu", precision="fp32", threads=1, warmup=1, repeats=3, network_repeats=3)


def test_timing_statistics_exact():
    t = Timing.from_samples([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (t.median_ms, t.iqr_ms, t.min_ms, t.iterations) == (3.0, 2.0, 1.0, 5)
    assert (t.value("median"), t.value("min")) == (3.0, 1.0)
    calls = []
    samples = host_runner(lambda: calls.append("run"))(3)
    assert calls == ["run"] * 3 and len(samples) == 3 and all(s >= 0 for s in samples)


def test_whole_networks_are_timed_interleaved_with_warmup_per_round():
    order = []
    runner = lambda name: lambda n: order.extend([name] * n) or [1.0] * n  # noqa: E731
    config = TimingConfig(warmup_s=0, min_iterations=6, min_seconds=0, rounds=3, warmup=1)
    timings = measure({"a": runner("a"), "b": runner("b")}, 1, config)
    # one first-call warm-up each, then per round: 1 untimed + 2 timed runs, the order alternating
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3 + ["a"] * 3 + ["b"] * 3
    assert (timings["a"].iterations, timings["b"].iterations) == (6, 6)


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_cpu_backends_time_layers_and_networks(name):
    backend = make_measurer(name, CPU)
    model = build_model("resnet20", 10)
    sig = enumerate_layers(model, (1, 3, 32, 32))["layer3.0.conv2"]
    small, large = backend.time_layer(sig, 8, 8, 1), backend.time_layer(sig, 64, 64, 1)
    assert 0 < small.min_ms <= small.median_ms and small.iterations == 3
    assert large.min_ms > small.min_ms  # 64x more work
    whole = backend.time_model(model, (1, 3, 32, 32))
    assert whole.median_ms > large.min_ms and whole.iterations == 3
    assert backend.versions()[name] == (__import__(name).__version__)


def test_default_backend_and_unavailable_devices(cpu_host):
    cpu = load_target("cpu")
    assert choose_measurer(cpu, settings_for(cpu)).name == "onnxruntime"
    gpu = settings_for(load_target("h100"))
    assert (gpu.device, gpu.precision) == ("cuda", "fp16")
    with pytest.raises(NotAvailableError, match="wrong device: the torch backend on a GPU needs an NVIDIA GPU"):
        make_measurer("torch", gpu)
    with pytest.raises(NotAvailableError, match="no backend of target 'h100' can run here"):
        choose_measurer(load_target("h100"), gpu)
    with pytest.raises(Exception, match="onnxruntime backend runs on cpu, not cuda"):
        make_measurer("onnxruntime", gpu)


def test_gpu_host_picks_the_gpu_backends(gpu_host):
    """On a (forced) GPU host the h100 target's first backend, TensorRT, is chosen; the fake cannot build."""
    gpu = settings_for(load_target("h100"))
    measurer = choose_measurer(load_target("h100"), gpu)
    assert measurer.name == "tensorrt" and measurer.versions()["gpu"] == "Fake GPU (tests)"
    assert make_measurer("torch", gpu).name == "torch"


def test_tensorrt_missing_gives_install_hint(cpu_host):
    with pytest.raises(NotAvailableError) as err:
        make_measurer("tensorrt", settings_for(load_target("h100")))
    assert "pip install .[tensorrt]" in str(err.value) and "\n" not in str(err.value)


class FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing):
        assert enable_timing
        self.at = None

    def record(self, stream):
        FakeEvent.clock += 1.0
        self.at = FakeEvent.clock

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return end.at - self.at


def fake_cuda(log, capture_fails=False):
    class Graph:
        def replay(self):
            log.append("replay")

    class Capture:
        def __init__(self, graph, stream):
            log.append("capture")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            if capture_fails:
                raise RuntimeError("operation not permitted when stream is capturing")

    class StreamContext:
        def __init__(self, stream):
            pass

        def __enter__(self):
            log.append("on stream")

        def __exit__(self, *exc):
            pass

    return types.SimpleNamespace(stream=StreamContext, CUDAGraph=Graph, graph=Capture, Event=FakeEvent)


class FakeStream:
    def synchronize(self):
        pass


def test_cuda_graph_is_captured_after_warmup_and_replays_are_timed_with_events():
    log = []
    step = capture_graph(lambda: log.append("run"), FakeStream(), warmup=3, cuda=fake_cuda(log))
    assert log == ["on stream", "run", "run", "run", "capture", "run", "replay"]  # autotune, then one capture
    log.clear()
    assert cuda_runner(step, FakeStream(), cuda=fake_cuda(log))(4) == [1.0] * 4  # CUDA events around each replay
    assert log == ["on stream"] + ["replay"] * 4
    log.clear()
    step = capture_graph(lambda: log.append("run"), FakeStream(), warmup=0, cuda=fake_cuda(log, capture_fails=True))
    cuda_runner(step, FakeStream(), cuda=fake_cuda(log))(2)
    assert log == ["on stream", "run", "capture", "run", "on stream", "run", "run"]  # plain enqueues when capture fails


def test_tensorrt_layer_engines_are_built_and_bound_like_deployed_ones(monkeypatch, tmp_path):
    """The profiler's TensorRT wiring, against the deployment tests' TensorRT double (no GPU here)."""
    from test_deploy_tensorrt import FakeStream, fake_tensorrt

    rec = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, resolution=4))  # its engine: 48 inputs -> 10 logits
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(trt_backend, "TensorRTSession", partial(trt_backend.TensorRTSession, device="cpu"))
    captures, runs = [], []
    monkeypatch.setattr(trt_backend, "capture_graph", lambda run, stream, warmup: captures.append((run, stream, warmup))
                        or run)
    monkeypatch.setattr(trt_backend, "cuda_runner", lambda step, stream: runs.append((step, stream))
                        or (lambda n: [0.5] * n))
    cache = tmp_path / "lut.trt-timing-cache"
    backend = make_measurer("tensorrt", replace(settings_for(load_target("h100"), warmup=2, repeats=3), timing_cache=cache))
    sig = enumerate_layers(build_model("resnet20", 10), (1, 3, 32, 32))["fc"]
    timing = backend.time_layer(sig, 48, 10, batch=256)
    assert (timing.median_ms, timing.iterations) == (0.5, 3)
    shape = (256, 48)
    assert rec["profile"] == ("input", shape, shape, shape)  # static batch, pinned by one profile
    assert rec["network_flags"] == 1 << 1 and "TF32" not in rec.get("cleared", [])  # strongly typed fp16
    assert rec["input_shape"] == ("input", shape) and set(rec["addresses"]) == {"input", "logits"}
    assert cache.read_bytes() == b"cache"  # the timing cache persists beside the LUT for reruns
    run, stream, warmup = captures[0]
    assert warmup == 2 and runs[0] == (run, stream)  # the captured step is what the CUDA-event runner times
    run()
    assert rec["streams"] == [stream.cuda_stream]


def test_mypy_checks_tensorrt_code_against_the_stubs(tmp_path):
    """The project's mypy config types TensorRT from tensorrt-stubs (not Any): a removed API is an error."""
    probe = tmp_path / "probe.py"
    probe.write_text("import tensorrt as trt\n\n\ndef build(logger: trt.ILogger) -> None:\n"
                     "    builder = trt.Builder(logger)\n    builder.create_network(0)\n"
                     "    builder.build_engine(None, None)  # removed in TensorRT 10\n")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
                             "--follow-imports=silent", str(probe)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"Builder" has no attribute "build_engine"' in errors[0], result.stdout
