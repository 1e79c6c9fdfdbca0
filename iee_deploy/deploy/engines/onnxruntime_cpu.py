"""ONNX Runtime on the CPU execution provider: the embedded default backend.

Build = create a session at graph optimisation level ALL with `optimized_model_filepath`, which
saves the fused, layout-transformed model (NCHWc convolutions on x86). That file is tied to this
machine's instruction set, like a TensorRT plan to its GPU, and is loaded with optimisation off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from iee_deploy.deploy.engines.base import Backend, BuildSpec, Engine, ModelSource
from iee_deploy.deploy.export import INPUT_NAME
from iee_deploy.io import atomic_path

PROVIDERS = ["CPUExecutionProvider"]


def _session_options(threads: int, level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the "hardware specific optimizations" notice is expected
    return options


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session with a fixed number of intra-op threads."""

    def __init__(self, model: Path, spec: BuildSpec) -> None:
        super().__init__(spec)
        options = _session_options(spec.threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self.session = ort.InferenceSession(str(model), options, providers=PROVIDERS)

    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {INPUT_NAME: x})[0])

    def timed_call(self, x: np.ndarray) -> Callable[[], None]:
        feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=self.spec.input_dtype)}
        session = self.session

        def call() -> None:
            session.run(None, feed)

        return call


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    artefact_suffix = ".ort.onnx"
    default_precision = "fp32"  # the CPU's native precision; --precision fp16 builds an FP16 graph

    def check_available(self) -> None:
        """onnxruntime is a core dependency; nothing to check."""

    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        target = out / f"{source.name}{self.artefact_suffix}"
        with atomic_path(target) as tmp:
            options = _session_options(spec.threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            options.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(source.onnx), options, providers=PROVIDERS)
        return target

    def load(self, artefact: Path, spec: BuildSpec) -> Engine:
        return OnnxRuntimeEngine(artefact, spec)
