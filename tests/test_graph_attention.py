"""Attention heads in the dependency graph: whole heads or head dims of nn.MultiheadAttention (ViT), of
torchvision's Swin ShiftedWindowAttention (V1, V2) and of MaxViT's attention as channel units, pruned
physically and exactly.

Small instances (64-wide, 2-4 heads, 2 blocks, 32 px) keep every test to a few seconds on one thread.
"""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_graph import randomise_bn, rel_err
from torch import nn
from torchvision.models import MaxVit, VisionTransformer
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from iee_deploy.errors import UserError
from iee_deploy.graph import DependencyGraph, build_dependency_graph, mask_model, prune_model
from iee_deploy.graph.attention import (
    PrunedMultiheadAttention,
    PrunedRelativePositionalMultiHeadAttention,
    PrunedShiftedWindowAttention,
    PrunedShiftedWindowAttentionV2,
    attention_layout,
    prune_attention,
)
from iee_deploy.structured.masks import ChannelMasks
from iee_deploy.structured.taylor import TaylorImportance

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10)
    return randomise_bn(model).eval()


def tiny_swin(v2: bool) -> nn.Module:
    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    model = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                            num_classes=10, **extra)  # type: ignore[arg-type]
    with torch.no_grad():  # torchvision initialises the bias table near zero: make every head's bias count
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape) * 0.5)
    return randomise_bn(model).eval()


def prune_and_compare(model: nn.Module, g: DependencyGraph, keep: dict[str, torch.Tensor]) -> nn.Module:
    """Prune `keep`; assert pruned == masked (<= 1e-4), different from the original, parameter count as the
    graph predicts, every layer's (cin, cout) as the graph predicts, and that ONNX Runtime runs it."""
    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    with torch.no_grad():
        original, out_masked, out_pruned = model(X), masked(X), pruned(X)
    assert rel_err(out_masked, out_pruned) < 1e-4
    assert rel_err(original, out_pruned) > 1e-3  # the removed heads mattered
    counts = {gid: len(idx) for gid, idx in keep.items()}
    assert sum(p.numel() for p in pruned.parameters()) == g.param_count(counts)
    for name, (cin, cout) in g.layer_channels(counts).items():
        layer = pruned.get_submodule(name)
        if isinstance(layer, nn.Conv2d):
            assert (layer.out_channels, layer.in_channels) == (cout, cin), name
        else:  # Linear, or nn.MultiheadAttention's q/k/v projection
            weight = layer.in_proj_weight if isinstance(layer, nn.MultiheadAttention) else layer.weight
            assert tuple(weight.shape) == (cout, cin), name
    return pruned


def onnx_matches(pruned: nn.Module, path: str) -> None:
    torch.onnx.export(pruned, (X,), path, dynamo=False, input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out_onnx,) = session.run(None, {"x": X.numpy()})
    with torch.no_grad():
        assert rel_err(pruned(X), out_onnx) < 1e-4


def attention_groups(g: DependencyGraph) -> list:
    return [grp for grp in g.groups if grp.attention]


def test_vit_whole_heads_are_units_and_prune_to_the_masked_model(tmp_path):
    model = tiny_vit()
    g = build_dependency_graph(model, X[:1])
    heads = attention_groups(g)
    assert [grp.id for grp in heads] == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    first = heads[0]
    assert first.prunable and first.size == 4
    (owner,), (consumer,), (attn,) = first.owners, first.consumers, first.attention
    # head 1: q rows 16..31, k rows 80..95, v rows 144..159 of in_proj; out_proj input columns 16..31
    assert owner.index[1].tolist() == [*range(16, 32), *range(80, 96), *range(144, 160)]
    assert consumer.name.endswith("self_attention.out_proj") and consumer.index[1].tolist() == list(range(16, 32))
    assert attn.index.shape == (4, 16)
    eager = build_dependency_graph(model, X[:1], tracer="eager")  # hooks on the module: the same groups
    assert [(grp.id, grp.size, grp.prunable) for grp in eager.groups] == [(grp.id, grp.size, grp.prunable)
                                                                           for grp in g.groups]
    # the embedding width is LayerNorm-ed: kept; the MLP widths stay prunable
    assert {grp.id for grp in g.prunable_groups} == {*(grp.id for grp in heads),
                                                     *(f"encoder.layers.encoder_layer_{i}.mlp.0" for i in range(2))}
    keep = {heads[0].id: torch.tensor([1, 3]), heads[1].id: torch.tensor([0, 1, 2])}
    pruned = prune_and_compare(model, g, keep)
    attention = pruned.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert type(attention) is PrunedMultiheadAttention
    assert (attention.embed_dim, attention.num_heads, attention.head_dim, attention.scale) == (64, 2, 16, 0.25)
    assert attention.in_proj_weight.shape == (96, 64) and attention.out_proj.in_features == 32
    assert pruned.get_submodule("encoder.layers.encoder_layer_1.self_attention").num_heads == 3
    onnx_matches(pruned, str(tmp_path / "vit.onnx"))


def test_vit_head_dims_prune_the_same_dims_in_every_head(tmp_path):
    model = tiny_vit()
    g = build_dependency_graph(model, X[:1], attention_units="head_dims")
    assert g.attention_units == "head_dims"
    first = attention_groups(g)[0]
    assert first.size == 16 and first.owners[0].index.shape == (16, 12)  # dim j of 4 heads in q, k and v
    assert first.consumers[0].index[2].tolist() == [2, 18, 34, 50]
    dims = torch.tensor([0, 3, 4, 9, 15])
    pruned = prune_and_compare(model, g, {first.id: dims})
    attention = pruned.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert (attention.num_heads, attention.head_dim, attention.scale) == (4, 5, 0.25)  # the unpruned 16 ** -0.5
    assert attention.in_proj_weight.shape == (60, 64)
    onnx_matches(pruned, str(tmp_path / "vit_dims.onnx"))


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_swin_heads_prune_with_their_bias_tables(v2, tmp_path):
    model = tiny_swin(v2)
    g = build_dependency_graph(model, X[:1])
    heads = attention_groups(g)
    assert [grp.id for grp in heads] == [f"features.{s}.{b}.attn.qkv" for s in (1, 3) for b in (0, 1)]
    assert [grp.size for grp in heads] == [2, 2, 4, 4]
    assert all(grp.prunable for grp in heads)
    if v2:  # the bias MLP's last layer has one output per head: it goes with the head
        assert [r.name for r in heads[2].owners] == ["features.3.0.attn.qkv", "features.3.0.attn.cpb_mlp.2"]
        assert "features.3.0.attn.cpb_mlp.0" in {grp.id for grp in g.prunable_groups}  # its hidden width too
    keep = {heads[0].id: torch.tensor([1]), heads[2].id: torch.tensor([0, 2, 3])}
    pruned = prune_and_compare(model, g, keep)
    attn = pruned.get_submodule("features.3.0.attn")
    assert type(attn) is (PrunedShiftedWindowAttentionV2 if v2 else PrunedShiftedWindowAttention)
    assert (attn.num_heads, attn.head_dim) == (3, 16)
    assert attn.qkv.weight.shape == (144, 64) and attn.proj.weight.shape == (64, 48)
    if v2:
        assert attn.logit_scale.shape == (3, 1, 1) and attn.cpb_mlp[2].out_features == 3
    else:
        assert attn.relative_position_bias_table.shape == (49, 3)
    assert pruned.get_submodule("features.1.1.attn").num_heads == 2  # untouched blocks keep torchvision's class
    onnx_matches(pruned, str(tmp_path / "swin.onnx"))
    again = build_dependency_graph(pruned, X[:1])  # a pruned model graphs and prunes again (iterative pruning)
    assert [grp.size for grp in attention_groups(again)] == [1, 2, 3, 4]
    prune_and_compare(pruned, again, {attention_groups(again)[2].id: torch.tensor([0, 2])})


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_swin_head_dims_prune_exactly(v2):
    """V1 keeps the unpruned softmax scale; V2's cosine attention L2-normalises q and k per head, which a
    zeroed dim does not change, so removing it is exact too."""
    model = tiny_swin(v2)
    g = build_dependency_graph(model, X[:1], attention_units="head_dims")
    groups = attention_groups(g)
    assert [grp.size for grp in groups] == [16, 16, 16, 16]
    keep = {grp.id: torch.arange(0, 16, 3) for grp in groups}
    pruned = prune_and_compare(model, g, keep)
    attn = pruned.get_submodule("features.1.0.attn")
    assert (attn.num_heads, attn.head_dim, attn.scale) == (2, 6, 0.25)


@pytest.mark.parametrize("units", ["heads", "head_dims"])
def test_maxvit_heads_prune_exactly(units, tmp_path):
    """MaxViT's einsum attention (window and grid): heads or head dims, with the per-head bias table."""
    torch.manual_seed(0)
    model = MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, block_channels=[32, 64], block_layers=[1, 1],
                   head_dim=8, stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape) * 0.5)
    model = randomise_bn(model).eval()
    g = build_dependency_graph(model, X[:1], attention_units=units)
    groups = attention_groups(g)
    assert [grp.size for grp in groups] == ([4, 4, 8, 8] if units == "heads" else [8, 8, 8, 8])
    assert all(grp.prunable for grp in groups)
    pruned = prune_and_compare(model, g, {grp.id: torch.arange(1, grp.size, 2) for grp in groups})
    attn = pruned.get_submodule(groups[2].attention[0].name)
    assert type(attn) is PrunedRelativePositionalMultiHeadAttention
    heads, dims = (4, 8) if units == "heads" else (8, 4)
    assert (attn.n_heads, attn.head_dim, attn.relative_position_bias_table.shape[1]) == (heads, dims, heads)
    if units == "heads":
        onnx_matches(pruned, str(tmp_path / "maxvit.onnx"))


def test_pruned_multihead_attention_matches_torch_on_every_option():
    """The pruned module's own forward, unpruned, computes what torch's nn.MultiheadAttention does:
    sequence-first and batch-first, masks, causal, per-head and averaged weights, unbatched input."""
    gen = torch.Generator().manual_seed(3)
    for batch_first in (False, True):
        torch.manual_seed(1)
        reference = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        ours = copy.deepcopy(reference)
        layout = attention_layout(ours)
        assert layout is not None
        prune_attention(ours, layout, np.zeros(0, dtype=np.int64))
        assert type(ours) is PrunedMultiheadAttention
        q = torch.randn(2, 5, 16, generator=gen)
        kv = torch.randn(2, 7, 16, generator=gen)
        if not batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        padding = torch.tensor([[False] * 6 + [True], [False] * 7])
        float_mask = torch.randn(5, 7, generator=gen)
        bool_mask = torch.rand(5, 7, generator=gen) > 0.8
        for kwargs in ({}, {"key_padding_mask": padding}, {"attn_mask": float_mask}, {"attn_mask": bool_mask},
                       {"average_attn_weights": False, "key_padding_mask": padding}):
            with torch.no_grad():
                expected, expected_w = reference(q, kv, kv, **kwargs)
                got, got_w = ours(q, kv, kv, **kwargs)
            assert rel_err(expected, got) < 1e-5 and rel_err(expected_w, got_w) < 1e-5, kwargs
    square = torch.randn(5, 16, generator=gen)  # unbatched, causal
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        expected, _ = reference(square, square, square, attn_mask=causal, is_causal=True)
        got, _ = ours(square, square, square, attn_mask=causal, is_causal=True)
    assert rel_err(expected, got) < 1e-5


class CrossAttention(nn.Module):
    """Attention whose returned weights are part of the output, and one with separate key width."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.self_attention = nn.MultiheadAttention(16, 4, batch_first=True)
        self.cross = nn.MultiheadAttention(16, 4, kdim=8, vdim=8, batch_first=True)
        self.memory = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        out, weights = self.self_attention(tokens, tokens, tokens)
        memory = self.memory(out)
        crossed, _ = self.cross(out, memory, memory, need_weights=False)
        return crossed, weights


def test_unsupported_attention_is_kept_whole():
    """Returned attention weights average over every head, and kdim/vdim projections are separate
    tensors: such modules keep all their channels (and the graph still builds)."""
    model = CrossAttention().eval()
    g = build_dependency_graph(model, X[:1, :, :8, :8])
    assert not attention_groups(g)
    assert "self_attention" not in g.layers and "cross" not in g.layers
    assert not any("attention" in grp.id or "cross" in grp.id for grp in g.prunable_groups)


def test_structured_state_masks_and_scores_heads():
    """ChannelMasks zeroes a masked head's q/k/v rows (nn.MultiheadAttention's in_proj_weight) and
    out_proj columns, so the masked model equals mask_model's; Taylor scores one value per head."""
    model = tiny_vit()
    g = build_dependency_graph(model, X[:1])
    groups = attention_groups(g)
    units = [torch.tensor([True, False, True, False]), torch.ones(4, dtype=torch.bool)]
    masks = ChannelMasks(model, g, groups, units)
    attention = model.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert not attention.in_proj_weight[16:32].any() and not attention.in_proj_weight[144:160].any()
    assert attention.in_proj_weight[:16].all()
    reference = mask_model(copy.deepcopy(tiny_vit()), g, {groups[0].id: torch.tensor([0, 2])})
    with torch.no_grad():
        assert rel_err(reference(X), model(X)) < 1e-6
    assert masks.total_weights()["encoder.layers.encoder_layer_0.self_attention"] == 192 * 64
    assert masks.active_weights()["encoder.layers.encoder_layer_0.self_attention"] == 96 * 64
    taylor = TaylorImportance(model, groups)
    model(X).sum().backward()
    taylor.accumulate()
    scores = taylor.average()
    assert [s.shape for s in scores] == [(4,), (4,)] and bool((scores[1] > 0).all())


def test_attention_units_are_validated():
    with pytest.raises(UserError, match="unknown attention_units 'heads_dims'.*heads, head_dims"):
        build_dependency_graph(tiny_vit(), X[:1], attention_units="heads_dims")  # type: ignore[arg-type]
