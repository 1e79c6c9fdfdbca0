"""ONNX Runtime, CPU execution provider: the embedded default backend.

Sessions use every graph optimisation (so Conv+BN+ReLU run fused, as in a deployed network),
the target's thread count for intra-op parallelism and one inter-op thread. Latency is the
host-clock time of `InferenceSession.run`, the call a deployed CPU application makes.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from torch import nn

from iee_deploy.errors import UserError
from profiler.backends import Backend, BackendSettings
from profiler.layers import LayerSignature
from profiler.onnx_graphs import INPUT, export_onnx, layer_input_shape, layer_onnx
from profiler.timing import Runner, host_runner


class OrtBackend(Backend):
    """Times ONNX models in ONNX Runtime sessions on the CPU."""

    name = "onnxruntime"

    def __init__(self, settings: BackendSettings) -> None:
        if settings.device != "cpu":
            raise UserError("the onnxruntime backend measures the CPU execution provider only",
                            "use --backend torch or tensorrt for a GPU target")
        if settings.precision != "fp32":
            raise UserError(f"the onnxruntime CPU backend measures fp32, not {settings.precision}", "pass --precision fp32")
        super().__init__(settings)
        self._options = ort.SessionOptions()
        self._options.intra_op_num_threads = settings.threads
        self._options.inter_op_num_threads = 1
        self._options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.log_severity_level = 3

    def versions(self) -> dict[str, str]:
        import onnx

        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "execution_provider": "CPUExecutionProvider",
                "threads": str(self.settings.threads)}

    def session(self, model_bytes: bytes) -> ort.InferenceSession:
        """An optimised CPU session for a serialized ONNX model."""
        return ort.InferenceSession(model_bytes, self._options, providers=["CPUExecutionProvider"])

    def _runner(self, model_bytes: bytes, input_shape: tuple[int, ...]) -> Runner:
        session = self.session(model_bytes)
        feed = {INPUT: np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)}
        return host_runner(lambda: session.run(None, feed), self.settings.warmup)

    def layer_runner(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Runner:
        model = layer_onnx(sig, cin, cout, batch, "fp32")
        return self._runner(model.SerializeToString(), layer_input_shape(sig, cin, batch))

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        return self._runner(export_onnx(model, input_shape, "fp32"), input_shape)
