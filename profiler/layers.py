"""Layer signatures: what a latency table measures, and the channel grid it measures them on.

Every Conv2d and Linear of a model is described by a `LayerSignature`: op kind, kernel, stride,
padding, dilation, groups mode (dense, depthwise or grouped), input H x W and its full channel
counts. Layers with equal signatures (e.g. the identical 3x3 convs of a ResNet stage) share one
set of measurements. The signatures come from one forward pass with hooks, which needs no
channel grouping; channel counts that pruning can never change (the image input of the stem, the
classifier's outputs) are marked fixed and get a one-point grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import UserError

DENSE, DEPTHWISE, GROUPED = "dense", "depthwise", "grouped"


@dataclass(frozen=True)
class LayerSignature:
    """Everything about a conv/linear layer that sets its latency, except the (cin, cout) on the grid."""

    kind: str  # "conv" or "linear"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups_mode: str  # dense, depthwise (groups = cin = cout) or grouped (1 < groups < cin)
    groups: int  # conv groups of the full layer
    in_hw: tuple[int, int]
    cin: int  # full (unpruned) channel counts: the grid's upper ends
    cout: int
    fixed_cin: bool  # True when pruning cannot change the count (model input, classifier output)
    fixed_cout: bool

    @property
    def key(self) -> str:
        """A readable identifier, e.g. `conv_k3x3_s1x1_p1x1_d1x1_dense_56x56_64x64`."""
        pair = lambda p: f"{p[0]}x{p[1]}"  # noqa: E731
        mode = f"grouped{self.groups}" if self.groups_mode == GROUPED else self.groups_mode  # the full layer's groups
        fixed = ("_fixin" if self.fixed_cin else "") + ("_fixout" if self.fixed_cout else "")
        if self.kind == "linear":
            return f"linear_{self.cin}x{self.cout}{fixed}"
        return (f"conv_k{pair(self.kernel)}_s{pair(self.stride)}_p{pair(self.padding)}_d{pair(self.dilation)}_{mode}"
                f"_{pair(self.in_hw)}_{self.cin}x{self.cout}{fixed}")

    @property
    def diagonal(self) -> bool:
        """Depthwise and grouped convs lose whole conv groups: cin and cout shrink together, by one count."""
        return self.groups_mode != DENSE

    @property
    def in_per_group(self) -> int:
        """Input channels per conv group; fixed under pruning (1 for depthwise)."""
        return self.cin // self.groups

    @property
    def out_per_group(self) -> int:
        return self.cout // self.groups

    def groups_for(self, cin: int) -> int:
        """Conv groups of the layer pruned to `cin` input channels."""
        return cin // self.in_per_group if self.diagonal else 1

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output H x W of the layer."""
        if self.kind == "linear":
            return (1, 1)
        return tuple(  # type: ignore[return-value]
            (self.in_hw[i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel[i] - 1) - 1) // self.stride[i] + 1
            for i in range(2)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSignature:
        pair = lambda key: (int(data[key][0]), int(data[key][1]))  # noqa: E731
        return cls(str(data["kind"]), pair("kernel"), pair("stride"), pair("padding"), pair("dilation"),
                   str(data["groups_mode"]), int(data["groups"]), pair("in_hw"), int(data["cin"]), int(data["cout"]),
                   bool(data["fixed_cin"]), bool(data["fixed_cout"]))


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if isinstance(module.padding, str):  # 'valid' or 'same' (stride 1)
        if module.padding == "valid":
            return (0, 0)
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
    return _pair(module.padding)


def conv_signature(module: nn.Conv2d, in_hw: tuple[int, int], fixed_cin: bool, fixed_cout: bool) -> LayerSignature:
    """Signature of a Conv2d seen with input H x W `in_hw`."""
    cin, cout, groups = module.in_channels, module.out_channels, module.groups
    mode = DENSE if groups == 1 else DEPTHWISE if groups == cin == cout else GROUPED
    return LayerSignature("conv", _pair(module.kernel_size), _pair(module.stride), _conv_padding(module),
                          _pair(module.dilation), mode, groups, in_hw, cin, cout, fixed_cin, fixed_cout)


def linear_signature(module: nn.Linear, fixed_cin: bool, fixed_cout: bool) -> LayerSignature:
    """Signature of a Linear layer on flat features."""
    one = (1, 1)
    return LayerSignature("linear", one, one, (0, 0), one, DENSE, 1, one, module.in_features, module.out_features,
                          fixed_cin, fixed_cout)


def enumerate_layers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerSignature]:
    """Signatures of every Conv2d and Linear that runs in one forward pass, by module name, in call order.

    Channel counts of a layer that reads the model input, or whose output is the model output,
    are marked fixed: pruning never changes them.
    """
    names = {module: name for name, module in model.named_modules()}
    seen: dict[str, tuple[nn.Module, tuple[int, ...], torch.Tensor, torch.Tensor]] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        name = names[module]
        if name not in seen and inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            seen[name] = (module, tuple(inputs[0].shape), inputs[0], output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    example = torch.randn(*input_shape)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            result = model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    outputs = {id(t) for t in (result if isinstance(result, tuple | list) else [result]) if isinstance(t, torch.Tensor)}
    layers: dict[str, LayerSignature] = {}
    for name, (module, shape, inp, out) in seen.items():
        fixed_in, fixed_out = inp is example, id(out) in outputs
        if isinstance(module, nn.Conv2d):
            layers[name] = conv_signature(module, (shape[2], shape[3]), fixed_in, fixed_out)
        else:
            assert isinstance(module, nn.Linear)
            if len(shape) != 2:
                raise UserError(f"layer '{name}' is a Linear on {len(shape)}-d input {shape}",
                                "the profiler times Linear layers on flat (batch, features) input only")
            layers[name] = linear_signature(module, fixed_in, fixed_out)
    if not layers:
        raise UserError("the model has no Conv2d or Linear layer that runs in a forward pass", "profile a CNN")
    return layers


def unique_signatures(layers: dict[str, LayerSignature]) -> dict[str, LayerSignature]:
    """The distinct signatures of `layers`, by key, in first-use order."""
    unique: dict[str, LayerSignature] = {}
    for sig in layers.values():
        unique.setdefault(sig.key, sig)
    return unique


def channel_grid(full: int, step: int, minimum: int, multiple: int = 1) -> tuple[int, ...]:
    """Channel counts to measure for a layer of `full` channels.

    `minimum`, every multiple of `step` above it, and `full` itself; each rounded up to a multiple
    of `multiple` (the group count of a grouped conv) and never above `full`.
    """
    if full < 1 or step < 1 or minimum < 1 or multiple < 1:
        raise ValueError("channel counts, step, minimum and multiple must be positive")
    points = {min(minimum, full), full, *range(step, full, step)}
    rounded = {min(full, -(-p // multiple) * multiple) for p in points if p >= min(minimum, full)}
    return tuple(sorted(rounded))


def grid_points(sig: LayerSignature, step: int, minimum: int, align: int = 1) -> list[tuple[int, int]]:
    """The (cin, cout) pairs measured for one signature.

    Dense layers: a full grid of multiples of `align` (the hardware channel block). Depthwise and
    grouped convs: the diagonal of whole conv groups, cin = k * in_per_group and cout = k *
    out_per_group, with cin on the grid (multiples of `align` and of in_per_group).
    """
    if sig.diagonal:
        if sig.fixed_cin or sig.fixed_cout:
            return [(sig.cin, sig.cout)]
        cins = channel_grid(sig.cin, step, minimum, math.lcm(align, sig.in_per_group))
        return [(c, sig.groups_for(c) * sig.out_per_group) for c in cins]
    cins = (sig.cin,) if sig.fixed_cin else channel_grid(sig.cin, step, minimum, align)
    couts = (sig.cout,) if sig.fixed_cout else channel_grid(sig.cout, step, minimum, align)
    return [(ci, co) for ci in cins for co in couts]


def plan_rows(signatures: Iterable[LayerSignature], step: int, minimum: int, align: int = 1) -> list[tuple[str, int, int]]:
    """Every (signature key, cin, cout) a profile measures, in signature then grid order."""
    return [(sig.key, ci, co) for sig in signatures for ci, co in grid_points(sig, step, minimum, align)]
