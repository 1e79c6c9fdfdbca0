"""TensorRT 10.x / 11.x: a strongly typed engine from the ONNX, run with torch CUDA buffers and streams.

The profiler's one-layer engines and deployed engines are built by the same `build_plan`, bound by
the same `bind_io` and timed the same way: `execute_async_v3` on a torch stream, captured in a
CUDA graph (`runtime.cuda.capture_graph`) and timed with CUDA events (`runtime.cuda.cuda_runner`).

The precision lives in the ONNX (FP16 graphs are exported as FP16), because TensorRT 11 only builds
strongly typed networks; on 10.x the STRONGLY_TYPED creation flag asks for the same behaviour, on
11.x it is accepted and ignored. TF32 is switched off for FP32 engines so that they match PyTorch
within the FP32 tolerance. INT8 and FP8 are explicit quantization: the ONNX carries QDQ pairs
(`runtime.quantize`, symmetric scales as TensorRT requires: zero point 0; FP8 E4M3 at opset 19),
which a strongly typed network turns into INT8 / FP8 kernels with no builder precision flag and no
calibrator (both are gone in TensorRT 11). FP8 needs compute capability 8.9 or more (Ada, Hopper,
Blackwell): `check_precision` refuses it on older GPUs before anything is exported. N:M (2:4) sparse runs are built with `BuilderFlag.SPARSE_WEIGHTS`.
One optimisation profile pins the batch (min = opt = max), and a timing cache in the output folder
makes rebuilds (dense and pruned, reruns) reuse the kernel measurements.

This module is type-checked against `tensorrt-stubs` (see pyproject.toml) and tested against a test
double; TensorRT itself is imported only when the backend is used (`pip install .[tensorrt]`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from iee_deploy.errors import NotAvailableError, UserError
from iee_deploy.io import atomic_write
from runtime.backends import Backend, BuildSpec, ModelSource, Session
from runtime.cuda import capture_graph, cuda_runner, require_cuda
from runtime.quantize import QdqScheme, export_session_onnx
from runtime.timing import Runner

if TYPE_CHECKING:
    import tensorrt as trt

WORKSPACE_BYTES = 2 << 30
TIMING_CACHE = "timing.cache"
INSTALL_FIX = "pip install .[tensorrt] on a machine with an NVIDIA GPU (or choose another backend)"
FP8_CAPABILITY = (8, 9)
"""The smallest compute capability with FP8 tensor cores (Ada; Hopper is 9.0)."""


def require_tensorrt() -> str:
    """Return TensorRT's version, or raise the one-line install hint when it cannot be imported."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # absent, or the bindings without their libraries
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotAvailableError(f"the tensorrt backend needs NVIDIA TensorRT, which cannot be imported ({reason})",
                                INSTALL_FIX) from None
    if not hasattr(tensorrt, "Builder"):  # only the type stubs are installed (a namespace package)
        raise NotAvailableError("the tensorrt backend needs NVIDIA TensorRT, which is not installed here", INSTALL_FIX)
    return str(getattr(tensorrt, "__version__", "unknown"))


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    if dtype not in table:
        raise UserError(f"the TensorRT engine has an I/O tensor of type {dtype}", "export the model with fp32 or fp16 I/O")
    return table[dtype]


def _network_flags() -> int:
    """STRONGLY_TYPED where the enum still has it (10.x opt-in; 11.x always strongly typed)."""
    import tensorrt as trt

    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if strongly_typed is None else 1 << int(strongly_typed)


def build_plan(onnx: Path, input_shape: tuple[int, ...], precision: str, timing_cache: bytes,
               sparse_weights: bool = False) -> tuple[bytes, bytes]:
    """A strongly typed engine from an ONNX file whose one input is pinned to `input_shape` (min = opt = max).

    TF32 is off for FP32 engines; `sparse_weights` lets the builder pick 2:4 sparse kernels. Returns
    the serialized plan and the timing cache updated by this build (shared by the deployment
    builds and by the profiler's one-layer engines).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse '{onnx}': {errors}", "check the model's operators against TensorRT's ONNX support")
    if network.num_inputs != 1:
        raise UserError(f"'{onnx}' has {network.num_inputs} inputs, expected one", "export a single-input model")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if sparse_weights:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = builder.create_optimization_profile()
    shape = trt.Dims(list(input_shape))
    profile.set_shape(network.get_input(0).name, shape, shape, shape)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from '{onnx}' (see the TensorRT log above)")
    return bytes(memoryview(serialized)), bytes(memoryview(config.get_timing_cache().serialize()))


def bind_io(engine: trt.ICudaEngine, context: trt.IExecutionContext, input_shapes: Mapping[str, tuple[int, ...]],
            device: str | torch.device) -> dict[str, torch.Tensor]:
    """Set the input shapes, then allocate every I/O tensor as a torch tensor on `device` and give TensorRT its address.

    The returned buffers must stay alive as long as the context runs.
    """
    for name, shape in input_shapes.items():
        context.set_input_shape(name, shape)
    buffers: dict[str, torch.Tensor] = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dims = context.get_tensor_shape(name)
        shape = tuple(dims[i] for i in range(len(dims)))
        buffer = torch.empty(shape, dtype=_torch_dtype(engine.get_tensor_dtype(name)), device=device)
        context.set_tensor_address(name, buffer.data_ptr())
        buffers[name] = buffer
    return buffers


class TensorRTSession(Session):
    """A deserialized plan with one execution context, torch buffers at fixed addresses, one stream and a CUDA graph."""

    def __init__(self, plan: bytes, spec: BuildSpec, where: str = "the engine", device: str = "cuda") -> None:
        import tensorrt as trt

        super().__init__(spec)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise UserError(f"TensorRT cannot load {where} (built by another TensorRT version or for another GPU)",
                            "build the engine again on this machine")
        self._engine = engine
        self._context = engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{where} has inputs {inputs} and outputs {outputs}; one input and one output are expected",
                            "build it with iee-deploy build-engine")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.buffers = bind_io(engine, self._context, {self.input_name: spec.input_shape}, device)
        self._step: Callable[[], object] = capture_graph(self._enqueue, self.stream, spec.warmup)

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _load_input(self, x: np.ndarray) -> None:
        with torch.cuda.stream(self.stream):
            self.buffers[self.input_name].copy_(torch.from_numpy(np.ascontiguousarray(x)))

    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        self._load_input(x)
        with torch.cuda.stream(self.stream):
            self._step()
        self.stream.synchronize()
        return self.buffers[self.output_name].float().cpu().numpy()

    def runner(self, x: np.ndarray) -> Runner:
        self._load_input(x)
        self.stream.synchronize()
        return cuda_runner(self._step, self.stream)


class TensorRTBackend(Backend):
    name = "tensorrt"
    devices = ("cuda",)
    artefact_suffix = ".plan"
    needs_onnx = True
    quantization = {"int8": QdqScheme("QInt8", "QInt8", symmetric_activations=True),
                    "fp8": QdqScheme("QFLOAT8E4M3FN", "QFLOAT8E4M3FN", symmetric_activations=True,
                                     methods=("Distribution",), opset=19)}

    def check_available(self, device: str = "cuda") -> None:
        super().check_available(device)
        require_tensorrt()
        require_cuda(self.name)

    def check_precision(self, precision: str, device: str) -> None:
        super().check_precision(precision, device)
        if precision == "fp8":
            self.check_available(device)
            capability = tuple(torch.cuda.get_device_capability(0))
            if capability < FP8_CAPABILITY:
                raise UserError(f"fp8 needs a GPU of compute capability {'.'.join(map(str, FP8_CAPABILITY))} or more; "
                                f"{torch.cuda.get_device_name(0)} has {'.'.join(map(str, capability))}",
                                "choose precision int8 (or fp16) on this GPU", fields=("precision",))

    def versions(self, device: str) -> dict[str, str]:
        return {"tensorrt": require_tensorrt(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
                "gpu": torch.cuda.get_device_name(0), "mode": "strongly typed"}

    def session(self, source: ModelSource, spec: BuildSpec, timing_cache: Path | None = None) -> Session:
        self.check_available(spec.device)
        cache = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
        with tempfile.TemporaryDirectory() as folder:
            onnx = Path(folder) / "model.onnx"
            if isinstance(source.onnx, bytes):
                onnx.write_bytes(source.onnx)
            elif isinstance(source.onnx, Path):
                onnx = source.onnx
            elif source.module is not None:
                onnx = export_session_onnx(source.module, onnx, spec.resolution, spec.precision,
                                           self.qdq_scheme(spec.precision))
            else:
                raise ValueError("a model source needs a module or an ONNX model")
            plan, cache = build_plan(onnx, spec.input_shape, spec.precision, cache, spec.sparse_weights)
        if timing_cache is not None:
            atomic_write(timing_cache, lambda f: f.write(cache), mode="wb")
        return TensorRTSession(plan, spec)

    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        if not isinstance(source.onnx, Path):
            raise ValueError("the tensorrt backend builds from an ONNX file")
        cache_file = out / TIMING_CACHE
        serialized, timing_cache = build_plan(source.onnx, spec.input_shape, spec.precision,
                                              cache_file.read_bytes() if cache_file.is_file() else b"",
                                              spec.sparse_weights)
        plan = out / f"{source.name}{self.artefact_suffix}"
        atomic_write(plan, lambda f: f.write(serialized), mode="wb")
        atomic_write(cache_file, lambda f: f.write(timing_cache), mode="wb")
        return plan

    def load(self, artefact: Path, spec: BuildSpec) -> Session:
        self.check_available(spec.device)
        return TensorRTSession(artefact.read_bytes(), spec, f"'{artefact}'")
