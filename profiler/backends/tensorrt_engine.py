"""TensorRT backend: one strongly typed engine per configuration, on TensorRT 10.x and 11.x.

Each configuration is a one-layer ONNX model in the table's precision (FP16 lives in the ONNX
graph itself: TensorRT 11 builds strongly typed networks only, and 10.x is asked for the same
mode), built into a static-shape engine with a timing cache shared by every build and rerun, then
timed with GPU buffers that are torch CUDA tensors on a torch stream, captured in a CUDA graph
and measured with CUDA events (`profiler.timing.time_cuda`).

TensorRT is imported lazily. It cannot be installed on this project's CI machines, so this module
is type-checked against `tensorrt-stubs` and its orchestration tested against a test double; it
has not been run on a GPU by this project.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from iee_deploy.errors import NotAvailableError
from iee_deploy.io import atomic_write
from profiler.backends import Backend, BackendSettings
from profiler.layers import LayerSignature
from profiler.onnx_graphs import export_onnx, layer_onnx
from profiler.timing import Runner, cuda_runner

if TYPE_CHECKING:
    import tensorrt as trt

INSTALL_HINT = ("install it with `pip install 'iee-deploy[tensorrt]'` (TensorRT >= 10) on a machine with an NVIDIA GPU "
                "and driver, or choose --backend torch or onnxruntime")
WORKSPACE_BYTES = 1 << 30


def require_tensorrt() -> str:
    """Return TensorRT's version, or raise a one-line NotAvailableError saying how to install it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise NotAvailableError(f"the tensorrt backend needs NVIDIA TensorRT, which cannot be imported here ({reason})",
                                INSTALL_HINT) from None
    if not hasattr(tensorrt, "Builder"):  # only `tensorrt-stubs` (type hints) is installed
        raise NotAvailableError("the tensorrt backend needs NVIDIA TensorRT, which is not installed here", INSTALL_HINT)
    return str(tensorrt.__version__)


def build_serialized_engine(onnx_model: bytes, logger: trt.ILogger, timing_cache: bytes,
                            workspace_bytes: int = WORKSPACE_BYTES) -> tuple[bytes, bytes]:
    """Build a strongly typed engine from ONNX bytes; return (serialized engine, updated timing cache).

    Strongly typed mode is requested explicitly (TensorRT 10.x) and is the only mode of 11.x, so
    no precision builder flag is used: the ONNX model's tensor types decide the precision.
    """
    import tensorrt as trt

    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def bind_io(engine: trt.ICudaEngine, context: trt.IExecutionContext, device: torch.device) -> dict[str, torch.Tensor]:
    """Allocate every I/O tensor of a static-shape engine as a torch tensor on `device` and give TensorRT its address.

    The returned tensors must stay alive while the context runs.
    """
    import tensorrt as trt

    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
              trt.int32: torch.int32, trt.int64: torch.int64, trt.int8: torch.int8, trt.bool: torch.bool}
    buffers: dict[str, torch.Tensor] = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dims = engine.get_tensor_shape(name)
        shape = tuple(int(dims[i]) for i in range(len(dims)))
        if any(d < 0 for d in shape):
            raise ValueError(f"engine tensor '{name}' has a dynamic shape {shape}; profile engines are static")
        dtype = dtypes[engine.get_tensor_dtype(name)]
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(name, shape)
            tensor = torch.randn(shape, device=device).to(dtype)
        else:
            tensor = torch.empty(shape, dtype=dtype, device=device)
        context.set_tensor_address(name, tensor.data_ptr())
        buffers[name] = tensor
    return buffers


class TensorRTBackend(Backend):
    """Builds and times one TensorRT engine per configuration on the target GPU."""

    name = "tensorrt"

    def __init__(self, settings: BackendSettings) -> None:
        self._version = require_tensorrt()
        if settings.device != "cuda" or not torch.cuda.is_available():
            raise NotAvailableError("the tensorrt backend needs an NVIDIA GPU that torch can use (CUDA)",
                                    "run on the target GPU, or choose --backend onnxruntime for the cpu target")
        import tensorrt as trt

        super().__init__(settings)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._device = torch.device("cuda")
        cache_file = settings.timing_cache
        self._cache = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self._version, "torch": torch.__version__, "cuda": str(torch.version.cuda),
                "gpu": torch.cuda.get_device_name(self._device), "mode": "strongly typed"}

    def _runner(self, onnx_model: bytes) -> Runner:
        plan, self._cache = build_serialized_engine(onnx_model, self._logger, self._cache)
        if self.settings.timing_cache is not None:
            atomic_write(self.settings.timing_cache, lambda f: f.write(self._cache), mode="wb")
        engine = self._runtime.deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        buffers = bind_io(engine, context, self._device)
        stream = torch.cuda.Stream(self._device)

        alive = (engine, context, buffers)  # held by the closure for as long as the runner lives

        def run() -> bool:
            return alive[1].execute_async_v3(stream.cuda_stream)

        return cuda_runner(run, stream, self.settings.warmup)

    def layer_runner(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Runner:
        return self._runner(layer_onnx(sig, cin, cout, batch, self.settings.precision).SerializeToString())

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        return self._runner(export_onnx(model, input_shape, self.settings.precision))


def timing_cache_path(lut_path: Path) -> Path:
    """Where a LUT's TensorRT timing cache lives: beside it, shared by reruns and --resume."""
    return lut_path.with_suffix(".trt-timing-cache")
