"""The TensorRT backend's orchestration against a test double of the `tensorrt` module.

TensorRT cannot be installed here (no GPU; see ../shared/notes/tensorrt.md), so a fake module
records what the backend asks of it: network creation flags, builder flags, optimisation profile
shapes, timing cache, tensor shapes and addresses, and the stream handle. The fake execution
context reads the input from the address it was given and writes x @ W to the output address,
so the test also proves that the addresses point at the buffers the engine reads and writes.
mypy checks the same module against tensorrt-stubs (pyproject.toml).
"""

import contextlib
import ctypes
import sys
import types

import numpy as np
import pytest
import torch

from runtime.backends import BuildSpec, ModelSource, get_backend
from runtime.backends import trt as trt_backend
from runtime.backends.trt import TIMING_CACHE, TensorRTSession, require_tensorrt

CLASSES = 10


def _array_at(address, shape):
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(address)).reshape(shape)


def fake_tensorrt(rec, strongly_typed=True, resolution=8):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0-fake"
    creation = types.SimpleNamespace(STRONGLY_TYPED=1) if strongly_typed else types.SimpleNamespace()
    trt.NetworkDefinitionCreationFlag = creation
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32", SPARSE_WEIGHTS="SPARSE_WEIGHTS", FP16="FP16")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", BF16="BF16", INT32="INT32", INT64="INT64",
                                         INT8="INT8", UINT8="UINT8", BOOL="BOOL")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    weights = np.random.default_rng(0).standard_normal((3 * resolution * resolution, CLASSES)).astype(np.float32)
    rec["weights"] = weights

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            rec["logger"] = severity

    class Dims(tuple):
        def __new__(cls, shape):
            return tuple.__new__(cls, shape)

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return Tensor("input")

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec["parsed"] = path
            return True

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return b"cache" + self.data[:5]

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            rec["profile"] = (name, tuple(mn), tuple(opt), tuple(mx))

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            rec["pool"] = (pool, size)

        def set_flag(self, flag):
            rec.setdefault("set", []).append(flag)

        def clear_flag(self, flag):
            rec.setdefault("cleared", []).append(flag)

        def add_optimization_profile(self, profile):
            rec["profiles_added"] = rec.get("profiles_added", 0) + 1

        def create_timing_cache(self, data):
            rec["cache_in"] = bytes(data)
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN-BYTES"

    class Context:
        def __init__(self):
            self.shapes = {}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            rec["input_shape"] = (name, tuple(shape))
            return True

        def get_tensor_shape(self, name):
            return Dims(self.shapes["input"] if name == "input" else (self.shapes["input"][0], CLASSES))

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            rec.setdefault("addresses", {})[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            rec.setdefault("streams", []).append(stream_handle)
            x = _array_at(self.addresses["input"], self.shapes["input"])
            out = _array_at(self.addresses["logits"], (self.shapes["input"][0], CLASSES))
            out[:] = x.reshape(len(x), -1) @ weights
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, index):
            return ["input", "logits"][index]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            rec["deserialized"] = bytes(data)
            return Engine()

    for cls in (Logger, Dims, OnnxParser, Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


@pytest.fixture
def source(tmp_path):
    onnx = tmp_path / "pruned.onnx"
    onnx.write_bytes(b"onnx")
    return ModelSource("pruned", torch.nn.Identity(), onnx)


@pytest.mark.parametrize("precision,sparse", [("fp16", True), ("fp32", False)])
def test_build_flags_profile_and_timing_cache(monkeypatch, tmp_path, source, precision, sparse):
    rec = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    assert require_tensorrt() == "10.99.0-fake"
    spec = BuildSpec(batch=4, resolution=8, precision=precision, threads=1, sparse_weights=sparse)
    plan = get_backend("tensorrt").build(source, spec, tmp_path)
    assert plan == tmp_path / "pruned.plan" and plan.read_bytes() == b"PLAN-BYTES"
    assert rec["parsed"] == str(source.onnx)
    assert rec["network_flags"] == 1 << 1  # strongly typed: precision comes from the ONNX
    assert rec["profile"] == ("input", (4, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8)) and rec["profiles_added"] == 1
    assert rec["pool"][0] == "WORKSPACE" and rec["pool"][1] > 0
    assert rec.get("set", []) == (["SPARSE_WEIGHTS"] if sparse else [])
    assert rec.get("cleared", []) == ([] if precision == "fp16" else ["TF32"])
    assert "FP16" not in rec.get("set", [])  # weak typing flags are gone in TensorRT 11
    assert rec["cache_in"] == b"" and (tmp_path / TIMING_CACHE).read_bytes() == b"cache"
    get_backend("tensorrt").build(source, spec, tmp_path)  # a rebuild starts from the saved timing cache
    assert rec["cache_in"] == b"cache"


def test_tensorrt_11_without_strongly_typed_flag(monkeypatch, tmp_path, source):
    rec = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, strongly_typed=False))
    get_backend("tensorrt").build(source, BuildSpec(1, 8, "fp16", 1), tmp_path)
    assert rec["network_flags"] == 0


class FakeStream:
    def __init__(self, device=None):
        self.cuda_stream = 0xC0FFEE
        self.synchronized = 0

    def synchronize(self):
        self.synchronized += 1


def test_runtime_buffers_addresses_stream_and_results(monkeypatch, tmp_path):
    rec = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    captured = []
    monkeypatch.setattr(trt_backend, "capture_graph", lambda run, stream, warmup: captured.append(warmup) or run)
    engine = TensorRTSession(b"PLAN-BYTES", BuildSpec(batch=2, resolution=8, precision="fp32", threads=1), device="cpu")
    assert captured == [3]  # one CUDA graph, captured after the spec's warm-up runs
    assert rec["deserialized"] == b"PLAN-BYTES"
    assert rec["input_shape"] == ("input", (2, 3, 8, 8))
    assert rec["addresses"] == {name: buf.data_ptr() for name, buf in engine.buffers.items()}
    assert engine.buffers["logits"].shape == (2, CLASSES) and engine.buffers["input"].dtype == torch.float32
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)  # 2 + 2 + 1 padded
    out = engine.run(x)
    np.testing.assert_allclose(out, x.reshape(5, -1) @ rec["weights"], rtol=1e-5, atol=1e-5)
    assert rec["streams"] == [0xC0FFEE] * 3 and engine.stream.synchronized == 3
    timed = []
    monkeypatch.setattr(trt_backend, "cuda_runner", lambda step, stream: timed.append(stream) or (lambda n: [step() for _ in range(n)]))
    engine.runner(x[:2])(1)  # timed with CUDA events on the engine's stream
    assert timed == [engine.stream] and len(rec["streams"]) == 4
