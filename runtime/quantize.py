"""Post-training static quantization to QDQ ONNX, and the check that integer kernels are what runs.

A quantized precision (`QUANTIZED`: int8, fp8) is a float ONNX with QuantizeLinear/DequantizeLinear
pairs around every conv, linear and matmul (the QDQ format of `onnxruntime.quantization`): weights
with per-channel scales, activations with scales from calibration batches, found by one of
ONNX Runtime's calibration methods (`CALIBRATION_METHODS`, named as `CalibrationMethod` names them).
Runtimes fuse each pair into an integer kernel: ONNX Runtime's CPU provider into QLinearConv, QGemm,
QLinearMatMul...; TensorRT into the INT8 or FP8 kernels of a strongly typed network.

The QDQ types are the backend's (`QdqScheme`): ONNX Runtime on x86 runs unsigned 8-bit activations
with signed 8-bit weights (U8S8, its VNNI path); TensorRT needs symmetric signed scales (zero point
0), and FP8 E4M3 for fp8, which ONNX Runtime's quantizer calibrates only with `Distribution`.
Inputs and outputs stay float32, so a quantized session reads the same batches as an fp32 one.

Latency does not depend on the values, so the profiler's one-layer and whole networks calibrate on
a few random batches (`random_batches`); deployed engines calibrate on training images
(`iee_deploy.deploy.calibration`). `integer_kernels` reads an optimised ONNX Runtime graph and
refuses one that still runs a float conv or matmul, so an int8 table or engine never silently
times fp32 kernels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.io import atomic_path
from runtime.export import export_onnx

QUANTIZED = ("int8", "fp8")
"""Precisions whose ONNX is a QDQ graph (float I/O), built by `quantize`."""
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")
DEFAULT_METHOD = {"int8": "MinMax", "fp8": "Distribution"}
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose"})
"""ONNX Runtime's float conv / matmul kernels (a QDQ graph whose pairs fused leaves none of them)."""
INTEGER_KERNELS = frozenset({"QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger",
                             "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
"""ONNX Runtime's integer conv / matmul kernels."""
RANDOM_BATCHES = 2
"""Random calibration batches of the profiler's networks (enough for the scales; latency ignores the values)."""


@dataclass(frozen=True)
class QdqScheme:
    """How one backend wants a precision quantized: QDQ types (`onnxruntime.quantization.QuantType` names)."""

    activation: str  # "QUInt8", "QInt8" or "QFLOAT8E4M3FN"
    weight: str
    symmetric_activations: bool = False  # zero point 0 (TensorRT)
    methods: tuple[str, ...] = ("MinMax", "Entropy", "Percentile")  # calibration methods the quantizer has for it
    opset: int = 0  # the smallest opset its QuantizeLinear needs (0: the export's)

    def describe(self) -> str:
        """One line for reports: 'QDQ, QUInt8 activations, QInt8 per-channel weights'."""
        sym = " symmetric" if self.symmetric_activations else ""
        return f"QDQ, {self.activation}{sym} activations, {self.weight} per-channel weights"


def check_method(method: str, scheme: QdqScheme, precision: str) -> str:
    """The calibration method as ONNX Runtime names it (any case), or a one-line UserError listing the choices."""
    found = next((m for m in CALIBRATION_METHODS if m.lower() == method.lower()), None)
    if found is None or found not in scheme.methods:
        raise UserError(f"unknown calibration method '{method}' for {precision}"
                        if found is None else f"calibration method {found} cannot calibrate {precision}",
                        f"choose one of: {', '.join(scheme.methods)}", fields=("calibration_method",))
    return found


def random_batches(shape: Sequence[int], count: int = RANDOM_BATCHES, seed: int = 0) -> list[np.ndarray]:
    """`count` standard-normal float32 batches of `shape`: calibration data for latency-only networks."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice ('consider pre-processing') and prints histogram progress: keep the CLI's output clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def inline_constant_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose Identity nodes of initializers are initializers themselves.

    The exporter shares equal constants (the zero biases of BatchNorms folded at initialisation)
    through Identity nodes; ONNX Runtime's QDQ fusion needs a conv's bias to be an initializer.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in constants:
            copy = onnx.TensorProto()
            copy.CopyFrom(constants[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return out


def quantize(model: onnx.ModelProto | Path, out: Path, batches: Iterable[np.ndarray], scheme: QdqScheme,
             method: str = "MinMax") -> Path:
    """Quantize a float32 ONNX `model` into the QDQ ONNX `out`: per-channel weights, activations calibrated on `batches`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    proto = inline_constant_identities(onnx.load(str(model)) if isinstance(model, Path) else model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if scheme.opset > opset:
        proto = onnx.version_converter.convert_version(proto, scheme.opset)
    name = proto.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {name: np.ascontiguousarray(batch, dtype=np.float32)}

    with _quiet(), atomic_path(out) as tmp:
        quantize_static(proto, str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType[scheme.activation], weight_type=QuantType[scheme.weight],
                        calibrate_method=CalibrationMethod[method],
                        extra_options={"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True})
    return out


def quantize_proto(model: onnx.ModelProto, batches: Iterable[np.ndarray], scheme: QdqScheme) -> onnx.ModelProto:
    """`quantize` in memory (the quantizer reads and writes files)."""
    with tempfile.TemporaryDirectory() as folder:
        return onnx.load(str(quantize(model, Path(folder) / "model.qdq.onnx", batches, scheme, scheme.methods[0])))


def export_quantized(module: nn.Module, path: Path, resolution: int, scheme: QdqScheme, batches: Iterable[np.ndarray],
                     method: str) -> Path:
    """`module` exported in fp32 and quantized into the QDQ ONNX `path`, calibrated on `batches` by `method`."""
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(module, Path(folder) / "fp32.onnx", resolution, "fp32")
        return quantize(fp32, path, batches, scheme, method)


def export_session_onnx(module: nn.Module, path: Path, resolution: int, precision: str, scheme: QdqScheme | None) -> Path:
    """`module` as a session of `precision` runs it: the float export, quantized on random batches for int8/fp8.

    For latency (the profiler's whole networks): calibration on random inputs gives other scales than
    images would, not other kernels.
    """
    if precision not in QUANTIZED:
        return export_onnx(module, path, resolution, precision)
    if scheme is None:
        raise ValueError(f"{precision} needs the backend's QDQ scheme")
    return export_quantized(module, path, resolution, scheme, random_batches((1, 3, resolution, resolution)),
                            scheme.methods[0])


@dataclass(frozen=True)
class Kernels:
    """The conv / matmul kernels of an optimised ONNX Runtime graph."""

    integer: dict[str, int]  # integer op type -> count
    float_nodes: tuple[str, ...]  # names (else op types) of float conv / matmul nodes left


def kernels_of(model: onnx.ModelProto) -> Kernels:
    """Count the integer and float conv / matmul kernels of an optimised graph."""
    ops = list(model.graph.node)
    integer = Counter(n.op_type for n in ops if n.op_type in INTEGER_KERNELS)
    left = tuple(n.name or n.op_type for n in ops if n.op_type in FLOAT_KERNELS)
    return Kernels(dict(sorted(integer.items())), left)


def integer_kernels(optimised: onnx.ModelProto, where: str) -> Kernels:
    """The integer kernels of `optimised`; a one-line UserError when a float conv or matmul was not fused."""
    found = kernels_of(optimised)
    if found.float_nodes:
        more = f" and {len(found.float_nodes) - 3} more" if len(found.float_nodes) > 3 else ""
        raise UserError(f"ONNX Runtime did not fuse {where} into integer kernels: float {', '.join(found.float_nodes[:3])}"
                        f"{more} would run (an int8 latency would be an fp32 one)",
                        "use precision fp32 for this model, or a backend that quantizes these layers")
    if not found.integer:
        raise UserError(f"ONNX Runtime runs no integer kernel in {where}", "use precision fp32 for this model")
    return found
