"""Patterns of timm / Hugging Face / YOLO models the dependency graph prunes exactly, one test per pattern.

Each pattern is reproduced by a tiny hand-written module (covered without timm), and, where timm is
installed, checked on a small real timm model built with random weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_graph import random_keep, randomise_bn, rel_err
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph, mask_model, prune_model
from iee_deploy.graph.channels import ChannelAnalysis, analyse
from iee_deploy.graph.layer_calls import resolve_layer_calls, row_axes
from iee_deploy.graph.trace import trace_model

pytestmark = pytest.mark.usefixtures("one_thread")


def flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for o in items for t in flat(o)]


def prunes_exactly(model: nn.Module, x: torch.Tensor, seed: int = 0) -> int:
    """Prune a random 30% of every prunable group; assert pruned == masked and the predicted parameter count.
    Returns the number of prunable groups."""
    model = randomise_bn(model).eval()
    g = build_dependency_graph(model, x)
    keep = random_keep(g, seed)
    pruned = prune_model(model, g, keep)
    masked = mask_model(copy.deepcopy(model), g, keep)
    with torch.no_grad():
        assert max(rel_err(a, b) for a, b in zip(flat(masked(x)), flat(pruned(x)), strict=True)) < 1e-4
    assert sum(p.numel() for p in pruned.parameters()) == g.param_count({k: len(v) for k, v in keep.items()})
    return len(g.prunable_groups)


def timm_model(name: str, **kwargs: object) -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def image(size: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------- a subclass calling the functional form


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: an nn.BatchNorm2d whose forward calls F.batch_norm, then an activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps))


class FunctionalLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class StdConv(nn.Conv2d):
    """Weight standardisation with a per-output gain (timm's ScaledStdConv2d): each row normalised over its inputs."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        self.gain = nn.Parameter(torch.rand(cout, 1, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, weight=self.gain.view(-1),
                         training=True, momentum=0.0, eps=1e-5).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class CenteredConv(nn.Conv2d):
    """A computed weight that mixes rows (minus the mean over output channels): no channel of it can go."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight - self.weight.mean(0, keepdim=True), self.bias, padding=1)


def test_subclass_calling_the_functional_is_that_layer():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), BatchNormAct(16), nn.Conv2d(16, 24, 3, padding=1),
                          BatchNormAct(24), nn.AdaptiveAvgPool2d(1), nn.Flatten(), FunctionalLinear(24, 12), nn.ReLU(),
                          nn.Linear(12, 10))
    g = build_dependency_graph(model, image()[:1])
    assert [(grp.owners[0].name, [b.name for b in grp.bn_layers]) for grp in g.prunable_groups] == [
        ("0", ["1"]), ("2", ["3"]), ("6", [])]
    assert "6" in g.layers and g.layers["6"].kind == "linear"
    assert prunes_exactly(model, image()) == 3


def test_weight_standardised_conv_pins_its_inputs_and_prunes_its_outputs():
    model = nn.Sequential(StdConv(3, 16, 3), nn.ReLU(), StdConv(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 1))
    g = build_dependency_graph(model, image()[:1])
    assert g.layers["2"].in_group is None  # the standardised conv's inputs (conv 0's outputs) are pinned
    assert g.layers["2"].out_group == "2"  # its outputs, and their gains, prune
    assert prunes_exactly(model, image()) == 1
    mixed = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), CenteredConv(16, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 8, 1))
    assert [grp.id for grp in build_dependency_graph(mixed, image()[:1]).prunable_groups] == []


def test_a_standardised_weight_costs_one_channel_id_not_one_per_weight():
    """The weight standardisation mixes parameters alone: its result is a constant (one fixed id, like a parameter),
    so the analysis does not follow the weight's elements (millions of ids on NFNets, seconds of unions)."""
    model = nn.Sequential(StdConv(3, 64, 3), nn.ReLU(), StdConv(64, 64, 3), nn.ReLU(), nn.Conv2d(64, 8, 1))
    coupling = analyse(resolve_layer_calls(model, trace_model(model, image()[:1])))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert coupling.canon.size < 1000 < weights  # 3 + 64 + 64 + 8 channels and a few constants; 39,000 weights


class NormedConv(nn.Conv2d):
    """Each row scaled by its norm: row by row, through a reduction the proof has no rule for (1 + the norm: a
    masked row stays zero, not 0 / 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight / (1 + self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        return F.conv2d(x, w, self.bias, padding=1)


class FlippedStdConv(nn.Conv2d):
    """A standardisation whose rows are then reversed: out row r is row rows-1-r of the parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True).reshape_as(
            self.weight)
        return F.conv2d(x, w.flip(0), self.bias, padding=1)


class VarMeanConv(nn.Conv2d):
    """Standardisation through torch.var_mean's tuple: over each row's inputs (dims 1-3) or across the rows (dim 0)."""

    def __init__(self, cin: int, cout: int, k: int, dims: tuple[int, ...] = (1, 2, 3)) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, m = torch.var_mean(self.weight, dim=self.dims, keepdim=True)
        return F.conv2d(x, (self.weight - m) / (v + 1).sqrt(), self.bias, padding=1)


def computed_weight(model: nn.Module) -> tuple[object, int, set[str], int]:
    """(trace, index of the last conv's computed weight, its per-row targets, rows) for a one-layer `model`."""
    trace = trace_model(model, image()[:1])
    conv = next(n for n in trace.nodes if n.op == "conv2d")
    weight = conv.args[1]
    rows = model.out_channels
    per_row = {name for name, p in model.named_parameters() if p.dim() >= 1 and p.shape[0] == rows}
    return trace, weight.index, per_row, rows


@pytest.mark.parametrize(("layer", "axis"), [
    (StdConv(3, 16, 3), 0),  # reshape to (1, rows, -1), batch_norm with a per-row gain, reshape back
    (CenteredConv(3, 16, 3), None),  # a mean over the rows
    (NormedConv(3, 16, 3), None),  # a row-wise reduction: not proven, checked numerically
    (FlippedStdConv(3, 16, 3), None),  # a flip along the rows
    (VarMeanConv(3, 16, 3, (1, 2, 3)), None),  # tensors in a tuple: no rule follows them (row by row here)
    (VarMeanConv(3, 16, 3, (0,)), None),  # ... nor here, where the statistics mix the rows
])
def test_row_axes_proves_weight_standardisation_row_by_row(layer: nn.Module, axis: int | None):
    assert row_axes(*computed_weight(layer)) == axis


def test_a_computed_weight_the_proof_leaves_open_is_checked_numerically():
    """NormedConv and VarMeanConv over each row are row by row through ops no rule covers: their outputs still
    prune; FlippedStdConv's and VarMeanConv's across the rows do not."""
    for layer, prunable in ((NormedConv(16, 16, 3), True), (FlippedStdConv(16, 16, 3), False),
                            (VarMeanConv(16, 16, 3), True), (VarMeanConv(16, 16, 3, (0,)), False)):
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), layer, nn.ReLU(), nn.Conv2d(16, 8, 1))
        g = build_dependency_graph(model, image()[:1])
        assert g.layers["2"].in_group is None
        assert (g.layers["2"].out_group == "2") is prunable
        prunes_exactly(model, image())


class ForeignBias(nn.Module):
    """EVA's attention: the layer's weight with a bias assembled from other parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.qkv, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 12, bias=False), nn.Linear(12, 4)
        self.q_bias = nn.Parameter(torch.rand(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(self.a(x).mean((2, 3)), self.qkv.weight, self.q_bias)
        return self.b(y)


class DynamicConv(nn.Module):
    """A conv whose weight is computed from the input (CondConv-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.route, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8 * 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        w = self.route(y.mean((0, 2, 3))).view(8, 8, 1, 1)
        return self.b(F.conv2d(y, w))


class Blur(nn.Module):
    """A fixed depthwise filter held as a buffer (timm's BlurPool2d): its channels are kept, not refused."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("filt", torch.ones(channels, 1, 3, 3) / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filt, padding=1, groups=x.shape[1])


def test_functional_layer_with_foreign_bias_fixed_filter_or_dynamic_weight_keeps_those_channels():
    g = build_dependency_graph(ForeignBias(), image()[:1])
    assert [grp.id for grp in g.prunable_groups] == ["a"]  # qkv's inputs prune, its outputs (q_bias) are kept
    assert g.layers["qkv"].out_group is None
    assert prunes_exactly(ForeignBias(), image()) == 1
    assert [grp.id for grp in build_dependency_graph(DynamicConv(), image()[:1]).prunable_groups] == []
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Blur(8), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    g = build_dependency_graph(model, image()[:1])
    assert [grp.id for grp in g.prunable_groups] == ["2"]
    assert prunes_exactly(model, image()) == 1


def test_timm_norm_act_linear_and_std_conv_models_prune_exactly():
    assert prunes_exactly(timm_model("mobilenetv3_small_050"), image()) > 10  # BatchNormAct2d
    std = timm_model("resnetv2_18", stem_type="fixed")  # StdConv2d everywhere
    assert prunes_exactly(std, image()) > 0


def test_timm_norm_act_is_one_bn_op_unless_a_child_has_weights_and_identities_leave_no_node():
    timm = pytest.importorskip("timm")
    layer = timm.layers.BatchNormAct2d(8, act_layer=nn.SiLU, drop_layer=nn.Dropout)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), layer, nn.Identity(), nn.Dropout(0.1), nn.Conv2d(8, 4, 1))
    trace = trace_model(model, image()[:1])
    assert [(n.kind, n.op, n.category) for n in trace.nodes] == [
        ("input", "input", None), ("module", "Conv2d", "conv"), ("module", "BatchNormAct2d", "bn"),
        ("module", "Conv2d", "conv"), ("output", "output", None)]
    assert [grp.id for grp in build_dependency_graph(model, image()[:1]).prunable_groups] == ["0"]
    assert prunes_exactly(model, image()) == 1
    # a PReLU with one weight per channel is not a parameter-free per-channel op: the layer is traced through
    per_channel = timm.layers.BatchNormAct2d(8, act_layer=nn.PReLU, act_kwargs={"num_parameters": 8})
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), per_channel, nn.Conv2d(8, 4, 1))
    with pytest.raises(UserError, match=r"module '1\.act' \(PReLU\)"):  # reached inside, not taken as a bn
        build_dependency_graph(model, image()[:1])


# --------------------------------------------------------------------------------- channel padding


class ChannelsLastPad(nn.Module):
    """Swin's NHWC padding: zero width on the channel dim, non-zero on H and W."""

    def __init__(self, pad_channels: int = 0) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8 + pad_channels, 4, 3)
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.a(x).permute(0, 2, 3, 1), (0, self.pad_channels, 0, 1, 0, 1))
        return self.b(y.permute(0, 3, 1, 2))


def test_zero_width_channel_pad_is_exact_and_a_real_channel_pad_pins():
    assert [grp.id for grp in build_dependency_graph(ChannelsLastPad(), image()[:1]).prunable_groups] == ["a"]
    assert prunes_exactly(ChannelsLastPad(), image()) == 1
    assert build_dependency_graph(ChannelsLastPad(2), image()[:1]).prunable_groups == []


def test_timm_swin_pads_channels_last():
    model = timm_model("swin_tiny_patch4_window7_224", img_size=40, window_size=5, embed_dim=16, depths=(1, 1),
                       num_heads=(1, 2))
    assert prunes_exactly(model, image(40)) > 0


# --------------------------------------------------------------- radix/heads reshapes and raw errors


class SplitAttention(nn.Module):
    """ResNeSt's split attention: the channels viewed as (radix, C / radix), summed and soft-maxed over radix."""

    def __init__(self, channels: int = 16, radix: int = 2) -> None:
        super().__init__()
        self.radix = radix
        self.conv = nn.Conv2d(3, channels * radix, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(channels, 8, 1), nn.Conv2d(8, channels * radix, 1)
        self.out = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, rc, h, w = x.shape
        x = x.reshape(b, self.radix, rc // self.radix, h, w)
        gap = self.fc2(F.relu(self.fc1(x.sum(1).mean((2, 3), keepdim=True))))
        attn = F.softmax(gap.view(b, self.radix, -1).unsqueeze(-1).unsqueeze(-1), dim=1)
        return self.out((x * attn).sum(1))


def test_split_attention_reshape_prunes_exactly():
    g = build_dependency_graph(SplitAttention(), image()[:1])
    assert {grp.id for grp in g.prunable_groups} == {"conv", "fc1"}
    assert prunes_exactly(SplitAttention(), image()) == 2


def test_timm_resnest_prunes_exactly():
    assert prunes_exactly(timm_model("resnest14d"), image()) > 5


def test_an_unexpected_failure_is_one_user_error_line(monkeypatch):
    def broken(self, node, args, kwargs):
        raise RuntimeError("shape '[1, 2, 64, 1, 1]' is invalid\nfor input of size 64")

    monkeypatch.setattr(ChannelAnalysis, "_movement", broken)
    with pytest.raises(UserError) as err:
        build_dependency_graph(SplitAttention(), image()[:1])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the dependency graph failed on reshape in module '<model>' (SplitAttention) "
                              "(RuntimeError: shape '[1, 2, 64, 1, 1]' is invalid)")
    assert "register_op(op, 'mixing')" in message


# ------------------------------------------------------------------ norms, constants, *_as reshapes


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: an L2 norm over space (per channel), divided by its mean over channels."""

    def __init__(self, over_channels: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.over_channels = over_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        g = x.norm(p=2, dim=(2, 3), keepdim=True)
        if self.over_channels:
            g = g / (g.mean(dim=1, keepdim=True) + 1e-6)
        return self.b(x * g)


class ShapesFromInput(nn.Module):
    """A constant made with the input's shape (EdgeNeXt's positional mask), reshape_as (LeViT) and expand_as."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.gate = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        mask = torch.zeros(y.shape[0], y.shape[2], y.shape[3]).cumsum(1)  # an unknown op on a constant
        y = y + mask.unsqueeze(1)
        y = y.flatten(2).reshape_as(y) * self.gate(x).expand_as(y)
        return self.b(y)


def test_norm_over_space_prunes_and_over_channels_pins():
    assert prunes_exactly(GlobalResponseNorm(False), image()) == 1
    assert build_dependency_graph(GlobalResponseNorm(True), image()[:1]).prunable_groups == []


def test_constants_from_the_input_shape_and_as_reshapes():
    assert [grp.id for grp in build_dependency_graph(ShapesFromInput(), image()[:1]).prunable_groups] == ["a"]
    assert prunes_exactly(ShapesFromInput(), image()) == 1


def test_timm_models_with_norms_constants_and_as_reshapes():
    assert build_dependency_graph(timm_model("convnextv2_atto"), image()[:1]).groups  # GRN: traced, channels pinned
    assert prunes_exactly(timm_model("edgenext_xx_small"), image(64)) > 0
    assert prunes_exactly(timm_model("levit_128s", img_size=64), image(64)) > 0


# ------------------------------------------------------------------------- transposed convolutions


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_conv_transpose_prunes_inputs_and_outputs(groups):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.ConvTranspose2d(8, 8 if groups == 8 else 12, 2, stride=2, groups=groups),
                          nn.ReLU(), nn.Conv2d(8 if groups == 8 else 12, 4, 1))
    g = build_dependency_graph(model, image()[:1])
    info = g.layers["3"]
    assert (info.kind, info.transposed, info.groups, info.depthwise, info.in_hw, info.out_hw) == (
        "conv", True, groups, groups == 8, (32, 32), (64, 64))
    assert prunes_exactly(model, image()) == (2 if groups == 1 else 1)  # grouped: each conv group is one unit
    keep = random_keep(g)
    pruned = prune_model(model, g, keep)
    for name, (cin, cout) in g.layer_channels({k: len(v) for k, v in keep.items()}).items():
        layer = pruned.get_submodule(name)
        assert (layer.in_channels, layer.out_channels) == (cin, cout)


def test_yolo_segmentation_model_prunes_exactly():
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    model = tasks.SegmentationModel("yolov8n-seg.yaml", verbose=False)  # a ConvTranspose2d in its proto head
    assert prunes_exactly(model, image(64)) > 0
    assert build_dependency_graph(model.eval(), image(64)[:1]).tracer == "fx"  # its *args and anchors no longer stop fx


class InPlaceWriteAndUnbind(nn.Module):
    """MViTv2 writes into a tensor in place (x[index] = y); CSATv2 unbinds its last dim."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 1)
        self.d = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        b[:, :, 0] = a[:, :6, 0] * 2
        first, second = self.d(F.relu(a)).permute(0, 2, 3, 1).unbind(-1)[:2]
        return self.c(b) + (first + second).unsqueeze(1)


def test_in_place_write_keeps_the_channels_of_both_and_unbind_of_channels_pins():
    g = build_dependency_graph(InPlaceWriteAndUnbind(), image()[:1])
    assert [grp.id for grp in g.prunable_groups] == []  # b is written into; a is indexed and feeds d; d is unbound
    assert prunes_exactly(InPlaceWriteAndUnbind(), image()) == 0


class MaxAndUnfold(nn.Module):
    """VOLO's x.max(dim) (values, indices), an elementwise torch.max, and im2col (nn.Unfold, VOLO/TNT)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(3, 6, 3, padding=1)
        self.unfold = nn.Unfold(2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        peak = a.flatten(2).max(2, keepdim=True)[0].unsqueeze(-1)  # per channel: a stays prunable
        y = self.b(torch.max(a, peak))
        cols = self.unfold(self.c(x))  # (N, 6 * 4, L): c's channels are kept
        return y.flatten(1).sum(1, keepdim=True) + cols.sum((1, 2)).unsqueeze(1)


def test_max_over_space_prunes_and_im2col_keeps_its_channels():
    g = build_dependency_graph(MaxAndUnfold(), image()[:1])
    assert [grp.id for grp in g.prunable_groups] == ["a"]
    assert prunes_exactly(MaxAndUnfold(), image()) == 1
