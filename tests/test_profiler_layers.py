"""Layer signatures, the channel grid and the one-layer networks that get timed."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from iee_deploy.models import build_model
from profiler.layers import (
    LayerSignature,
    channel_grid,
    enumerate_layers,
    grid_points,
    plan_rows,
    unique_signatures,
)
from profiler.onnx_graphs import export_onnx, layer_input_shape, layer_onnx


def test_resnet20_signatures_are_deduplicated_with_fixed_ends():
    layers = enumerate_layers(build_model("resnet20", 10), (1, 3, 32, 32))
    assert len(layers) == 1 + 18 + 2 + 1  # stem, 18 block convs, 2 shortcuts, fc
    stem, fc = layers["conv1"], layers["fc"]
    assert (stem.cin, stem.cout, stem.fixed_cin, stem.fixed_cout) == (3, 16, True, False)
    assert (fc.kind, fc.cin, fc.cout, fc.fixed_cin, fc.fixed_cout) == ("linear", 64, 10, False, True)
    down = layers["layer2.0.conv1"]
    assert (down.kernel, down.stride, down.padding, down.in_hw, down.out_hw) == ((3, 3), (2, 2), (1, 1), (32, 32), (16, 16))
    assert layers["layer2.0.shortcut.0"].key == "conv_k1x1_s2x2_p0x0_d1x1_dense_32x32_16x32"
    unique = unique_signatures(layers)
    assert len(unique) == 9  # stem, 3 stages of repeated 3x3, 2 strided 3x3, 2 shortcuts, fc
    assert layers["layer1.0.conv1"] is not layers["layer1.2.conv2"] and \
        layers["layer1.0.conv1"].key == layers["layer1.2.conv2"].key
    assert LayerSignature.from_dict(down.to_dict()) == down


def test_depthwise_and_grouped_modes():
    layers = enumerate_layers(build_model("mobilenet_v1", 10), (1, 3, 64, 64))
    dw = layers["features.1.depthwise.0"]
    assert (dw.groups_mode, dw.groups, dw.cin, dw.cout, dw.diagonal) == ("depthwise", 32, 32, 32, True)
    assert grid_points(dw, 8, 8) == [(8, 8), (16, 16), (24, 24), (32, 32)]
    # grouped: whole conv groups (2 inputs -> 3 outputs each) go, so cout follows cin
    inner = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 12, 3, groups=4), nn.ReLU())  # neither model input nor output
    grouped = enumerate_layers(inner, (1, 8, 10, 10))["1"]
    assert (grouped.groups_mode, grouped.groups, grouped.in_per_group, grouped.out_per_group) == ("grouped", 4, 2, 3)
    assert grid_points(grouped, 3, 2) == [(2, 3), (4, 6), (6, 9), (8, 12)]
    assert grid_points(grouped, 4, 4, align=4) == [(4, 6), (8, 12)]


def test_diagonal_grids_match_how_the_dependency_graph_prunes():
    """Grouped (RegNet) and depthwise (MobileNet) convs: every pruned (cin, cout) lies on the LUT's diagonal."""
    from iee_deploy.graph import build_dependency_graph

    for name in ("regnet_y_400mf", "mobilenet_v2"):
        model = build_model(name, 10).eval()
        layers = enumerate_layers(model, (1, 3, 32, 32))
        graph = build_dependency_graph(model, torch.randn(1, 3, 32, 32))
        keep = {g.id: max(g.min_keep, g.size // 3) for g in graph.groups if g.prunable}
        diagonal = [n for n, s in layers.items() if s.diagonal]
        assert diagonal
        for layer, (cin, cout) in graph.layer_channels(keep).items():
            sig = layers[layer]
            if sig.diagonal:
                assert cout == sig.groups_for(cin) * sig.out_per_group, (name, layer, cin, cout)


def test_channel_grid_exact():
    assert channel_grid(64, 32, 8) == (8, 32, 64)
    assert channel_grid(100, 32, 8) == (8, 32, 64, 96, 100)
    assert channel_grid(3, 32, 8) == (3,)
    assert channel_grid(55, 16, 8, multiple=5) == (10, 20, 35, 50, 55)
    with pytest.raises(ValueError):
        channel_grid(64, 0, 8)


def test_plan_covers_each_signature_grid_once():
    layers = enumerate_layers(build_model("resnet20", 10), (1, 3, 32, 32))
    rows = plan_rows(unique_signatures(layers).values(), 16, 8)
    # grids (step 16, min 8): 16 -> 8,16; 32 -> 8,16,32; 64 -> 8,16,32,48,64; fixed ends have one point
    stem, c16, c16_32, c32, c32_64, c64, fc = 2, 2 * 2, 2 * 3, 3 * 3, 3 * 5, 5 * 5, 5
    assert len(rows) == len(set(rows)) == stem + c16 + 2 * c16_32 + c32 + 2 * c32_64 + c64 + fc
    assert [r for r in rows if r[0] == "linear_64x10_fixout"] == [("linear_64x10_fixout", c, 10) for c in (8, 16, 32, 48, 64)]
    aligned = plan_rows(unique_signatures(layers).values(), 32, 8, align=16)  # points rounded up to 16: 16, 32, 64
    assert {c for _, c, _ in aligned if c != 3} == {16, 32, 64}


@pytest.mark.parametrize("kind", ["dense", "depthwise", "grouped", "linear", "strided"])
def test_one_layer_onnx_matches_torch(kind):
    modules = {"dense": nn.Conv2d(16, 24, 3, 1, 1), "depthwise": nn.Conv2d(16, 16, 3, 1, 1, groups=16),
               "grouped": nn.Conv2d(16, 24, 3, 1, 1, groups=4),
               "strided": nn.Conv2d(16, 24, 1, 2, 0), "linear": nn.Linear(16, 24)}
    module = modules[kind]
    shape = (2, 16) if kind == "linear" else (2, 16, 9, 9)
    sig = enumerate_layers(nn.Sequential(module), shape)["0"]
    cout = 16 if kind == "depthwise" else 24
    model = layer_onnx(sig, 16, cout, batch=2)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(layer_input_shape(sig, 16, 2), dtype=np.float32)
    (got,) = session.run(None, {"input": x})
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    with torch.no_grad():
        module.weight.copy_(weights["weight"])
        module.bias.copy_(weights["bias"])
        expected = module(torch.from_numpy(x))
    if kind != "linear":
        expected = torch.relu(expected)  # conv runs with its (folded) BN bias and the fused ReLU
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_fp16_models_for_strongly_typed_engines():
    sig = enumerate_layers(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)), (1, 8, 6, 6))["0"]
    layer = layer_onnx(sig, 8, 16, batch=4, precision="fp16")
    assert layer.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert {t.data_type for t in layer.graph.initializer} == {TensorProto.FLOAT16}
    whole = onnx.load_from_string(export_onnx(build_model("resnet20", 10), (2, 3, 32, 32), "fp16"))
    assert whole.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert [d.dim_value for d in whole.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]
