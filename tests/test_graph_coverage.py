"""The dependency graph on normalisation and attention models and on detection backbones.

A representative, fast set (small resolutions, the smallest variants); every torchvision classifier
and the three detection backbones are swept by benchmarks/graph.py (results/graph.md).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torchvision
from test_graph import random_keep, randomise_bn, rel_err
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph, mask_model, prune_model, register_op
from iee_deploy.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

REPRESENTATIVE = {  # name: resolution
    "convnext_tiny": 32,  # LayerNorm2d: F.layer_norm over a channels-last permute; layer scale
    "swin_t": 32,  # channels-last nn.LayerNorm, shifted-window attention (heads), patch merging
    "swin_v2_t": 32,  # + cosine attention and the relative position bias MLP (its hidden layer, one output per head)
    "regnet_x_400mf": 32,  # grouped convs
    "efficientnet_b1": 32,  # MBConv, squeeze-excitation
    "googlenet": 32,  # inception branches concatenated
    "mnasnet0_5": 32,
}

DETECTION = ("ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn")


def detection_model(name: str, size: int) -> nn.Module:
    """A torchvision detector (random weights, 3 classes) whose transform keeps `size` px inputs
    (SSDlite's is fixed at 320 px; its backbone still takes any size)."""
    builder = torchvision.models.get_model_builder(name)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": 3}
    if not name.startswith("ssd"):
        kwargs.update(min_size=size, max_size=size)
    return builder(**kwargs).eval()


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out.values()) if isinstance(out, dict) else [out]


def check_parity(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, float]:
    """Prune a random 30% of every prunable group; (pruned model, max relative error vs the masked one)."""
    g = build_dependency_graph(model, x)
    assert g.prunable_groups
    keep = random_keep(g, seed=4)
    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) == g.param_count({k: len(v) for k, v in keep.items()})
    err = max(rel_err(a, b) for a, b in zip(outputs(masked, x), outputs(pruned, x)))
    return pruned, err


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_classifier_groups_and_prunes_to_the_masked_outputs(name):
    size = REPRESENTATIVE[name]
    model = randomise_bn(build_model(name, 10, size)).eval()
    _, err = check_parity(model, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(5)))
    assert err < 1e-4


def test_vit_norms_fix_the_embedding_width_and_heads_and_mlp_widths_prune():
    """ViT (torch._assert, class token, nn.MultiheadAttention): LayerNorm pins the embedding width; each
    encoder block has two prunable groups, its 12 attention heads and its MLP's hidden channels."""
    model = randomise_bn(build_model("vit_b_32", 10, 32)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    g = build_dependency_graph(model, x)
    assert [grp.owners[0].name for grp in g.prunable_groups] == [
        f"encoder.layers.encoder_layer_{i}.{part}" for i in range(12) for part in ("self_attention", "mlp.0")]
    assert [grp.size for grp in g.prunable_groups] == [12, 3072] * 12
    _, err = check_parity(model, x)
    assert err < 1e-4


def test_detection_backbone_and_fpn_prune_with_heads_unchanged():
    det = detection_model("fasterrcnn_mobilenet_v3_large_fpn", 64)
    randomise_bn(det.backbone)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    pruned, err = check_parity(det.backbone, x)
    assert err < 1e-4
    before = [t.shape for t in outputs(det.backbone, x)]
    assert [t.shape for t in outputs(pruned, x)] == before  # the FPN levels the heads read keep their channels
    det.backbone = pruned
    with torch.no_grad():
        (result,) = det([torch.rand(3, 64, 64)])
    assert set(result) == {"boxes", "labels", "scores"}


class Cumulative(nn.Module):
    """A user module whose op (cumsum over channels) the graph does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_register_op_declares_a_whole_user_module():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), Cumulative(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.zeros(1, 3, 12, 12)
    with pytest.raises(UserError, match=r"torch.cumsum in module '1' \(Cumulative\).*register_op"):
        build_dependency_graph(model, x)
    register_op(Cumulative, "mixing")  # keep every channel it touches: the safe declaration
    try:
        g = build_dependency_graph(model, x)
    finally:
        from iee_deploy.graph.ops import _MODULES

        del _MODULES[Cumulative]
    assert [grp.id for grp in g.prunable_groups] == ["2"]  # conv 0 feeds the declared module: kept


def test_register_op_refuses_what_is_not_an_op():
    with pytest.raises(UserError, match="cannot register 42: an op is a function"):
        register_op(42, "pointwise")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="register its class, Cumulative"):
        register_op(Cumulative(), "mixing")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="torch.Tensor has no method 'no_such_method'"):
        register_op("no_such_method", "pointwise")

    class MyConv(nn.Conv2d):
        pass

    for layer in (nn.Conv2d, MyConv, nn.BatchNorm2d):  # declared weightless, their weights would never be sliced
        with pytest.raises(UserError, match="a layer with weights the graph prunes itself"):
            register_op(layer, "pointwise")

    class Scale(nn.Module):  # a per-channel parameter: declared pointwise, the graph would prune past it
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(8, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    register_op(Scale, "pointwise")
    try:
        with pytest.raises(UserError, match=r"is declared pointwise \(register_op\), but it holds parameters"):
            build_dependency_graph(nn.Sequential(nn.Conv2d(3, 8, 1), Scale(), nn.Conv2d(8, 2, 1)), torch.zeros(1, 3, 4, 4))
    finally:
        from iee_deploy.graph.ops import _MODULES

        del _MODULES[Scale]
