"""ONNX Runtime, CPU execution provider: the embedded default backend.

Session options are set here only (`session_options`): the target's thread count for intra-op
parallelism, one inter-op thread, sequential execution. In-memory sessions (the profiler's
one-layer networks) use every graph optimisation (so Conv+BN+ReLU run fused, as in a deployed
network); a built artefact is the model optimised at that level once, loaded without optimising
again. Latency is the host-clock time of `InferenceSession.run`, the call a CPU application makes.

int8 is a QDQ graph (`runtime.quantize`: U8S8, per-channel weights) that the level-ALL optimiser
fuses into integer kernels (QLinearConv, QGemm, ...). Every int8 session and built artefact is
checked for it (`integer_kernels`): a conv or matmul left in float is a one-line error, never an
fp32 latency under an int8 name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from iee_deploy.errors import UserError, brief
from iee_deploy.io import atomic_path
from runtime.backends import Backend, BuildSpec, ModelSource, Session
from runtime.quantize import QUANTIZED, QdqScheme, export_session_onnx, integer_kernels
from runtime.timing import Runner, host_runner

PROVIDERS = ["CPUExecutionProvider"]


def session_options(threads: int, optimise: bool = True) -> ort.SessionOptions:
    """The one place ONNX Runtime sessions are configured (`optimise` False: the model is already optimised)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the "hardware specific optimizations" notice is expected
    return options


class OnnxRuntimeSession(Session):
    """An ONNX Runtime session with a fixed number of intra-op threads."""

    def __init__(self, model: str | bytes, spec: BuildSpec, optimise: bool) -> None:
        super().__init__(spec)
        where = f"'{model}'" if isinstance(model, str) else "the model"
        options = session_options(spec.threads, optimise)
        with tempfile.TemporaryDirectory() as folder:
            check = optimise and spec.precision in QUANTIZED
            if check:  # the graph ONNX Runtime will run, to see its kernels
                options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
            try:
                self.session = ort.InferenceSession(model, options, providers=PROVIDERS)
            except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
                raise UserError(f"ONNX Runtime cannot load {where} ({type(exc).__name__}: "
                                f"{brief(exc, 200)})", "build it again") from None
            if check:
                integer_kernels(onnx.load(options.optimized_model_filepath), f"the {spec.precision} model")
        self.input_name = self.session.get_inputs()[0].name

    def infer_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])

    def runner(self, x: np.ndarray) -> Runner:
        feed = {self.input_name: np.ascontiguousarray(x, dtype=self.spec.input_dtype)}
        session = self.session
        return host_runner(lambda: session.run(None, feed))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    devices = ("cpu",)
    artefact_suffix = ".ort.onnx"
    needs_onnx = True
    quantization = {"int8": QdqScheme("QUInt8", "QInt8")}

    def versions(self, device: str) -> dict[str, str]:
        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "execution_provider": PROVIDERS[0]}

    def session(self, source: ModelSource, spec: BuildSpec, timing_cache: Path | None = None) -> Session:
        if source.onnx is not None:
            return OnnxRuntimeSession(source.onnx if isinstance(source.onnx, bytes) else str(source.onnx), spec, True)
        if source.module is None:
            raise ValueError("a model source needs a module or an ONNX model")
        with tempfile.TemporaryDirectory() as folder:  # the session holds the model once created
            onnx_file = export_session_onnx(source.module, Path(folder) / "model.onnx", spec.resolution, spec.precision,
                                            self.qdq_scheme(spec.precision))
            return OnnxRuntimeSession(str(onnx_file), spec, True)

    def build(self, source: ModelSource, spec: BuildSpec, out: Path) -> Path:
        if not isinstance(source.onnx, Path):
            raise ValueError("the onnxruntime backend builds from an ONNX file")
        target = out / f"{source.name}{self.artefact_suffix}"
        with atomic_path(target) as tmp:
            options = session_options(spec.threads, optimise=True)
            options.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(source.onnx), options, providers=PROVIDERS)
            if spec.precision in QUANTIZED:
                integer_kernels(onnx.load(str(tmp)), f"'{source.onnx}'")
        return target

    def load(self, artefact: Path, spec: BuildSpec) -> Session:
        return OnnxRuntimeSession(str(artefact), spec, optimise=False)
