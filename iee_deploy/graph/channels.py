"""Channel coupling: which channels of which layers must be kept or removed together.

Every channel that a layer creates (a conv/linear output channel, an input image channel, a constant)
gets an integer *channel id*. Each traced tensor carries the ids of its elements (`Ids`): normally
one id per channel (`vec`), or a full integer tensor after a reshape that spreads channels over
several dimensions (channel shuffle). Operations then either

- move ids: view/flatten/transpose/cat/chunk are applied to the id tensor itself, so concat offsets,
  flatten spans (one channel -> H*W linear inputs) and shuffles come out exactly; or
- couple ids: an element-wise op (residual add, squeeze-excitation multiply) ties equal positions,
  a grouped/depthwise conv ties each group's input channels to its output channels.

Coupled ids form one *unit*: a channel that is kept or removed as a whole wherever it appears.
Pruning must also leave the model's own code valid on the smaller tensors, so some ops add coupling:

- a reshape that spreads channels over two dims (ShuffleNet's ``view(n, groups, c // groups, h, w)``)
  ties index j of every group together (`_guard`), so the shuffle interleaves the same kept indices;
- ``chunk(k)`` needs equal kept counts in each part; units are paired across parts so that each
  unit occurs equally often in every part (`_balance`);
- a literal size or index on a pruned dim (``x[:, :64]``, ``view(n, 512, 7, 7)``) would break, so the
  units there are *fixed* (never pruned), as are the model input, outputs, and constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch.utils._pytree import tree_map

from iee_deploy.errors import UserError
from iee_deploy.graph.attention import AttentionUnits, attention_layout
from iee_deploy.graph.trace import PLAIN_ARGS, Node, Ref, Trace, ref_indices

ID = np.int32
"""Channel id dtype: small copies are what movement ops on id tensors cost."""


@dataclass
class Ids:
    """Channel ids of one tensor of `shape`.

    Either `vec` (one id per channel along dim 1, the common case), or `core` with `full` (an int32 tensor of
    `shape`, often a broadcast view): `core` is `full` reduced to size 1 along every dim where it is constant,
    which is all the coupling rules need (a shuffle's core is (1, 2, 58, 1, 1), not (1, 2, 58, 28, 28)).
    `full` is made from `core` when first asked for (most ids never pass through a movement op that needs it).
    """

    shape: tuple[int, ...]
    vec: np.ndarray | None = None
    full: torch.Tensor | None = None
    core: np.ndarray | None = None

    def tensor(self) -> torch.Tensor:
        """The ids as an int32 tensor of the traced shape (possibly a broadcast view)."""
        if self.full is not None:
            return self.full
        if self.core is not None:
            self.full = torch.from_numpy(self.core).expand(self.shape)
            return self.full
        assert self.vec is not None
        return torch.from_numpy(self.vec).view(1, -1, *([1] * (len(self.shape) - 2))).expand(self.shape)

    def grid(self) -> np.ndarray:
        """A small array of ids that broadcasts to `shape`."""
        if self.vec is not None:
            return self.vec.reshape(1, -1, *([1] * (len(self.shape) - 2)))
        assert self.core is not None
        return self.core

    def flat(self) -> np.ndarray:
        """Every distinct position's id (each channel once for `vec`)."""
        return self.grid().ravel()


def _from_core(shape: tuple[int, ...], full: torch.Tensor | None, core: np.ndarray) -> Ids:
    if len(shape) >= 2 and all(n == 1 for d, n in enumerate(core.shape) if d != 1):
        return Ids(shape, vec=np.broadcast_to(core.reshape(-1), (shape[1],)).copy())
    return Ids(shape, full=full, core=np.ascontiguousarray(core))


def _slice(core: np.ndarray, d: int, i: int) -> np.ndarray:
    """Index `i` of dim `d` of `core`, the dim kept (a view)."""
    return core[(slice(None),) * d + (slice(i, i + 1),)]


def _constant_along(core: np.ndarray, d: int) -> bool:
    """Whether `core` holds the same values at every index of dim `d` (views only; most dims that vary
    already differ between their first two slices, so the whole comparison runs where it must; a broadcast dim,
    stride 0, is constant without a look)."""
    if core.strides[d] == 0:
        return True
    first = _slice(core, d, 0)
    if not np.array_equal(first, _slice(core, d, 1)):
        return False
    return bool((core == first).all())


def _compress(t: torch.Tensor) -> Ids:
    """Ids of a moved tensor: find the dims along which it is constant (spatial dims, usually)."""
    core = t.numpy()
    if core.size:
        for d in reversed(range(core.ndim)):
            if core.shape[d] > 1 and _constant_along(core, d):
                core = _slice(core, d, 0)
    return _from_core(tuple(t.shape), t, core)


def _relabel(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(ids, return_inverse=True) for ids in 0..n-1: by marking an array of n flags where the ids are
    many (a halo or window attention couples hundreds of thousands of positions at once, and sorting them was
    most of such a build), by sorting where they are few."""
    if ids.size * 8 < n:
        nodes, inverse = np.unique(ids, return_inverse=True)
        return nodes, inverse
    mark = np.zeros(n, dtype=bool)
    mark[ids] = True
    nodes = np.flatnonzero(mark).astype(ids.dtype)
    lookup = np.empty(n, dtype=np.int64)
    lookup[nodes] = np.arange(nodes.size)
    return nodes, lookup[ids]


def pair_opposites(net: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair entries of opposite nonzero `net` (+k with -k), the i-th +k with the i-th -k in index order, as a
    queue of the unpaired would, first come first paired: (indices a, their partners b, the indices left unpaired).
    Vectorised: a gated MLP's halves give one entry per unit, thousands a block."""
    n = net.size
    key, positive = np.abs(net).astype(np.int64), net > 0
    order = np.lexsort((np.arange(n), positive, key))  # by |net|, then sign, then arrival
    k, p = key[order], positive[order]
    start = np.ones(n, dtype=bool)
    start[1:] = (k[1:] != k[:-1]) | (p[1:] != p[:-1])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.maximum.accumulate(np.where(start, np.arange(n), 0))
    code = key * (n + 1) + rank  # unique per (|net|, rank) within each sign
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    _, i, j = np.intersect1d(code[pos], code[neg], assume_unique=True, return_indices=True)
    paired = np.zeros(n, dtype=bool)
    paired[pos[i]] = paired[neg[j]] = True
    return pos[i], neg[j], np.flatnonzero(~paired)


class _Units:
    """Channel ids and their coupling: a union-find whose unions are merged in bulk when a query needs them.

    Each id points to a smaller id of its unit (`_parent`; a unit's smallest id points to itself). A merge
    points only the merged units' representatives at their new one, and a query follows the pointers for
    the ids it asks about (`find`), so that the analysis's many queries each cost the size of the tensor
    asked about, not of every id made so far (most of a ViT's or GhostNet's analysis when recomputed whole)."""

    def __init__(self) -> None:
        self.n = 0
        self.history: list[tuple[np.ndarray, np.ndarray]] = []  # every union, in order; pending from `_merged` on
        self._merged = 0
        self._parent = np.zeros(0, dtype=ID)  # grown geometrically; ids from n on point to themselves
        self.fixed: list[np.ndarray] = []

    def new(self, count: int) -> np.ndarray:
        ids = np.arange(self.n, self.n + count, dtype=ID)
        self.n += count
        return ids

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        if a.size:
            self.history.append((a, b))

    def fix(self, ids: np.ndarray) -> None:
        self.fixed.append(np.asarray(ids, dtype=ID).ravel())

    def fixed_units(self, canon: np.ndarray) -> np.ndarray:
        """Per canonical id (`canon`, from `canon()`): whether its unit holds a fixed id; `[canon]` gives it per id."""
        fixed = np.zeros(self.n, dtype=bool)
        if self.fixed:
            fixed[canon[np.concatenate(self.fixed)]] = True
        return fixed

    def find(self, ids: np.ndarray) -> np.ndarray:
        """The canonical id (the smallest id of its unit) of each of `ids`, in their shape."""
        self._merge()
        return self._roots(ids)

    def canon(self) -> np.ndarray:
        """Canonical id per id 0..n-1 (pointer jumping over them all, which also flattens every unit to its root)."""
        self._merge()
        parent = self._parent
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        self._parent = parent
        return parent[:self.n]

    def _merge(self) -> None:
        if self._parent.size < self.n:
            grown = np.arange(max(self.n, 2 * self._parent.size), dtype=ID)
            grown[:self._parent.size] = self._parent
            self._parent = grown
        pending = self.history[self._merged:]
        if not pending:
            return
        self._merged = len(self.history)
        ca = self._roots(np.concatenate([a for a, _ in pending]))
        cb = self._roots(np.concatenate([b for _, b in pending]))
        differ = ca != cb
        if differ.any():  # merge the touched units: connected components over their representatives
            nodes, inverse = _relabel(np.concatenate([ca[differ], cb[differ]]), self.n)
            half = int(differ.sum())
            self._parent[nodes] = nodes[_smallest_connected(inverse[:half], inverse[half:], nodes.size)]

    def _roots(self, ids: np.ndarray) -> np.ndarray:
        """The root of each of `ids` as the pointers stand (pending unions not merged); `ids` then point at their
        roots directly (path compression: each merge adds a level to the chains, and the same channels are asked
        about again and again)."""
        x = self._parent[ids]
        while True:
            y = self._parent[x]
            if not (y != x).any():
                break
            x = y
        self._parent[ids] = x
        return x


def _differ_along(roots: np.ndarray, dims: tuple[int, ...]) -> bool:
    """Whether `roots` holds different values along any of `dims`."""
    return any(not np.all(np.moveaxis(roots, d, 0) == np.moveaxis(roots, d, 0)[:1]) for d in dims)


def _smallest_connected(u: np.ndarray, v: np.ndarray, size: int, rounds: int = 8) -> np.ndarray:
    """Per node 0..size-1 of the undirected edges (u[i], v[i]): the smallest node connected to it.

    Min-label propagation with pointer jumping: a handful of vector passes where the edges pair units
    up or form short chains, as a layer's channels coupled to its BN's and its consumers' do. Where it
    has not settled after `rounds` passes (long chains), scipy's connected components finish the job:
    its fixed cost (sparse-matrix construction and checks) was most of a small model's coupling analysis.
    """
    label = np.arange(size)
    for _ in range(rounds):
        low = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, low)
        np.minimum.at(new, v, low)
        new = new[new]
        if np.array_equal(new, label):
            return label  # every edge joins equal labels, each the smallest node of its component
        label = new
    graph = coo_matrix((np.ones(u.size, dtype=np.int8), (u, v)), shape=(size, size))
    count, component = connected_components(graph, directed=False)
    smallest = np.full(count, size, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(size))
    return smallest[component]


@dataclass
class Coupling:
    """The analysis result: per layer side, the ids of its channels, and the units they form.

    Roles: "out" / "in" (a layer's output / input channels), "bn", and "attn" (an attention module's
    inner channels, head-major). `inner_layers` are the projections inside attention modules, which
    run without a traced call of their own: path -> (module, input shape, output shape).
    """

    members: dict[tuple[str, str], np.ndarray]  # (layer path, role) -> ids
    canon: np.ndarray  # canonical id of every id's unit
    fixed: np.ndarray  # bool per id: its unit may never be pruned
    input_ids: np.ndarray  # ids of the model input channels
    inner_layers: dict[str, tuple[torch.nn.Module, tuple[int, ...], tuple[int, ...]]]
    attention: dict[str, torch.nn.Module]  # attention modules whose heads are channel units


def _holds_ids(tree: Any) -> bool:
    if isinstance(tree, Ids):
        return True
    return isinstance(tree, (tuple, list)) and any(_holds_ids(t) for t in tree)


def _last_dim(shape: tuple[int, ...], ids: np.ndarray) -> Ids:
    """Ids of a tensor whose channels lie along its last dim (a Linear's output)."""
    if len(shape) == 2:
        return Ids(shape, vec=ids)
    return Ids(shape, core=ids.reshape((1,) * (len(shape) - 1) + (-1,)))


def _heads_are_units(node: Node) -> bool:
    """Whether the graph may prune this attention module's heads: a supported layout (attention.py),
    and for nn.MultiheadAttention no attention weights returned (they average over every head, so
    fewer heads would change them)."""
    if node.module is None or attention_layout(node.module) is None:
        return False
    return not (isinstance(node.value, tuple) and node.value[1] is not None)


_REDUCE_ARGS = {"norm": (2, 3), "linalg_vector_norm": (2, 3), "var": (1, 3), "std": (1, 3)}
"""Reductions whose (dim, keepdim) arguments are not at positions (1, 2)."""


def _normdim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _arg(node: Node, values: tuple[Any, ...], position: int, name: str, default: Any) -> Any:
    if len(values) > position:
        return values[position]
    return node.kwargs.get(name, default)


def _reshaped_ids(ids: Ids, shape: tuple[int, ...]) -> Ids | None:
    """The ids after a view, reshape or flatten to `shape` that keeps in place the one dim their units vary along:
    the last dim at its size (channels-last windows: (B, H, W, C) -> (B, H/w, w, W/w, w, C)), or the first two dims
    with the rest merged or split (channels-first: (B, C, H, W) -> (B, C, H*W)). Computed on the ids' small grid, not
    on a full tensor of them; None for any other reshape (the general path)."""
    grid, old = ids.grid(), ids.shape
    varying = [d for d, n in enumerate(grid.shape) if n > 1]
    if len(varying) != 1 or math.prod(old) != math.prod(shape):
        return None
    d = varying[0]
    line = grid.reshape(-1)
    if not bool((line != line[0]).any()):  # one id repeated: the general path's compression decides its form
        return None
    if d == len(old) - 1 and len(shape) >= 2 and shape[-1] == old[-1]:
        core = line.reshape((1,) * (len(shape) - 1) + (old[-1],))
    elif d == 1 and len(shape) >= 2 and shape[:2] == old[:2]:
        core = line.reshape((1, old[1]) + (1,) * (len(shape) - 2))
    else:
        return None
    return _grid_ids(shape, core)


def _grid_ids(shape: tuple[int, ...], grid: np.ndarray) -> Ids:
    """The Ids of a tensor of `shape` from a small grid of ids that broadcasts to it."""
    core = np.ascontiguousarray(grid)
    return _from_core(shape, None, core)


def _permutation(op: str, values: tuple[Any, ...], kwargs: dict[str, Any], ndim: int) -> list[int] | None:
    """The dim order of a permute, transpose, swapaxes or swapdims call (`values`: its arguments, the tensor first),
    None for any other op or arguments that are not a permutation of `ndim` dims (torch then decides)."""
    if kwargs or op not in ("permute", "transpose", "swapaxes", "swapdims"):
        return None
    rest = values[1:]
    if op == "permute" and len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = tuple(rest[0])
    if not all(type(d) is int and -ndim <= d < ndim for d in rest):
        return None
    dims = [_normdim(d, ndim) for d in rest]
    if op != "permute":
        if len(dims) != 2:
            return None
        order = list(range(ndim))
        order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        return order
    return dims if sorted(dims) == list(range(ndim)) else None


class ChannelAnalysis:
    """Walks a `Trace` once, propagating channel ids and collecting couplings."""

    def __init__(self, trace: Trace, attention_units: AttentionUnits = "heads") -> None:
        self.nodes = trace.nodes
        self.branched = trace.branched
        self.numbers: list[int] = []  # nodes of numbers computed from sizes that an op applies to tensor data
        self.units = _Units()
        self.ids: list[Any] = []
        self.members: dict[tuple[str, str], np.ndarray] = {}
        self.input_ids: list[np.ndarray] = []
        self.attention_units = attention_units
        self.inner_layers: dict[str, tuple[torch.nn.Module, tuple[int, ...], tuple[int, ...]]] = {}
        self.attention: dict[str, torch.nn.Module] = {}
        self.constant: list[bool] = []  # per node: its value does not depend on the model input
        self.fix_if_varied: list[tuple[np.ndarray, tuple[int, ...], int]] = []  # see `_fix_along`

    # ----------------------------------------------------------------------------------- helpers

    def _ids(self, arg: Any) -> Any:
        """`arg` with node references replaced by their Ids (None for non-tensor values)."""
        if type(arg) in PLAIN_ARGS:  # most arguments: sizes, dims, flags
            return arg
        if isinstance(arg, Ref):
            return self.ids[arg.index]
        if isinstance(arg, (tuple, list)):
            return type(arg)(self._ids(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self._ids(v) for k, v in arg.items()}
        return arg

    def _value(self, arg: Any) -> Any:
        """`arg` with node references replaced by their traced values (sizes, meta tensors)."""
        if type(arg) in PLAIN_ARGS:
            return arg
        if isinstance(arg, Ref):
            return self.nodes[arg.index].value
        if isinstance(arg, (tuple, list)):
            return type(arg)(self._value(a) for a in arg)
        if isinstance(arg, slice):
            return slice(self._value(arg.start), self._value(arg.stop), self._value(arg.step))
        if isinstance(arg, dict):
            return {k: self._value(v) for k, v in arg.items()}
        return arg

    def _fixed_ids(self, shape: tuple[int, ...]) -> Ids:
        """New ids for a tensor whose channels may never be pruned (model input, mixed channels)."""
        if len(shape) >= 2:
            ids = Ids(shape, vec=self.units.new(shape[1]))
        else:
            full = torch.from_numpy(self.units.new(int(np.prod(shape, dtype=np.int64)))).view(shape)
            ids = Ids(shape, full=full, core=full.numpy())
        self.units.fix(ids.flat())
        return ids

    def _varies(self, ids: Ids, dim: int) -> bool:
        """Whether different units lie along `dim` of this tensor."""
        grid = ids.grid()
        if grid.shape[dim] <= 1:
            return False
        return _differ_along(self.units.find(grid), (dim,))

    def _fix_along(self, ids: Ids, *dims: int) -> None:
        """Fix every unit of `ids` if different units lie along any of `dims` as the units stand now; decided at the
        end of the walk (`_fixes_if_varied`), so that one merge of the pending unions serves every such check rather
        than one each (a ConvNeXt's norms and layer scales, a GhostNet's channel slices: most of their analysis)."""
        grid = ids.grid()
        along = tuple(d for d in dims if grid.shape[d] > 1)
        if along:
            self.fix_if_varied.append((grid, along, len(self.units.history)))

    def _fixes_if_varied(self, canon: np.ndarray) -> None:
        """Carry out the deferred `_fix_along` checks. Unions only join units, so ids that differ in the final units
        (`canon`) differed when checked: fixed. Ids that end in one unit may have been joined after the check: those
        rare checks are answered by the units as they stood then, replayed in order from the unions' history, unless
        their units end up fixed anyway (a MaxxViT's: the replay was a tenth of its build)."""
        units, undecided = self.units, []
        for grid, dims, unions in self.fix_if_varied:
            if _differ_along(canon[grid], dims):
                units.fix(grid)
            elif unions < len(units.history):
                undecided.append((grid, dims, unions))
        if undecided:
            fixed = units.fixed_units(canon)
            undecided = [check for check in undecided if not fixed[canon[check[0]]].all()]
        then, replayed = _Units(), 0
        then.n = units.n
        for grid, dims, unions in sorted(undecided, key=lambda check: check[2]):
            for a, b in units.history[replayed:unions]:
                then.union(a, b)
            replayed = unions
            if _differ_along(then.find(grid), dims):
                units.fix(grid)

    def _channel_vec(self, ids: Ids, dim: int, where: str) -> np.ndarray:
        """One id per channel along `dim`; ids sharing a channel are coupled (it is one unit there)."""
        dim = _normdim(dim, len(ids.shape))
        if ids.vec is not None and dim == 1:
            return ids.vec
        if not 0 <= dim < len(ids.shape):
            raise UserError(f"a layer in {where} got a {len(ids.shape)}-d input", "feed batched tensors (N, C, ...)")
        rows = np.moveaxis(ids.grid(), dim, 0)
        rows = np.broadcast_to(rows.reshape(rows.shape[0], -1), (ids.shape[dim], rows[0].size))
        if rows.shape[1] == 0 or np.all(rows == rows[:, :1]):
            return rows[:, 0].copy()
        canon = self.units.find(rows)
        if not np.all(canon == canon[:, :1]):
            self.units.union(np.broadcast_to(canon[:, :1], canon.shape), canon)
        return canon[:, 0].copy()

    def _member(self, layer: str, role: str, vec: np.ndarray) -> None:
        key = (layer, role)
        if key in self.members:  # a module called twice: one weight, so both calls are coupled
            self.units.union(self.members[key], vec)
        else:
            self.members[key] = vec

    def _guard(self, ids: Ids) -> Ids:
        """Tie ids so that units vary along at most one dim (see the module docstring)."""
        if ids.core is None or sum(n > 1 for n in ids.core.shape) < 2:  # units can vary along one dim at most
            return ids
        canon = self.units.find(ids.grid())
        varying = [d for d in range(canon.ndim) if canon.shape[d] > 1 and not np.all(canon == canon.take([0], axis=d))]
        if len(varying) > 1:
            head = canon
            for d in varying[:-1]:
                head = head.take([0], axis=d)
            self.units.union(np.broadcast_to(head, canon.shape), canon)
        return ids

    def _balance(self, src: Ids, dim: int, parts: int) -> None:
        """Make every unit occur equally often in each of `parts` equal chunks along `dim`."""
        canon = np.moveaxis(self.units.find(src.grid()), dim, 0)
        size = canon.shape[0] // parts
        rows = canon.reshape(canon.shape[0], -1)
        if not np.all(rows == rows[:, :1]):  # units also vary along other dims: tie chunks index by index
            chunks = canon.reshape(parts, size, -1)
            for j in range(1, parts):
                self.units.union(chunks[0], chunks[j])
            return
        profile = rows[:, 0].reshape(parts, size)
        classes, first, inverse = np.unique(profile, return_index=True, return_inverse=True)
        counts = np.zeros((classes.size, parts), dtype=np.int64)
        np.add.at(counts, (inverse.reshape(parts, size), np.arange(parts)[:, None]), 1)
        uneven = np.nonzero(np.any(counts != counts[:, :1], axis=1))[0]
        if not uneven.size:
            return
        uneven = uneven[np.argsort(first[uneven], kind="stable")]
        left: list[int] = []
        if parts == 2:  # pair a unit +k in the first half with one -k (first come, first paired)
            a, b, rest = pair_opposites(counts[uneven, 0] - counts[uneven, 1])
            self.units.union(classes[uneven[a]], classes[uneven[b]])
            left = uneven[rest].tolist()
        else:
            left = uneven.tolist()
        if left:  # what remains sums to equal counts: one unit
            self.units.union(np.full(len(left), classes[left[0]]), classes[left])

    def _couple(self, a: Ids, b: Ids, shape: tuple[int, ...]) -> None:
        """Tie equal positions of two broadcast operands (not across broadcast dims)."""
        if a.vec is not None and b.vec is not None and len(a.shape) == len(b.shape) == len(shape):
            if a.vec.size == b.vec.size:
                self.units.union(a.vec, b.vec)
                return
            if min(a.vec.size, b.vec.size) == 1:
                return
        pad = [(1,) * (len(shape) - len(x.shape)) for x in (a, b)]
        ga, gb = (x.grid().reshape(p + x.grid().shape) for x, p in zip((a, b), pad))
        sa, sb = (p + x.shape for x, p in zip((a, b), pad))
        for d in range(len(shape)):
            if sa[d] == 1 or sb[d] == 1:  # a broadcast dim: one value meets many, nothing to tie
                ga, gb = ga.take([0], axis=d), gb.take([0], axis=d)
        common = np.broadcast_shapes(ga.shape, gb.shape)
        # every pair as it is: repeated pairs are rare once the broadcast dims are dropped, and deduplicating them
        # (a sort or hash of every position) cost more than the union-find's vector passes over the repeats
        self.units.union(np.broadcast_to(ga, common).ravel(), np.broadcast_to(gb, common).ravel())

    def _is_constant(self, node: Node) -> bool:
        """Whether a node's value is computed from parameters and constants alone (see `_meet_constant`)."""
        if node.kind == "attr" or node.category == "constant":
            return True
        if node.kind != "call" or node.category == "meta":
            return False
        return all(map(self.constant.__getitem__, node.inputs))

    def _meet_constant(self, x: Ids, const: Ids, shape: tuple[int, ...]) -> None:
        """A constant (a mask or position grid, a parameter) combined element-wise with `x`: the same in the
        pruned model, so it ties nothing; only where it spans a dim along which x holds several units would
        pruning change the shapes, and those units are pinned."""
        pad = len(shape) - len(const.shape)
        for d in range(len(x.shape)):
            full = d + len(shape) - len(x.shape)
            if full >= pad and const.shape[full - pad] > 1:
                self._fix_along(x, d)

    def _broadcast(self, ids: Ids, shape: tuple[int, ...]) -> Ids:
        if ids.shape == shape:
            return ids
        if ids.vec is not None and len(ids.shape) == len(shape) and ids.vec.size == shape[1]:
            return Ids(shape, vec=ids.vec)
        pad = (1,) * (len(shape) - len(ids.shape))
        return _from_core(shape, None, ids.grid().reshape(pad + ids.grid().shape))

    # ------------------------------------------------------------------------------------ visits

    def run(self) -> Coupling:
        for node in self.nodes:
            self.constant.append(self._is_constant(node))
            try:
                self.ids.append(self._visit(node))
            except UserError:
                raise
            except Exception as exc:  # a case the analysis does not handle: one line, never a traceback
                raise internal_error(f"{node.op} in module {node.where}", exc) from None
        self._pin_read_sizes([*self.branched, *self.numbers])
        units = self.units
        canon = units.canon()
        self._fixes_if_varied(canon)
        fixed = units.fixed_units(canon)[canon]
        inputs = np.concatenate(self.input_ids) if self.input_ids else np.zeros(0, dtype=ID)
        return Coupling(self.members, canon, fixed, inputs, self.inner_layers, self.attention)

    def _pin_read_sizes(self, indices: list[int]) -> None:
        """Pin every tensor dim whose size the values of nodes `indices` are computed from (through size arithmetic):
        the model's code branched on those values, made them plain numbers or scaled data by them (y / y.size(1)),
        all of which a pruned width would change. One walk for all of them: each node's pins once (a TF-'same' padded
        conv branches on both sizes of one shape read).
        A spatial or token dim holds one unit, so pinning it is a no-op; a channel dim's units stay whole."""
        todo, seen = list(indices), set()
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            node = self.nodes[i]
            read = self._sizes_read(i)
            if read is not None:
                ids, dims = read
                for dim in dims:
                    self._fix_along(ids, dim)
            elif not isinstance(node.value, torch.Tensor):  # size arithmetic: follow it to the sizes it reads
                todo += node.inputs

    def _sizes_read(self, index: int) -> tuple[Ids, Sequence[int]] | None:
        """(ids of a traced tensor, the dims whose sizes node `index` reads) when it reads sizes of it directly:
        x.size(k) and x.shape[k] (`_size_source`), x.shape[a:b] and x.size()[a:b] (those dims), or x.shape, x.size()
        and x.numel() (every dim)."""
        source = self._size_source(Ref(index))
        if source is not None:
            return source[0], [source[1]]
        node = self.nodes[index]
        if not (node.args and isinstance(node.args[0], Ref)):
            return None
        if node.op == "getitem":  # a slice of a whole shape
            whole = self._sizes_read(node.args[0].index)
            picked = self._value(node.args[1]) if len(node.args) > 1 else None
            if whole is None or not isinstance(whole[1], range) or not isinstance(picked, slice):
                return whole
            return whole[0], whole[1][picked]
        if node.op in ("size", "numel") or node.op == "getattr" and node.args[1:] == ("shape",):
            ids = self.ids[node.args[0].index]
            return (ids, range(len(ids.shape))) if isinstance(ids, Ids) else None
        return None

    def _visit(self, node: Node) -> Any:
        value = node.value
        if node.kind == "input":
            if not isinstance(value, torch.Tensor):
                return None
            ids = self._fixed_ids(tuple(value.shape))
            self.input_ids.append(ids.flat())
            return ids
        if node.kind == "attr":
            if not isinstance(value, torch.Tensor):
                return None
            # A parameter or buffer used directly (layer scale, position embedding, weights passed to an
            # attention kernel): one fixed id for all of it. Channels meeting it are fixed, as with one id
            # per element, which would cost millions of ids for attention weights.
            return self._one_fixed_id(value)
        if node.kind == "output":
            self._fix_outputs(self._ids(node.args))
            return None
        if node.kind == "module":
            return self._module(node)
        return self._call(node)

    def _fix_outputs(self, tree: Any) -> None:
        if isinstance(tree, Ids):
            self.units.fix(tree.flat())
        elif isinstance(tree, (tuple, list)):
            for t in tree:
                self._fix_outputs(t)
        elif isinstance(tree, dict):
            for t in tree.values():
                self._fix_outputs(t)

    def _normalise(self, x: Ids, dims: range | list[int]) -> Ids:
        """A norm across `dims`: the channels it normalises together are fixed (see ops.py)."""
        self._fix_along(x, *dims)
        return x

    def _mixing(self, operands: Any, value: Any) -> Any:
        """An op the graph does not see into: its operands' channels and its outputs are fixed."""
        self._fix_outputs(operands)
        return tree_map(self._constant_ids, value)

    def _one_fixed_id(self, v: Any) -> Ids | None:
        """One fixed id for a whole tensor computed from parameters alone (see the "attr" visit)."""
        if not isinstance(v, torch.Tensor):
            return None
        one = self.units.new(1)
        self.units.fix(one)
        core = one.reshape((1,) * v.dim())
        return Ids(tuple(v.shape), core=core)

    def _constant_ids(self, v: Any) -> Ids | None:
        """Fixed ids for a tensor whose channels the graph does not follow (dims 1 and -1 may hold channels)."""
        if not isinstance(v, torch.Tensor):
            return None
        shape = tuple(v.shape)
        if len(shape) < 3:
            return self._fixed_ids(shape)
        core_shape = (1, shape[1], *([1] * (len(shape) - 3)), shape[-1])
        core = self.units.new(shape[1] * shape[-1]).reshape(core_shape)
        self.units.fix(core)
        return Ids(shape, core=core)

    def _module(self, node: Node) -> Any:
        module, value = node.module, node.value
        if node.category == "attention" and _heads_are_units(node):
            return self._attention(node)
        if node.category in ("attention", "mixing"):
            return self._mixing((self._ids(node.args), self._ids(node.kwargs)), value)
        x = self._ids(node.args[0])
        assert module is not None and isinstance(x, Ids)
        shape = tuple(value.shape)
        if node.category == "conv":
            assert isinstance(module, torch.nn.modules.conv._ConvNd)
            if len(x.shape) != len(module.kernel_size) + 2:
                raise UserError(f"conv {node.where} got an unbatched {len(x.shape)}-d input",
                                "trace with a batched example input (N, C, H, W)")
            cin = self._channel_vec(x, 1, node.where)
            out = self.units.new(module.out_channels)
            if module.groups > 1:  # each group of inputs feeds only its group of outputs: one unit per group
                ins, outs = cin.reshape(module.groups, -1), out.reshape(module.groups, -1)
                self.units.union(np.broadcast_to(outs[:, :1], ins.shape), ins)
                self.units.union(np.broadcast_to(outs[:, :1], outs.shape), outs)
            self._layer_sides(node, cin, out)
            return Ids(shape, vec=out)
        if node.category == "linear":
            assert isinstance(module, torch.nn.Linear)
            out = self.units.new(module.out_features)
            self._layer_sides(node, self._channel_vec(x, -1, node.where), out)
            return _last_dim(shape, out)
        if node.category == "bn":
            vec = self._channel_vec(x, 1, node.where)
            self._member(node.target, "bn", vec)
            return Ids(shape, vec=vec)
        if node.category == "pointwise":
            return x
        if node.category == "norm":
            if isinstance(module, torch.nn.GroupNorm):
                return self._group_norm(node, module, x)
            normalized = getattr(module, "normalized_shape", None)  # LayerNorm (GroupNorm: `_group_norm`)
            return self._normalise(x, range(-len(normalized), 0) if normalized else range(1, len(shape)))
        if node.category == "spatial":
            return Ids(shape, vec=self._channel_vec(x, 1, node.where))
        if node.category == "movement":  # nn.Flatten
            assert isinstance(module, torch.nn.Flatten)
            return self._guard(_compress(torch.flatten(x.tensor(), module.start_dim, module.end_dim)))
        assert node.category == "reduce"  # nn.Softmax / nn.LogSoftmax
        return self._reduce(x, shape, [getattr(module, "dim", None)], keepdim=True)

    def _group_norm(self, node: Node, module: torch.nn.GroupNorm, x: Ids) -> Ids:
        """nn.GroupNorm normalises each group of C / G channels over the group and space, apart from the other
        groups: a whole group can go without changing what the kept ones compute. So each group's channels are
        one unit (a unit spanning several groups removes them all), and the layer is listed with the batch
        norms (role "bn": its gamma and beta are sliced and give Taylor importance; pruning lowers
        `num_groups`). Where the channels also vary along another dim, they are fixed, as for any norm."""
        if x.shape[1:2] != (module.num_channels,) or any(self._varies(x, d) for d in range(2, len(x.shape))):
            return self._normalise(x, range(1, len(x.shape)))
        vec = self._channel_vec(x, 1, node.where)
        groups = vec.reshape(module.num_groups, -1)
        self.units.union(np.broadcast_to(groups[:, :1], groups.shape), groups)
        self._member(node.target, "bn", vec)
        return x

    def _layer_sides(self, node: Node, cin: np.ndarray, out: np.ndarray) -> None:
        """Record a conv/linear layer's input and output channel ids; pinned sides are never pruned."""
        for role, ids in (("in", cin), ("out", out)):
            self._member(node.target, role, ids)
            if role in node.pinned:
                self.units.fix(ids)

    def _attention(self, node: Node) -> Any:
        """A supported attention module (see attention.py): q, k, v and the output projection's inputs
        are new channels, one unit per head (or per dim of every head); its projections become layers."""
        module, value = node.module, node.value
        assert module is not None
        layout = attention_layout(module)
        assert layout is not None
        heads, head_dim = layout.heads, layout.head_dim
        qkv = self.units.new(3 * heads * head_dim).reshape(3, heads, head_dim)
        v = qkv[2]
        anchor = v[None, :, :1] if self.attention_units == "heads" else v[None, :1, :]
        self.units.union(np.broadcast_to(anchor, qkv.shape), qkv)

        def path(rel: str) -> str:
            return f"{node.target}.{rel}" if rel else node.target

        x = self._ids(node.args[0])
        assert isinstance(x, Ids)
        in_shape = x.shape
        out_shape = tuple((value[0] if isinstance(value, tuple) else value).shape)
        if isinstance(module, torch.nn.MultiheadAttention):  # torch reads and writes embed_dim: kept
            self._fix_outputs((self._ids(node.args), self._ids(node.kwargs)))
        self._member(path(layout.qkv), "in", self._channel_vec(x, -1, node.where))
        self._member(path(layout.qkv), "out", qkv.ravel())
        self._member(path(layout.proj), "in", v.ravel())
        self._member(node.target, "attn", v.ravel())
        out = self.units.new(out_shape[-1])
        self._member(path(layout.proj), "out", out)
        qkv_shape, proj_in_shape = (*in_shape[:-1], 3 * heads * head_dim), (*in_shape[:-1], heads * head_dim)
        self.inner_layers[path(layout.qkv)] = (module.get_submodule(layout.qkv), in_shape, qkv_shape)
        self.inner_layers[path(layout.proj)] = (module.get_submodule(layout.proj), proj_in_shape, out_shape)
        if layout.bias_mlp is not None:  # Swin V2: relative coordinates -> hidden -> one bias per head
            first, last = (module.get_submodule(p) for p in layout.bias_mlp)
            assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
            coords = module.get_buffer("relative_coords_table")
            coords_in = self.units.new(first.in_features)
            self.units.fix(coords_in)
            hidden = self.units.new(first.out_features)
            per_head = v[:, 0] if self.attention_units == "heads" else self.units.new(heads)
            if self.attention_units != "heads":
                self.units.fix(per_head)
            for rel, role, ids in ((layout.bias_mlp[0], "in", coords_in), (layout.bias_mlp[0], "out", hidden),
                                   (layout.bias_mlp[1], "in", hidden), (layout.bias_mlp[1], "out", per_head)):
                self._member(path(rel), role, ids)
            grid = tuple(coords.shape[:-1])
            self.inner_layers[path(layout.bias_mlp[0])] = (first, (*grid, first.in_features), (*grid, first.out_features))
            self.inner_layers[path(layout.bias_mlp[1])] = (last, (*grid, last.in_features), (*grid, last.out_features))
        self.attention[node.target] = module
        if isinstance(module, torch.nn.MultiheadAttention):
            self.units.fix(out)
            return (_last_dim(out_shape, out), None)
        return _last_dim(out_shape, out)

    def _call(self, node: Node) -> Any:
        if node.category == "meta":
            if node.fn is torch._assert:  # torch._assert(x.shape[1] == 64, ...): fx traces the check, not a branch
                self.numbers.extend(ref_indices(node.args[:1]))
            return None
        if node.category == "constant":
            return tree_map(self._constant_ids, node.value)
        args = self._ids(node.args)
        kwargs = self._ids(node.kwargs)
        operands = [a for a in (*args, *kwargs.values()) if isinstance(a, Ids)]
        value = node.value
        if node.op == "getitem" and isinstance(args[0], (tuple, list)):  # element of chunk()/split() results
            return args[0][self._value(node.args[1])]
        if not operands and not any(isinstance(a, (tuple, list)) and any(isinstance(e, Ids) for e in a) for a in args):
            return None  # size arithmetic and other non-tensor values
        category = node.category
        if node.op in ("max", "min") and len(operands) > 1:  # torch.max(a, b): element-wise
            category = "elementwise"
        if category in ("pointwise", "elementwise"):  # y / y.size(1): a width read as a number scales the data
            self.numbers.extend(i for i in node.inputs
                                if not isinstance(self.nodes[i].value, torch.Tensor))
        if category == "pointwise":
            return operands[0]
        if category == "mixing":
            if self.constant[-1]:  # parameters mixed alone (a standardised conv weight): one fixed id, as for them
                return tree_map(self._one_fixed_id, value)
            return self._mixing((args, kwargs), value)
        if category == "norm":
            x, values = operands[0], self._value(node.args)
            if node.op in ("layer_norm", "rms_norm"):
                dims: range | list[int] = range(-len(_arg(node, values, 1, "normalized_shape", ())), 0)
            elif node.op == "group_norm":
                dims = range(1, len(x.shape))
            else:  # F.normalize(x, p, dim)
                dims = [int(_arg(node, values, 2, "dim", 1))]
            return self._normalise(x, dims)
        if category == "elementwise":
            shape = tuple(value.shape)
            constant = {id(self.ids[r.index]) for r in (*node.args, *node.kwargs.values())
                        if isinstance(r, Ref) and self.constant[r.index]}
            computed = [o for o in operands if id(o) not in constant] or operands
            primary = next((o for o in computed if o.shape == shape), max(computed, key=lambda o: int(np.prod(o.shape))))
            for other in operands:
                if other is not primary and id(other) in constant:
                    self._meet_constant(primary, other, shape)
                elif other is not primary:
                    self._couple(primary, other, shape)
            return self._broadcast(primary, shape)
        if category == "spatial":
            x = operands[0]
            if node.op == "pad":
                return self._pad(x, self._value(_arg(node, node.args, 1, "pad", ())), value)
            vec = self._channel_vec(x, 1, node.where)
            if isinstance(value, torch.Tensor):
                return Ids(tuple(value.shape), vec=vec)
            return tuple(Ids(tuple(v.shape), vec=vec) for v in value)
        if category == "reduce":
            values = self._value(node.args)
            if node.op in ("softmax", "log_softmax"):
                dims, keepdim = [_arg(node, values, 1, "dim", None)], True
            else:  # positions of dim and keepdim: x.norm(p, dim, keepdim), x.var(dim, unbiased, keepdim)
                at_dim, at_keep = _REDUCE_ARGS.get(node.op, (1, 2))
                dim = _arg(node, values, at_dim, "dim", None)
                dims = list(dim) if isinstance(dim, (tuple, list)) else [dim]
                keepdim = bool(_arg(node, values, at_keep, "keepdim", False))
            if isinstance(value, tuple):  # x.max(dim): (values, indices), the same positions
                out = self._reduce(operands[0], tuple(value[0].shape), dims, keepdim)
                return (out, out)
            return self._reduce(operands[0], tuple(value.shape), dims, keepdim)
        assert category == "movement", category
        if node.op == "getitem" and _holds_ids(args[1:]):  # indexed by a tensor whose values are not traced
            return self._mixing((args, kwargs), value)
        return self._movement(node, args, kwargs)

    def _pad(self, x: Ids, pad: Any, value: Any) -> Any:
        """F.pad: padding (last dim first) keeps every channel where it is along dims padded by zero; a
        dim padded by a non-zero amount that holds several units (padded channels) pins them."""
        ndim = len(x.shape)
        padded = [ndim - 1 - k // 2 for k, p in enumerate(pad) if p != 0]
        grid = x.grid()
        if any(self._varies(x, d) for d in padded):
            return self._mixing((x,), value)
        for d in set(padded):  # constant along d (one unit): one position stands for all
            grid = grid.take([0], axis=d)
        return _grid_ids(tuple(value.shape), grid)

    def _reduce(self, x: Ids, shape: tuple[int, ...], dims: list[Any], keepdim: bool) -> Ids:
        ndim = len(x.shape)
        axes = list(range(ndim)) if dims == [None] else sorted(_normdim(int(d), ndim) for d in dims)
        if 0 not in axes and 1 not in axes and x.vec is not None:
            return Ids(shape, vec=x.vec)
        mixing = [d for d in axes if self._varies(x, d)]
        if mixing:  # every output depends on several units: none of them may be pruned
            self.units.fix(x.flat())
            return self._fixed_ids(shape)
        if shape == x.shape:  # softmax, or a reduction over size-1 dims: one unit along each axis, ids stay
            return x
        t, grid = x.tensor(), x.grid()
        for d in reversed(axes):
            t, grid = (t.narrow(d, 0, 1), grid.take([0], axis=d)) if keepdim else (t.select(d, 0), grid.take(0, axis=d))
        return self._guard(_from_core(shape, t, grid))

    def _fast_movement(self, node: Node, args: tuple[Any, ...]) -> Ids | None:
        """Concat along channels and flatten(x, 1) of per-channel ids, without touching spatial dims; a permutation
        of dims (ConvNeXt's and every transformer's NCHW <-> NHWC) on the ids' small grid alone."""
        value = node.value
        if not isinstance(value, torch.Tensor):
            return None
        values = self._value(node.args)
        perm = _permutation(node.op, values, node.kwargs, len(args[0].shape)) if isinstance(args[0], Ids) else None
        if perm is not None:
            return self._guard(_grid_ids(tuple(value.shape), np.transpose(args[0].grid(), perm)))
        if node.op in ("cat", "concat", "concatenate") and isinstance(args[0], (tuple, list)):
            parts = args[0]
            dim = _arg(node, values, 1, "dim", 0)
            if all(isinstance(p, Ids) and p.vec is not None for p in parts) and _normdim(dim, value.dim()) == 1:
                return Ids(tuple(value.shape), vec=np.concatenate([p.vec for p in parts]))
        x = args[0]
        if (node.op == "flatten" and isinstance(x, Ids) and x.vec is not None and value.dim() == 2
                and _arg(node, values, 1, "start_dim", 0) == 1):
            return Ids(tuple(value.shape), vec=np.repeat(x.vec, int(np.prod(x.shape[2:], dtype=np.int64))))
        return None

    def _movement(self, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fast = self._fast_movement(node, args)
        if fast is not None:
            return fast
        if node.op in ("view", "reshape", "flatten") and args and isinstance(args[0], Ids) and isinstance(
                node.value, torch.Tensor):
            reshaped = _reshaped_ids(args[0], tuple(node.value.shape))
            if reshaped is not None:
                if node.op != "flatten":
                    self._check_sizes(node, reshaped)
                return reshaped

        def materialise(obj: Any, contiguous: bool) -> Any:
            if isinstance(obj, Ids):
                return obj.tensor().contiguous() if contiguous else obj.tensor()
            if isinstance(obj, (tuple, list)):
                return type(obj)(materialise(o, contiguous) for o in obj)
            return obj

        def merged(ids_arg: Any, raw: Any, contiguous: bool) -> Any:  # tensors -> id tensors, refs -> values
            if isinstance(ids_arg, Ids) or isinstance(ids_arg, (tuple, list)) and any(
                    isinstance(e, Ids) for e in ids_arg):
                return materialise(ids_arg, contiguous)
            return self._value(raw)

        def apply(contiguous: bool) -> Any:
            assert node.fn is not None
            return node.fn(*[merged(a, r, contiguous) for a, r in zip(args, node.args)],
                           **{k: merged(kwargs[k], node.kwargs[k], contiguous) for k in node.kwargs})

        try:  # on broadcast views first (no copy); view() needs real strides
            result = apply(False)
        except RuntimeError:
            result = apply(True)
        src = next((a for a in args if isinstance(a, Ids)), None)
        values = self._value(node.args)
        if node.op in ("chunk", "split", "unbind") and src is not None:
            dim = _normdim(int(_arg(node, values, 1 if node.op == "unbind" else 2, "dim", 0)), len(src.shape))
            if self._varies(src, dim):
                lengths = {p.shape[dim] for p in result} if node.op != "unbind" else set()
                if node.op == "chunk" and len(lengths) == 1:
                    self._balance(src, dim, len(result))
                else:  # explicit sizes (or one part per index) cannot follow a pruned dim
                    self.units.fix(src.flat())
        if node.op == "getitem" and src is not None:
            self._check_index(src, values[1])
        if node.op in ("unfold", "narrow", "select") and src is not None:  # literal extents on that dim
            self._fix_along(src, _normdim(int(_arg(node, values, 1, "dim", 0)), len(src.shape)))
        if isinstance(result, torch.Tensor):
            out: Any = self._guard(_compress(result))
        else:
            out = type(result)(self._guard(_compress(r)) for r in result)
        if node.op in ("view", "reshape", "expand") and isinstance(out, Ids):
            self._check_sizes(node, out)
        return out

    def _check_index(self, src: Ids, index: Any) -> None:
        """Indexing a pruned dim with constants (x[:, :64], x[:, 3]) pins the units along it."""
        items = list(index) if isinstance(index, tuple) else [index]
        explicit = sum(1 for i in items if i is not None and i is not Ellipsis)
        dim = 0
        for item in items:
            if item is Ellipsis:
                dim += len(src.shape) - explicit
            elif item is None:
                continue
            else:
                if not (isinstance(item, slice) and item == slice(None)):
                    self._fix_along(src, dim)
                dim += 1

    def _check_sizes(self, node: Node, out: Ids) -> None:
        """A literal size on a dim holding several units would break once they are pruned."""
        if node.op == "reshape" and node.fn is torch.reshape or len(node.args) == 2 and isinstance(
                node.args[1], (tuple, list)):
            sizes = list(node.args[1])
        else:
            sizes = list(node.args[1:]) or list(node.kwargs.get("shape", node.kwargs.get("size", ())))
        if len(sizes) != len(out.shape):
            return
        for d, size in enumerate(sizes):
            if not isinstance(size, Ref) and size != -1:
                self._fix_along(out, d)
            elif isinstance(size, Ref) and self._varies(out, d):
                self._follow_size(size, out, d)

    def _size_source(self, size: Ref) -> tuple[Ids, int] | None:
        """(ids of the tensor, dim) when `size` is read directly from a traced tensor (x.size(k), x.shape[k])."""
        node = self.nodes[size.index]
        if node.op == "size" and len(node.args) > 1 and isinstance(node.args[0], Ref):
            tensor, dim = node.args[0], self._value(node.args[1])
        elif node.op == "getitem" and isinstance(node.args[0], Ref):
            shape = self.nodes[node.args[0].index]
            if not (shape.op in ("size", "getattr") and shape.args and isinstance(shape.args[0], Ref)):
                return None
            if shape.op == "getattr" and shape.args[1:] != ("shape",) or shape.op == "size" and len(shape.args) > 1:
                return None
            tensor, dim = shape.args[0], self._value(node.args[1])
        else:
            return None
        ids = self.ids[tensor.index]
        return (ids, _normdim(dim, len(ids.shape))) if isinstance(ids, Ids) and isinstance(dim, int) else None

    def _follow_size(self, size: Ref, out: Ids, dim: int) -> None:
        """A size read from another tensor sets an output dim that holds several units: the pruned model reads
        that tensor's pruned size. Unless both dims hold the same units (reordered), they are tied index by
        index (equal kept counts); when that is not possible (the source dim is not pruned along) they are
        pinned. Computed sizes (x.size(1) // 2) are left to the shuffle rules."""
        source = self._size_source(size)
        if source is None:
            return  # computed sizes (x.size(1) // 2): the shuffle rules above keep them consistent
        ids, k = source
        a, b = self._index_units(ids, k), self._index_units(out, dim)
        if a is not None and b is not None and np.array_equal(np.sort(a), np.sort(b)):
            return  # the same units, reordered (a channel shuffle): the counts follow
        if a is not None and b is not None and a.size == b.size and self._varies(ids, k):
            self.units.union(a, b)
        else:
            self._fix_along(out, dim)

    def _index_units(self, ids: Ids, dim: int) -> np.ndarray | None:
        """One canonical unit per index along `dim`, or None when units also vary along other dims."""
        canon = np.moveaxis(self.units.find(ids.grid()), dim, 0)
        rows = canon.reshape(canon.shape[0], -1)
        if not np.all(rows == rows[:, :1]):
            return None
        return np.broadcast_to(rows[:, 0], (ids.shape[dim],)).copy()


def internal_error(what: str, exc: Exception) -> UserError:
    """The one-line refusal for an unexpected failure of the graph itself on `what`."""
    detail = (str(exc).splitlines() or [""])[0][:200]
    return UserError(f"the dependency graph failed on {what} ({type(exc).__name__}: {detail})",
                     "this is a limitation of the graph that only an iee-deploy change can fix; if the op is your own "
                     "code, iee_deploy.graph.register_op(op, 'mixing') keeps its channels whole")


def analyse(trace: Trace, attention_units: AttentionUnits = "heads") -> Coupling:
    """Run the channel analysis on a trace.

    Id tensors are small; torch's thread pool only adds overhead to copying them (tens of times
    slower on a busy machine), so the analysis runs single-threaded and restores the setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ChannelAnalysis(trace, attention_units).run()
    finally:
        torch.set_num_threads(threads)
