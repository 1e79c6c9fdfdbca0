"""TensorRT backend: one strongly typed engine per configuration, on TensorRT 10.x and 11.x.

Each configuration is a one-layer ONNX model in the table's precision (FP16 lives in the ONNX
graph itself: TensorRT 11 builds strongly typed networks only, and 10.x is asked for the same
mode), built into a static-shape engine by the deployment's builder
(`iee_deploy.deploy.engines.tensorrt_gpu.build_plan`, so tables and deployed engines are built
alike) with one timing cache shared by every build and rerun, then timed with GPU buffers that
are torch CUDA tensors on a torch stream, captured in a CUDA graph and measured with CUDA events
(`profiler.timing.cuda_runner`).

TensorRT is imported lazily. It cannot be installed on this project's CI machines, so this module
is type-checked against `tensorrt-stubs` and its pieces tested against test doubles; it has not
been run on a GPU by this project.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from iee_deploy.deploy.engines.tensorrt_gpu import bind_io, build_plan, require_tensorrt
from iee_deploy.deploy.export import export_onnx
from iee_deploy.errors import NotAvailableError
from iee_deploy.io import atomic_write
from profiler.backends import Backend, BackendSettings
from profiler.layers import LayerSignature
from profiler.onnx_graphs import INPUT, layer_input_shape, layer_onnx
from profiler.timing import Runner, cuda_runner


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
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._device = torch.device("cuda")
        cache_file = settings.timing_cache
        self._cache = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self._version, "torch": torch.__version__, "cuda": str(torch.version.cuda),
                "gpu": torch.cuda.get_device_name(self._device), "mode": "strongly typed"}

    def _runner(self, onnx: Path, input_shape: tuple[int, ...]) -> Runner:
        plan, self._cache = build_plan(onnx, input_shape, self.settings.precision, self._cache)
        if self.settings.timing_cache is not None:
            atomic_write(self.settings.timing_cache, lambda f: f.write(self._cache), mode="wb")
        engine = self._runtime.deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        buffers = bind_io(engine, context, {INPUT: input_shape}, self._device)
        stream = torch.cuda.Stream(self._device)
        alive = (engine, context, buffers)  # held by the closure for as long as the runner lives

        def run() -> bool:
            return alive[1].execute_async_v3(stream.cuda_stream)

        return cuda_runner(run, stream, self.settings.warmup)

    def layer_runner(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Runner:
        with tempfile.TemporaryDirectory() as folder:
            onnx = Path(folder) / "layer.onnx"
            onnx.write_bytes(layer_onnx(sig, cin, cout, batch, self.settings.precision).SerializeToString())
            return self._runner(onnx, layer_input_shape(sig, cin, batch))

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        with tempfile.TemporaryDirectory() as folder:
            onnx = export_onnx(model, Path(folder) / "model.onnx", input_shape[-1], self.settings.precision)
            return self._runner(onnx, input_shape)


def timing_cache_path(lut_path: Path) -> Path:
    """Where a LUT's TensorRT timing cache lives: beside it, shared by reruns and --resume."""
    return lut_path.with_suffix(".trt-timing-cache")
