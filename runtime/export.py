"""PyTorch module -> ONNX (opset 17, dynamic batch), in FP32 or with FP16 weights, activations and I/O.

The TorchScript exporter (opset 17) comes first: its graphs are what every backend here has been
checked on. Where it cannot export a model (ops it lacks, such as RMSNorm, col2im or unfold over
sizes it cannot read, timm's tensor `is_causal`), the `torch.export`-based exporter (opset
`DYNAMO_OPSET`) takes over, with the same dynamic batch, names and checks.

FP16 is put into the graph itself (a `.half()` copy is traced), because TensorRT 11 only builds
strongly typed networks: the ONNX dtypes decide the engine precision. The file is checked with
`onnx.checker` and its input/output dtypes are verified before it is used.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from iee_deploy.io import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
DYNAMO_OPSET = 18
_ONNX_DTYPES = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}


def export_onnx(model: nn.Module, path: str | Path, resolution: int, precision: str = "fp32") -> Path:
    """Export `model` (3 x resolution x resolution images -> logits) to `path` with a dynamic batch axis."""
    if precision not in _ONNX_DTYPES:
        raise ValueError(f"precision must be one of {sorted(_ONNX_DTYPES)}, got {precision!r}")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = copy.deepcopy(model).to("cpu", dtype).eval()
    example = torch.zeros(1, 3, resolution, resolution, dtype=dtype)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        try:
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
        except (RuntimeError, TypeError, torch.onnx.errors.OnnxExporterError) as first:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
                    torch.onnx.export(module, (example,), str(tmp), dynamo=True, opset_version=DYNAMO_OPSET,
                                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                                      external_data=False)
            except Exception as second:
                raise RuntimeError(f"neither ONNX exporter can export {type(model).__name__}: "
                                   f"{type(first).__name__}: {str(first)[:200]} / {type(second).__name__}: "
                                   f"{str(second)[:200]}") from None
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    for value in (*graph.graph.input, *graph.graph.output):
        found = value.type.tensor_type.elem_type
        if found != _ONNX_DTYPES[precision]:
            raise RuntimeError(f"exported {path} has {value.name} of ONNX dtype {found}, expected {precision}")
    return Path(path)
