"""Acceptance of the dependency graph on the whole zoo: physical pruning == masking, counts, ONNX."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from iee_deploy.graph import DependencyGraph, build_dependency_graph, mask_model, prune_model
from iee_deploy.models import build_model, model_spec

ZOO = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
       "densenet121", "vgg16_bn", "shufflenet_v2_x1_0", "mobilenet_v1", "wrn22_2", "resnet20", "resnet56"]
"""The zoo's first 14 models at two resolutions with ONNX export; every other torchvision classifier is
covered by benchmarks/graph.py and a representative set by test_graph_coverage.py."""
REMOVE = 0.3
SMALL = {"vgg16_bn": 224}
"""Test resolution where 32 px does not do: VGG's AdaptiveAvgPool2d(7) exports to ONNX only when it
pools a 7x7-multiple map (at 32 px it would upsample 1x1 to 7x7)."""


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN and LayerNorm affine parameters and BN statistics, and no all-zero weights (ViT's
    head) or 1e-6 layer scales (ConvNeXt), so that a wrong channel shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and (not p.any() or "layer_scale" in name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                if m.bias is not None:  # LayerNorm(bias=False)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
            if isinstance(m, nn.modules.batchnorm._NormBase):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def random_keep(g: DependencyGraph, seed: int = 0) -> dict[str, torch.Tensor]:
    """Remove a random 30% of the units of every prunable group (at least min_keep stay)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for group in g.prunable_groups:
        count = max(group.min_keep, group.size - round(REMOVE * group.size))
        keep[group.id] = torch.randperm(group.size, generator=gen)[:count].sort().values
    return keep


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / a.abs().max())


def check_layer_shapes(pruned: nn.Module, g: DependencyGraph, counts: dict[str, int]) -> None:
    """Every pruned conv/linear has the (cin, cout, groups) that the graph predicts from counts alone."""
    for name, (cin, cout) in g.layer_channels(counts).items():
        layer = pruned.get_submodule(name)
        if isinstance(layer, nn.Linear):
            assert (layer.in_features, layer.out_features) == (cin, cout), name
        else:
            assert isinstance(layer, nn.Conv2d)
            assert (layer.in_channels, layer.out_channels, layer.groups) == (cin, cout, g.layers[name].groups_for(cin))


@pytest.mark.parametrize("name", ZOO)
def test_pruned_equals_masked_counts_match_and_onnx_runs(name, tmp_path):
    size = SMALL.get(name, 32)
    model = randomise_bn(build_model(name, 10, size)).eval()
    batch = 2 if size <= 64 else 1
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    g = build_dependency_graph(model, x[:1])
    assert g.prunable_groups, name
    keep = random_keep(g)
    counts = {gid: len(idx) for gid, idx in keep.items()}

    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    with torch.no_grad():
        out_masked, out_pruned = masked(x), pruned(x)
    assert rel_err(out_masked, out_pruned) < 1e-4

    n_pruned = sum(p.numel() for p in pruned.parameters())
    assert n_pruned == g.param_count(counts)
    assert n_pruned < sum(p.numel() for p in model.parameters())
    check_layer_shapes(pruned, g, counts)

    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(pruned, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out_onnx,) = session.run(None, {"x": x.numpy()})
    assert rel_err(out_pruned, out_onnx) < 1e-4


@pytest.mark.parametrize("name", ZOO)
def test_graph_is_correct_at_native_resolution(name):
    """Graphs at the models' own input size (224 px for torchvision) prune to the masked outputs."""
    size = model_spec(name).native_resolution
    model = randomise_bn(build_model(name, 10, size)).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    g = build_dependency_graph(model, x)
    assert g.tracer == "fx"  # every zoo model is fx-traceable; the eager fallback is for other models
    keep = random_keep(g, seed=3)
    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    with torch.no_grad():
        assert rel_err(masked(x), pruned(x)) < 1e-4
    assert sum(p.numel() for p in pruned.parameters()) == g.param_count({k: len(v) for k, v in keep.items()})
