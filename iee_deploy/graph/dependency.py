"""The dependency graph: layers and ops (networkx), channel groups and per-layer facts.

A *channel group* is a set of channels, spread over several layers, that are kept or removed
together: unit i of a group is one channel in the output of each owner conv/linear, one BN channel
in each listed BatchNorm, one input channel (or one H*W span after a flatten) of each consumer.
Groups are what structured pruning, Taylor importance and the latency model work on.

Units come from `channels.py`; units that appear in exactly the same layers, the same number of
times, form one group (a conv's output channels; ResNet's stage-wide residual channels; in
densenet, each layer's 32 new channels, wherever they are concatenated later).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np
import torch
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.graph.attention import (
    ATTENTION_UNITS,
    AttentionUnits,
    attention_layout,
    layer_weight,
    weight_names,
)
from iee_deploy.graph.channels import Coupling, analyse, internal_error
from iee_deploy.graph.layer_calls import resolve_layer_calls, row_parameters
from iee_deploy.graph.trace import Ref, Trace, eval_mode, paused_gc, trace_model


@dataclass(frozen=True, eq=False)
class ChannelRef:
    """Where a group sits in one layer: `index[i]` are the channel positions of the group's unit i.

    The positions are along the layer's output channels (owners, BN layers) or input channels
    (consumers). `index` has shape (group size, channels per unit): 1 channel per unit normally,
    H*W for a linear layer after a flatten, the group width for a grouped conv.
    """

    name: str
    index: np.ndarray

    @property
    def channels_per_unit(self) -> int:
        return int(self.index.shape[1])

    @property
    def offset(self) -> int | None:
        """First position when the group is one contiguous block in this layer (e.g. a concat slice)."""
        flat = self.index.ravel()
        start = int(flat[0])
        return start if np.array_equal(flat, np.arange(start, start + flat.size)) else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "channels_per_unit": self.channels_per_unit}
        offset = self.offset
        if offset is not None:
            out["offset"] = offset
        else:
            out["index"] = self.index.tolist()
        return out


@dataclass(eq=False)
class ChannelGroup:
    """Channels kept or removed together (one knapsack item family, one Taylor score per unit).

    `owners`: conv/linear layers whose output channels these are (for nn.MultiheadAttention, the
    module itself: its q/k/v input projection). `consumers`: layers whose input channel count the group
    sets. `bn_layers`: BatchNorms whose (gamma, beta) at these channels give Taylor importance. A
    depthwise conv is both owner and consumer. `attention`: attention modules whose heads (or head
    dims) these units are, at their inner positions ``head * head_dim + dim``. `prunable` is False for
    the model input, its outputs, and channels pinned by literal sizes or channel-mixing ops.
    """

    id: str
    size: int
    prunable: bool
    min_keep: int
    owners: tuple[ChannelRef, ...]
    consumers: tuple[ChannelRef, ...]
    bn_layers: tuple[ChannelRef, ...]
    attention: tuple[ChannelRef, ...] = ()

    @property
    def layers(self) -> list[str]:
        """Every coupled layer (owners, BN layers, consumers), each once, in graph order."""
        return list(dict.fromkeys(r.name for r in (*self.owners, *self.bn_layers, *self.consumers)))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "prunable": self.prunable, "min_keep": self.min_keep,
                "owners": [r.to_dict() for r in self.owners],
                "bn_layers": [r.to_dict() for r in self.bn_layers],
                "consumers": [r.to_dict() for r in self.consumers],
                "attention": [r.to_dict() for r in self.attention]}


@dataclass(frozen=True)
class LayerInfo:
    """One conv/linear layer as the latency model sees it, at the traced input size.

    `in_group`/`out_group` name the single prunable group setting the layer's input/output channels
    (None when they are fixed, e.g. the image input or the classifier output, or span several
    groups, e.g. a DenseNet concat). `in_groups`/`out_groups` list every group with its channels
    per unit, so that cin = sum(per_unit * kept).
    """

    name: str
    kind: Literal["conv", "linear"]
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    depthwise: bool
    in_hw: tuple[int, ...]
    out_hw: tuple[int, ...]
    in_group: str | None
    out_group: str | None
    in_groups: tuple[tuple[str, int], ...] = ()
    out_groups: tuple[tuple[str, int], ...] = ()
    transposed: bool = False  # a ConvTranspose: `stride` upsamples, out_hw = (in_hw - 1) * stride + ...

    @property
    def in_per_group(self) -> int:
        """Input channels per conv group (1 for depthwise); stays fixed when groups are pruned."""
        return self.in_channels // self.groups

    def groups_for(self, cin: int) -> int:
        """The `groups` of this layer once pruned to `cin` input channels (whole conv groups go)."""
        return cin // self.in_per_group if self.groups > 1 else 1

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class DependencyGraph:
    """Layers, ops and channel groups of one model at one input size (see `build_dependency_graph`).

    `layers` are the conv/linear layers, including the projections of attention modules (the q/k/v
    projection of an nn.MultiheadAttention is named by the module's path).
    """

    groups: list[ChannelGroup]
    layers: dict[str, LayerInfo]
    tracer: str
    input_shape: tuple[int, ...]
    attention_units: AttentionUnits
    _index: dict[str, int] = field(repr=False)
    _sizes: np.ndarray = field(repr=False)
    _in: np.ndarray = field(repr=False)  # (layers, groups): input channels per kept unit
    _out: np.ndarray = field(repr=False)
    _bn_names: list[str] = field(repr=False)
    _bn: np.ndarray = field(repr=False)  # (BN layers, groups)
    _bn_affine: np.ndarray = field(repr=False)
    _bias: np.ndarray = field(repr=False)  # per layer: parameters per output channel besides the weight (bias, gain)
    _unit_params: np.ndarray = field(repr=False)  # per group: per-head parameters (Swin's bias table) per unit
    _other_params: int = field(repr=False)
    _trace: Trace = field(repr=False)

    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """Layers and ops as a networkx DAG (node attributes kind, op, category, target, where, shape),
        built on first use: only display and inspection read it, so a build does not pay for it."""
        return _nx_graph(self._trace)

    def group(self, group_id: str) -> ChannelGroup:
        """The group called `group_id`, or a UserError listing near names."""
        if group_id not in self._index:
            import difflib

            close = difflib.get_close_matches(group_id, list(self._index), n=3)
            raise UserError(f"no channel group '{group_id}'",
                            f"did you mean {', '.join(close)}?" if close else "list them with `iee-deploy graph`")
        return self.groups[self._index[group_id]]

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def _counts(self, keep: Mapping[str, int]) -> np.ndarray:
        counts = self._sizes.copy()
        for gid, n in keep.items():
            if gid not in self._index:
                self.group(gid)
            counts[self._index[gid]] = n
        return counts

    def layer_channels(self, keep: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """(cin, cout) of every conv/linear layer when group id -> kept units (absent: all kept)."""
        counts = self._counts(keep)
        cin, cout = (self._in @ counts).tolist(), (self._out @ counts).tolist()
        return dict(zip(self.layers, zip(cin, cout)))

    def param_count(self, keep: Mapping[str, int] | None = None) -> int:
        """Parameters of the model pruned to `keep` (group id -> kept units), computed from the graph."""
        counts = self._counts(keep or {})
        cin, cout = self._in @ counts, self._out @ counts
        total = self._other_params + int((self._bn @ counts * 2 * self._bn_affine).sum()) + int(self._unit_params @ counts)
        for info, ci, co, bias in zip(self.layers.values(), cin.tolist(), cout.tolist(), self._bias.tolist()):
            kernel = int(np.prod(info.kernel)) if info.kind == "conv" else 1
            per_out = info.in_per_group if info.groups > 1 else ci
            total += co * (per_out * kernel + bias)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (groups with their layers and positions, layer facts)."""
        return {"tracer": self.tracer, "input_shape": list(self.input_shape), "attention_units": self.attention_units,
                "groups": [g.to_dict() for g in self.groups],
                "layers": {name: info.to_dict() for name, info in self.layers.items()}}


# ----------------------------------------------------------------------------------------- building


def _nx_graph(trace: Trace) -> nx.DiGraph:
    graph = nx.DiGraph()
    names = [n.name for n in trace.nodes]

    for node in trace.nodes:
        shape = tuple(node.value.shape) if isinstance(node.value, torch.Tensor) else None
        graph.add_node(node.name, kind=node.kind, op=node.op, category=node.category, target=node.target,
                       where=node.where, shape=shape)
        for i in node.inputs:
            graph.add_edge(names[i], node.name)
    return graph


@functools.lru_cache(maxsize=1)
def _salt_stream(size: int) -> np.ndarray:
    """The first `size` salts of one fixed random stream of odd 64-bit numbers (its prefixes do not depend on
    `size`): drawn once per process, not per build (a generator's set-up was a tenth of a small model's assembly)."""
    salts = np.random.default_rng(20250203).integers(1, 2**62, size=size, dtype=np.uint64) | np.uint64(1)
    salts.flags.writeable = False
    return salts


def _signatures(coupling: Coupling, seq: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A hash per unit of (layer side, occurrences) over all layers: equal hash = same group.

    The hash is the sum, over the unit's occurrences, of a random odd 64-bit salt per layer side
    (mod 2^64): sum(count[side] * salt[side]), one pass with no sort. Units with other counts collide
    only if the salts solve a small integer equation mod 2^64 (a chance of about 2^-60 per pair of units).
    `seq`: the unit of every channel of every layer side, the sides one after another, `lengths` channels each."""
    salts = _salt_stream(1 << max(10, lengths.size.bit_length()))[:lengths.size + 1]
    sig = np.zeros(coupling.canon.size, dtype=np.uint64)
    np.add.at(sig, seq, np.repeat(salts[:-1], lengths))
    sig[coupling.fixed] ^= salts[-1]
    return sig


def _layer_info(target: str, module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                ins: list[tuple[str, int]], outs: list[tuple[str, int]], prunable: set[str]) -> LayerInfo:
    def single(side: list[tuple[str, int]]) -> str | None:
        return side[0][0] if len(side) == 1 and side[0][0] in prunable else None

    if not isinstance(module, nn.modules.conv._ConvNd):  # nn.Linear, or nn.MultiheadAttention's q/k/v projection
        cout, cin = layer_weight(module).shape
        return LayerInfo(target, "linear", cin, cout, (1, 1), (1, 1), (0, 0), (1, 1), 1, False,
                         tuple(in_shape[1:-1]) or (1, 1), tuple(out_shape[1:-1]) or (1, 1),
                         single(ins), single(outs), tuple(ins), tuple(outs))
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return LayerInfo(target, "conv", module.in_channels, module.out_channels, tuple(module.kernel_size),
                     tuple(module.stride), padding, tuple(module.dilation), module.groups,
                     module.groups > 1 and module.groups == module.in_channels, tuple(in_shape[2:]),
                     tuple(out_shape[2:]), single(ins), single(outs), tuple(ins), tuple(outs),
                     isinstance(module, nn.modules.conv._ConvTransposeNd))


def _parameter_total(model: nn.Module) -> int:
    """sum(p.numel() for p in model.parameters()), each parameter and module once, walked without nn.Module's
    recursive generators (a sixth of a small model's assembly)."""
    seen: set[int] = set()
    total, stack = 0, [model]
    while stack:
        module = stack.pop()
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return total


def _per_head_params(coupling: Coupling, refs: list[dict[str, list[ChannelRef]]]) -> np.ndarray:
    """Per group, the parameters of one unit held one slice per head by attention modules (Swin's relative
    position bias table, V2's logit scale), for groups whose units are whole heads."""
    per_unit = np.zeros(len(refs), dtype=np.int64)
    for path, module in coupling.attention.items():
        layout = attention_layout(module)
        assert layout is not None
        per_head = sum(getattr(module, name).numel() for name, _ in layout.per_head) // layout.heads
        for k, r in enumerate(refs):
            for ref in r["attn"]:
                whole = np.unique(ref.index[0] // layout.head_dim).size * layout.head_dim
                if ref.name == path and ref.channels_per_unit == whole:
                    per_unit[k] += per_head * whole // layout.head_dim
    return per_unit


def _assemble(model: nn.Module, trace: Trace, coupling: Coupling, attention_units: AttentionUnits) -> DependencyGraph:
    keys = list(coupling.members)
    members = [coupling.members[k] for k in keys]
    lengths = np.fromiter((m.size for m in members), dtype=np.int64, count=len(members))
    seq = coupling.canon[np.concatenate(members)]  # the unit of every channel of every layer side, side by side
    sig = _signatures(coupling, seq, lengths)
    first = np.full(coupling.canon.size, seq.size, dtype=np.int64)  # each unit's first position in seq
    np.minimum.at(first, seq, np.arange(seq.size))  # (np.unique's return_index sorted every channel of every side)
    units = np.flatnonzero(first < seq.size)
    units = units[np.argsort(first[units], kind="stable")]  # in order of first appearance
    _, gfirst, ginv = np.unique(sig[units], return_index=True, return_inverse=True)
    rank = np.empty(gfirst.size, dtype=np.int64)
    rank[np.argsort(gfirst, kind="stable")] = np.arange(gfirst.size)
    gid = rank[ginv]
    sizes = np.bincount(gid, minlength=gfirst.size)
    perm = np.argsort(gid, kind="stable")
    in_group = np.empty(units.size, dtype=np.int64)
    in_group[perm] = np.arange(units.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    group_of = np.full(coupling.canon.size, -1, dtype=np.int64)
    unit_of = np.full(coupling.canon.size, -1, dtype=np.int64)
    group_of[units], unit_of[units] = gid, in_group

    refs: list[dict[str, list[ChannelRef]]] = [{"out": [], "in": [], "bn": [], "attn": []} for _ in range(sizes.size)]
    sides: dict[tuple[str, str], list[tuple[int, int]]] = {key: [] for key in keys}
    # One sort over every layer side: by side, group, unit, then channel position.
    side_of = np.repeat(np.arange(len(keys)), lengths)
    position = np.arange(seq.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    g_all, u_all = group_of[seq], unit_of[seq]
    # sides are concatenated in order with positions ascending, so a stable sort keeps positions in order
    order = np.argsort((side_of * sizes.size + g_all) * (int(sizes.max()) + 1) + u_all, kind="stable")
    block_key = side_of[order] * sizes.size + g_all[order]
    starts = np.flatnonzero(np.r_[True, block_key[1:] != block_key[:-1]])
    sorted_position, size_of = position[order], sizes.tolist()
    bounds = [*starts.tolist(), order.size]
    for b, (side, k) in enumerate(zip(side_of[order[starts]].tolist(), g_all[order[starts]].tolist())):
        key = keys[side]
        index = sorted_position[bounds[b]:bounds[b + 1]].reshape(size_of[k], -1)
        refs[k][key[1]].append(ChannelRef(key[0], index))
        sides[key].append((k, index.shape[1]))

    input_units = set(coupling.canon[coupling.input_ids].tolist())
    first_unit = units[np.unique(gid, return_index=True)[1]]  # the earliest unit of each group
    names: list[str] = []
    used: set[str] = set()
    for k, r in enumerate(refs):
        if r["out"]:
            base = r["out"][0].name
        elif int(first_unit[k]) in input_units:
            base = "input"
        else:
            first_ref = (r["bn"] or r["in"])[0]
            base = f"{first_ref.name}:{'in' if r['in'] and first_ref is r['in'][0] else 'bn'}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}#{n}"
        used.add(name)
        names.append(name)
    fixed_group = np.zeros(sizes.size, dtype=bool)
    fixed_group[gid] = coupling.fixed[units]
    groups = [ChannelGroup(names[k], int(sizes[k]), not fixed_group[k], 1, tuple(refs[k]["out"]),
                           tuple(refs[k]["in"]), tuple(refs[k]["bn"]), tuple(refs[k]["attn"])) for k in range(sizes.size)]
    prunable = {g.id for g in groups if g.prunable}

    # Layer facts and the matrices behind layer_channels / param_count.
    found: dict[str, tuple[nn.Module, str, tuple[int, ...], tuple[int, ...]]] = {}  # target -> module, kind, shapes
    for node in trace.nodes:
        if node.kind != "module" or node.target in found:
            continue
        category = "bn" if (node.target, "bn") in coupling.members else str(node.category)  # GroupNorm's groups too
        if category in ("conv", "linear", "bn"):
            assert node.module is not None
            arg = node.args[0]
            in_shape = tuple(trace.nodes[arg.index].value.shape) if isinstance(arg, Ref) else ()
            found[node.target] = (node.module, category, in_shape, tuple(node.value.shape))
    for target, (module, in_shape, out_shape) in coupling.inner_layers.items():
        found.setdefault(target, (module, "linear", in_shape, out_shape))
    layers: dict[str, LayerInfo] = {}
    bias: list[int] = []
    bn_names, bn_affine = [], []
    unit_params = _per_head_params(coupling, refs)
    layer_params = int(unit_params @ sizes)

    def per_group(targets: list[str], role: str) -> np.ndarray:
        """Channels per unit of each group on the `role` side of each of `targets` (a row per target)."""
        rows = np.zeros((len(targets), sizes.size), dtype=np.int64)
        entries = [(i, k, per) for i, target in enumerate(targets) for k, per in sides.get((target, role), ())]
        if entries:
            i, k, per = np.array(entries, dtype=np.int64).T
            np.add.at(rows, (i, k), per)
        return rows

    for target, (module, category, in_shape, out_shape) in found.items():
        layer_params += sum(p.numel() for p in module._parameters.values() if p is not None)
        if category == "bn":
            bn_names.append(target)
            bn_affine.append(1 if getattr(module, "affine", False) else 0)
            continue
        bias.append(int(getattr(module, weight_names(module)[1], None) is not None)
                    + sum(int(getattr(module, p)[0].numel()) for p in row_parameters(module) if p != "bias"))
        layers[target] = _layer_info(target, module, in_shape, out_shape, [(names[k], per) for k, per in sides[(target, "in")]],
                                     [(names[k], per) for k, per in sides[(target, "out")]], prunable)
    total_params = _parameter_total(model)
    first_input = next((n.value for n in trace.nodes if n.kind == "input"), None)
    return DependencyGraph(
        groups=groups, layers=layers, tracer=trace.tracer,
        input_shape=tuple(first_input.shape) if isinstance(first_input, torch.Tensor) else (),
        attention_units=attention_units,
        _index={g.id: i for i, g in enumerate(groups)}, _sizes=sizes.astype(np.int64),
        _in=per_group(list(layers), "in"), _out=per_group(list(layers), "out"),
        _bn_names=bn_names, _bn=per_group(bn_names, "bn"),
        _bn_affine=np.array(bn_affine, dtype=np.int64), _bias=np.array(bias, dtype=np.int64), _unit_params=unit_params,
        _other_params=total_params - layer_params, _trace=trace)


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...],
                           tracer: str = "auto", attention_units: AttentionUnits = "heads") -> DependencyGraph:
    """Trace `model` on `example_input` (shapes only, see trace.py) and derive its channel groups.

    Raises UserError naming the op and module for an operation the graph does not understand.
    `tracer`: "auto" (torch.fx, eager fallback), "fx" or "eager". `attention_units`: what one unit of
    an attention module's group is, a whole head ("heads") or one dim of every head ("head_dims").
    """
    if attention_units not in ATTENTION_UNITS:
        raise UserError(f"unknown attention_units '{attention_units}'", f"choose one of: {', '.join(ATTENTION_UNITS)}")
    if not isinstance(model, nn.Module):
        raise UserError(f"`model` must be a torch.nn.Module, got {type(model).__name__}",
                        "pass the model itself (iee_deploy.models.build_model(name) builds a zoo model)", fields=("model",))
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise UserError(f"`example_input` must be a tensor or a tuple of tensors (one per forward argument), got "
                        f"{type(example_input).__name__}", "pass e.g. torch.zeros(1, 3, 224, 224)",
                        fields=("example_input",))
    _refuse_whole_detector(model)
    if next(model.parameters(), None) is None:  # nn.Sequential() or a parameter-free function: no layer to prune
        raise UserError(f"`model` {type(model).__name__} holds no parameters, so no layer to prune",
                        "pass the network itself", fields=("model",))
    empty = next((x for x in inputs if 0 in x.shape), None)
    if empty is not None:  # a batch of 0 images: no channel reaches any layer to be traced
        raise UserError(f"`example_input` of shape {tuple(empty.shape)} holds no values",
                        "pass at least one image, e.g. torch.zeros(1, 3, 224, 224)", fields=("example_input",))
    try:
        with paused_gc():
            trace = resolve_layer_calls(model, trace_model(model, example_input, tracer))
            coupling = analyse(trace, attention_units)
            return _assemble(model, trace, coupling, attention_units)
    except UserError:
        raise
    except Exception as exc:  # never a traceback from the graph itself
        refused = _refused_input(model, inputs)
        if refused is not None:  # the model itself cannot run on this input: not a limit of the graph
            raise refused from None
        raise internal_error(f"{type(model).__name__}", exc) from None


def _refuse_whole_detector(model: nn.Module) -> None:
    """A UserError for a whole torchvision detector: its transform and post-processing work on image lists and boxes,
    not channels, so the graph is of its network part (backbone and head), as the trainer and the table build it."""
    from iee_deploy.models.detection import network_of

    if network_of(model) is not model:
        raise UserError(f"`model` {type(model).__name__} is a whole detector: its pre- and post-processing work on "
                        "image lists and boxes, not on channels",
                        "build the graph of its network part: "
                        "build_dependency_graph(iee_deploy.models.detection.network_of(model), example_input)",
                        fields=("model",))


def _refused_input(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> UserError | None:
    """The one-line refusal when `model` fails on `inputs` in a plain forward pass (an input too small for its
    strides and kernels, the wrong channel count), else None."""
    try:
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        detail = (str(exc).splitlines() or [""])[0][:200]
        return UserError(f"{type(model).__name__} fails on the example input {shapes} itself ({type(exc).__name__}: "
                         f"{detail})", "give an input the model runs on (a larger `resolution`, the channels it takes)",
                         fields=("resolution",))
    return None
