"""One-layer networks to time: ONNX graphs (ONNX Runtime, TensorRT) and eager modules (torch).

Whole networks are exported by `runtime.export`.

A one-layer network is the layer as the runtime executes it inside a network: a conv with its
BatchNorm folded into the bias and the ReLU fused after it (ONNX Runtime and TensorRT both fuse
Conv+BN+ReLU); a Linear is a Gemm. Building the graph with `onnx.helper` takes microseconds,
against a second per `torch.onnx.export`, which matters for tables of thousands of rows.
Weights are random: dense kernels do not skip zeros, but random values keep it honest.
A quantized layer (int8, fp8) is the fp32 graph with QDQ pairs in the backend's scheme, calibrated
on random inputs (`quantized_layer_onnx`): the runtime fuses it into its integer kernel.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from profiler.layers import LayerSignature
from runtime.export import INPUT_NAME, OPSET
from runtime.quantize import QdqScheme, quantize_proto, random_batches

INPUT, OUTPUT = INPUT_NAME, "output"
_DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}


def conv_groups(sig: LayerSignature, cin: int, cout: int) -> int:
    """Conv groups of `sig` pruned to (cin, cout): whole groups go, so both must be whole multiples of a group."""
    groups = sig.groups_for(cin)
    if sig.diagonal and (cin != groups * sig.in_per_group or cout != groups * sig.out_per_group):
        raise ValueError(f"({cin}, {cout}) is not a whole number of {sig.in_per_group}->{sig.out_per_group} conv groups")
    return groups


def layer_input_shape(sig: LayerSignature, cin: int, batch: int) -> tuple[int, ...]:
    """Input shape of a one-layer network: (batch, cin) for a Linear, (batch, cin, H, W) for a conv."""
    return (batch, cin) if sig.kind == "linear" else (batch, cin, *sig.in_hw)


def layer_onnx(sig: LayerSignature, cin: int, cout: int, batch: int, precision: str = "fp32", seed: int = 0) -> onnx.ModelProto:
    """A one-layer ONNX model of `sig` with `cin` input and `cout` output channels, static shapes."""
    np_dtype, onnx_dtype = _DTYPES[precision]
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape, dtype=np.float32) * 0.05).astype(np_dtype), name)

    if sig.kind == "linear":
        out_shape = [batch, cout]
        nodes = [helper.make_node("Gemm", [INPUT, "weight", "bias"], [OUTPUT], transB=1)]
        inits = [weight("weight", cout, cin), weight("bias", cout)]
    else:
        groups = conv_groups(sig, cin, cout)
        (ph, pw), (oh, ow) = sig.padding, sig.out_hw
        out_shape = [batch, cout, oh, ow]
        nodes = [
            helper.make_node("Conv", [INPUT, "weight", "bias"], ["conv"], kernel_shape=list(sig.kernel), strides=list(sig.stride),
                             pads=[ph, pw, ph, pw], dilations=list(sig.dilation), group=groups),
            helper.make_node("Relu", ["conv"], [OUTPUT]),
        ]
        inits = [weight("weight", cout, cin // groups, *sig.kernel), weight("bias", cout)]
    graph = helper.make_graph(nodes, sig.key, [helper.make_tensor_value_info(INPUT, onnx_dtype, list(layer_input_shape(sig, cin, batch)))],
                              [helper.make_tensor_value_info(OUTPUT, onnx_dtype, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="iee-deploy profiler")
    model.ir_version = 8  # readable by every ONNX Runtime and TensorRT parser we support
    return model


def quantized_layer_onnx(sig: LayerSignature, cin: int, cout: int, batch: int, scheme: QdqScheme) -> onnx.ModelProto:
    """The one-layer network as a QDQ graph in `scheme`: conv + ReLU (or Gemm) quantized with per-channel weights."""
    return quantize_proto(layer_onnx(sig, cin, cout, batch, "fp32"), random_batches(layer_input_shape(sig, cin, batch)),
                          scheme)


def layer_module(sig: LayerSignature, cin: int, cout: int) -> nn.Module:
    """The one-layer network as eager PyTorch runs it in a CNN: conv, BatchNorm, ReLU (no fusion); or a Linear."""
    if sig.kind == "linear":
        return nn.Linear(cin, cout)
    conv = nn.Conv2d(cin, cout, sig.kernel, sig.stride, sig.padding, sig.dilation, groups=conv_groups(sig, cin, cout),
                     bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
