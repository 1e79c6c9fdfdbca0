"""Backends: ONNX Runtime and torch on this CPU for real; CUDA and TensorRT orchestration against doubles.

No GPU or TensorRT can exist on this machine, so the CUDA timing loop and the TensorRT engine
build are checked against small stand-ins for `torch.cuda` and `tensorrt` (in addition to mypy,
which checks the TensorRT backend against `tensorrt-stubs`).
"""

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from iee_deploy.errors import NotAvailableError
from iee_deploy.models import build_model
from profiler.backends import BackendSettings, choose_backend, make_backend, settings_for
from profiler.backends import tensorrt_engine as trt_backend
from profiler.layers import enumerate_layers
from profiler.targets import load_target
from profiler.timing import Timing, cuda_runner, host_runner, interleaved

ROOT = Path(__file__).resolve().parents[1]
CPU = BackendSettings(device="cpu", precision="fp32", threads=1, warmup=1, repeats=3, network_repeats=3)


def test_timing_statistics_exact():
    t = Timing.from_samples([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (t.median_ms, t.iqr_ms, t.min_ms, t.runs) == (3.0, 2.0, 1.0, 5)
    assert (t.value("median"), t.value("min")) == (3.0, 1.0)
    calls = []
    samples = host_runner(lambda: calls.append("run"), warmup=2)(3)
    assert calls == ["run"] * 5 and len(samples) == 3 and all(s >= 0 for s in samples)


def test_whole_networks_are_timed_interleaved():
    order = []
    runner = lambda name: lambda n: order.extend([name] * n) or [float(len(order))] * n  # noqa: E731
    a, b = interleaved([runner("a"), runner("b")], repeats=6, rounds=3)
    assert order == ["a", "a", "b", "b"] * 3
    assert (a.runs, b.runs, a.median_ms, b.median_ms) == (6, 6, 6.0, 8.0)


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_cpu_backends_time_layers_and_networks(name):
    backend = make_backend(name, CPU)
    model = build_model("resnet20", 10)
    sig = enumerate_layers(model, (1, 3, 32, 32))["layer3.0.conv2"]
    small, large = backend.time_layer(sig, 8, 8, 1), backend.time_layer(sig, 64, 64, 1)
    assert 0 < small.min_ms <= small.median_ms and small.runs == 3
    assert large.min_ms > small.min_ms  # 64x more work
    whole = backend.time_model(model, (1, 3, 32, 32))
    assert whole.median_ms > large.min_ms and whole.runs == 3
    assert backend.versions()[name] == (__import__(name).__version__)


def test_default_backend_and_unavailable_devices():
    cpu = load_target("cpu")
    assert choose_backend(cpu, settings_for(cpu)).name == "onnxruntime"
    gpu = settings_for(load_target("h100"))
    assert (gpu.device, gpu.precision) == ("cuda", "fp16")
    with pytest.raises(NotAvailableError, match="needs CUDA"):
        make_backend("torch", gpu)
    with pytest.raises(NotAvailableError, match="no backend of target 'h100' can run here"):
        choose_backend(load_target("h100"), gpu)
    with pytest.raises(Exception, match="CPU execution provider only"):
        make_backend("onnxruntime", gpu)


def test_tensorrt_missing_gives_install_hint():
    with pytest.raises(NotAvailableError) as err:
        make_backend("tensorrt", settings_for(load_target("h100")))
    assert "pip install 'iee-deploy[tensorrt]'" in str(err.value) and "\n" not in str(err.value)


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


def test_cuda_runner_warms_up_captures_a_graph_and_times_each_replay():
    log = []
    runner = cuda_runner(lambda: log.append("run"), FakeStream(), warmup=3, cuda=fake_cuda(log))
    assert log == ["on stream", "run", "run", "run", "capture", "run", "replay"]  # autotune, then one capture
    log.clear()
    assert runner(4) == [1.0] * 4  # CUDA events around each replay
    assert log == ["on stream"] + ["replay"] * 3 + ["replay"] * 4  # warm-up replays, then timed ones
    log.clear()
    runner = cuda_runner(lambda: log.append("run"), FakeStream(), warmup=0, cuda=fake_cuda(log, capture_fails=True))
    runner(2)
    assert log == ["on stream", "run", "capture", "run", "on stream", "run", "run"]  # plain enqueues when capture fails


class FakeTensorRT(types.ModuleType):
    """Only what TensorRT 10.x and 11.x both have; no precision builder flags (removed in 11)."""

    def __init__(self, parse_ok=True, build_ok=True):
        super().__init__("tensorrt")
        self.calls = []
        fake = self

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"+new"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def create_timing_cache(self, data):
                fake.calls.append(("cache in", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                fake.calls.append(("cache set", ignore_mismatch))
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network flags", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                return memoryview(b"plan") if build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                fake.calls.append(("parse", bytes(data)))
                return parse_ok

            def get_error(self, i):
                return "unsupported op Foo"

        self.Builder, self.OnnxParser = Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
        for name in ("float32", "float16", "bfloat16", "int32", "int64", "int8", "bool"):
            setattr(self, name, name)


def test_tensorrt_engine_build_is_strongly_typed_with_timing_cache(monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    plan, cache = trt_backend.build_serialized_engine(b"onnx", logger=None, timing_cache=b"old", workspace_bytes=123)
    assert (plan, cache) == (b"plan", b"old+new")
    assert fake.calls == [("network flags", 1 << 1), ("parse", b"onnx"), ("pool", "workspace", 123),
                          ("cache in", b"old"), ("cache set", False)]
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(parse_ok=False))
    with pytest.raises(RuntimeError, match="unsupported op Foo"):
        trt_backend.build_serialized_engine(b"onnx", None, b"")
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(build_ok=False))
    with pytest.raises(RuntimeError, match="could not build"):
        trt_backend.build_serialized_engine(b"onnx", None, b"")


def test_tensorrt_io_binding_uses_torch_tensors(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    tensors = {"input": ((2, 3, 8, 8), "float16", "in"), "output": ((2, 10), "float32", "out")}
    engine = types.SimpleNamespace(
        num_io_tensors=2, get_tensor_name=lambda i: list(tensors)[i], get_tensor_shape=lambda n: list(tensors[n][0]),
        get_tensor_dtype=lambda n: tensors[n][1], get_tensor_mode=lambda n: tensors[n][2])
    calls = []
    context = types.SimpleNamespace(set_input_shape=lambda n, s: calls.append(("shape", n, s)),
                                    set_tensor_address=lambda n, p: calls.append(("address", n, p)))
    buffers = trt_backend.bind_io(engine, context, torch.device("cpu"))  # CUDA in real use
    assert buffers["input"].dtype == torch.float16 and tuple(buffers["output"].shape) == (2, 10)
    assert calls == [("shape", "input", (2, 3, 8, 8)), ("address", "input", buffers["input"].data_ptr()),
                     ("address", "output", buffers["output"].data_ptr())]
    tensors["input"] = ((-1, 3, 8, 8), "float16", "in")
    with pytest.raises(ValueError, match="dynamic shape"):
        trt_backend.bind_io(engine, context, torch.device("cpu"))


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
