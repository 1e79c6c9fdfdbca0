"""Multi-head attention in the dependency graph: heads (or head dims) as channel units, and pruned modules.

An attention module projects its input to q, k and v of ``num_heads * head_dim`` channels each (its
*inner* width), attends per head, and projects v's result back with an output projection. Inner
channel ``h * head_dim + j`` is dim j of head h. The graph makes one channel unit either of

- a whole head (``units="heads"``): its q, k and v rows of the input projection and its columns of
  the output projection; per-head tensors (Swin's and MaxViT's relative position bias tables, Swin
  V2's logit scale and the last layer of its bias MLP) go with it; or
- one head dim in every head (``units="head_dims"``): q, k and v row j of every head and those
  output columns. Every head keeps the same dims, so ``head_dim`` stays one number.

Both are exact: a masked head (zero q, k, v rows) outputs exactly 0, and a masked dim adds 0 to every
q.k product (and to Swin V2's L2-normalised q and k), so the pruned module computes what the masked
one does, provided the softmax scale stays the original ``head_dim ** -0.5``. The pruned modules below
store that scale (MaxViT's own `scale_factor` is already a stored constant).

Supported: torch's nn.MultiheadAttention (ViT), torchvision's Swin ShiftedWindowAttention and its V2,
and MaxViT's RelativePositionalMultiHeadAttention.

The embedding width (the module's input and output) is another matter. nn.MultiheadAttention,
torchvision's ``shifted_window_attention`` and MaxViT's forward derive the inner width from it
(``embed_dim``, ``C``, ``D``), so their own code cannot shrink heads alone; pruning swaps the module for
a subclass whose forward reads ``num_heads * head_dim`` instead. nn.MultiheadAttention's embedding
width itself is kept (its q, k, v inputs and its output are fixed); the other modules' projections are
plain Linear layers whose input and output channels follow the rest of the graph (in these models they
are on a LayerNorm-ed residual stream, so kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from iee_deploy.errors import UserError

AttentionUnits = Literal["heads", "head_dims"]
"""What one channel unit of an attention module is: a whole head, or one dim of every head."""
ATTENTION_UNITS: tuple[str, ...] = ("heads", "head_dims")


@dataclass(frozen=True)
class AttentionLayout:
    """Where an attention module keeps its heads (paths relative to the module, '' = the module itself).

    `qkv`: the q/k/v input projection (rows q | k | v, each head-major); `proj`: the output projection
    (columns head-major); `per_head`: (parameter, dim) pairs holding one slice per head; `bias_mlp`: the
    two Linear layers of Swin V2's relative position bias MLP (the second has one output per head);
    `heads_attr`: the attribute holding the head count.
    """

    heads: int
    head_dim: int
    qkv: str
    proj: str
    per_head: tuple[tuple[str, int], ...] = ()
    bias_mlp: tuple[str, str] | None = None
    heads_attr: str = "num_heads"


def attention_layout(module: nn.Module) -> AttentionLayout | None:
    """The layout of a supported attention module, or None when the graph must keep it whole.

    nn.MultiheadAttention is supported with packed q/k/v weights (kdim = vdim = embed_dim), without
    bias_k/bias_v or add_zero_attn (their extra key and value rows are not per channel here).
    """
    if type(module) not in ATTENTION_MODULES:  # a user's subclass may have its own forward
        return None
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            return None
        return AttentionLayout(module.num_heads, module.head_dim, "", "out_proj")
    if isinstance(module, ShiftedWindowAttentionV2):
        return AttentionLayout(module.num_heads, _head_dim(module), "qkv", "proj", (("logit_scale", 0),),
                               ("cpb_mlp.0", "cpb_mlp.2"))
    if isinstance(module, ShiftedWindowAttention):
        return AttentionLayout(module.num_heads, _head_dim(module), "qkv", "proj",
                               (("relative_position_bias_table", 1),))
    if isinstance(module, RelativePositionalMultiHeadAttention):  # MaxViT: its scale is a stored constant
        return AttentionLayout(module.n_heads, module.head_dim, "to_qkv", "merge",
                               (("relative_position_bias_table", 1),), heads_attr="n_heads")
    return None


def _head_dim(module: ShiftedWindowAttention) -> int:
    return int(getattr(module, "head_dim", module.proj.in_features // module.num_heads))


def weight_names(module: nn.Module) -> tuple[str, str]:
    """Attribute names of a layer's (weight, bias): nn.MultiheadAttention's input projection is
    `in_proj_weight`/`in_proj_bias` (rows q | k | v); every other layer has `weight`/`bias`."""
    if isinstance(module, nn.MultiheadAttention):
        return "in_proj_weight", "in_proj_bias"
    return "weight", "bias"


def layer_weight(module: nn.Module) -> Tensor:
    """A layer's weight tensor (`weight_names(module)[0]`): its output channels are rows."""
    weight: Tensor = getattr(module, weight_names(module)[0])
    return weight


def kept_heads_and_dims(layout: AttentionLayout, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept heads, kept dims within a head) from removed inner positions, which must remove whole
    heads or the same dims of every head (what the graph's units guarantee)."""
    kept = np.ones(layout.heads * layout.head_dim, dtype=bool)
    kept[drop] = False
    grid = kept.reshape(layout.heads, layout.head_dim)
    heads, dims = grid.any(1), grid.any(0)
    if not np.array_equal(grid, np.outer(heads, dims)):
        raise UserError("attention channels must be removed as whole heads or the same dims of every head",
                        "prune with the groups of build_dependency_graph")
    return np.flatnonzero(heads), np.flatnonzero(dims)


def prune_attention(module: nn.Module, layout: AttentionLayout, drop: np.ndarray) -> None:
    """Shrink an attention module of `layout` (taken before pruning) to its kept heads and head dims, in place.

    Its projections are sliced by the graph as layers; here the per-head tensors are sliced,
    `num_heads`/`head_dim` set, the original softmax scale stored, and the module becomes its pruned
    subclass (same parameters and state, a forward that reads the inner width from those attributes).
    """
    heads, dims = kept_heads_and_dims(layout, drop)
    index = torch.from_numpy(heads)
    for name, dim in layout.per_head:
        param = getattr(module, name)
        setattr(module, name, nn.Parameter(param.detach().index_select(dim, index.to(param.device)).clone(),
                                           requires_grad=param.requires_grad))
    scale = getattr(module, "scale", layout.head_dim ** -0.5)
    module.__class__ = _PRUNED[type(module)] if type(module) in _PRUNED else type(module)
    for attr, value in ((layout.heads_attr, int(heads.size)), ("head_dim", int(dims.size)), ("scale", scale)):
        setattr(module, attr, value)


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose inner width `num_heads * head_dim` may be below `embed_dim`.

    Same parameters, arguments and results as nn.MultiheadAttention (packed q/k/v weights); the
    attention logits are scaled by `scale`, the unpruned module's ``head_dim ** -0.5``.
    """

    scale: float

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        inner = self.num_heads * self.head_dim
        weight, bias = self.in_proj_weight, self.in_proj_bias
        q, k, v = (F.linear(t, weight[i * inner:(i + 1) * inner], None if bias is None else bias[i * inner:(i + 1) * inner])
                   for i, t in enumerate((query, key, value)))
        n, lq, lk = q.size(0), q.size(1), k.size(1)
        q, k, v = (t.reshape(n, -1, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (n, heads, lq, lk)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            mask = attn_mask.reshape(-1, self.num_heads, lq, lk) if attn_mask.dim() == 3 else attn_mask
            logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]
            logits = logits.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else logits + pad
        weights = F.dropout(logits.softmax(-1), p=self.dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).reshape(n, lq, inner)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        attention = weights.mean(1) if average_attn_weights else weights
        return out, attention if batched else attention.squeeze(0)


def window_attention(module: ShiftedWindowAttention, x: Tensor, bias: Tensor,
                     logit_scale: Tensor | None = None) -> Tensor:
    """torchvision's `shifted_window_attention` with the inner width `num_heads * head_dim` and the
    scale of the module, not derived from the input width (same windows, shift, mask and bias)."""
    window, heads, head_dim = module.window_size, module.num_heads, module.head_dim
    batch, height, width, _ = x.shape
    pad_r, pad_b = (window[1] - width % window[1]) % window[1], (window[0] - height % window[0]) % window[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_h, pad_w, channels = x.shape
    shift = [0 if window[0] >= pad_h else module.shift_size[0], 0 if window[1] >= pad_w else module.shift_size[1]]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = (pad_h // window[0]) * (pad_w // window[1])
    x = x.view(batch, pad_h // window[0], window[0], pad_w // window[1], window[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch * windows, window[0] * window[1], channels)
    qkv_bias = module.qkv.bias
    if logit_scale is not None and qkv_bias is not None:  # Swin V2: no key bias
        qkv_bias = qkv_bias.clone()
        qkv_bias[heads * head_dim:2 * heads * head_dim] = 0
    qkv = F.linear(x, module.qkv.weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:  # cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * module.scale).matmul(k.transpose(-2, -1))
    attn = attn + bias
    if sum(shift) > 0:
        mask = x.new_zeros((pad_h, pad_w))
        h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                mask[h[0]:h[1], w[0]:w[1]] = count
                count += 1
        mask = mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
        mask = mask.permute(0, 2, 1, 3).reshape(windows, window[0] * window[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(x.size(0) // windows, windows, heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=module.attention_dropout, training=module.training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * head_dim)
    x = F.dropout(F.linear(x, module.proj.weight, module.proj.bias), p=module.dropout, training=module.training)
    out_channels = x.size(-1)
    x = x.view(batch, pad_h // window[0], pad_w // window[1], window[0], window[1], out_channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, pad_h, pad_w, out_channels)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width, :].contiguous()


class PrunedShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's ShiftedWindowAttention with `head_dim` and `scale` set by pruning (see `window_attention`)."""

    head_dim: int
    scale: float

    def forward(self, x: Tensor) -> Tensor:
        return window_attention(self, x, self.get_relative_position_bias())


class PrunedShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    """torchvision's ShiftedWindowAttentionV2 (cosine attention) with `head_dim` set by pruning."""

    head_dim: int
    scale: float

    def forward(self, x: Tensor) -> Tensor:
        return window_attention(self, x, self.get_relative_position_bias(), self.logit_scale)


class PrunedRelativePositionalMultiHeadAttention(RelativePositionalMultiHeadAttention):
    """torchvision's MaxViT attention, whose output width before `merge` is `n_heads * head_dim`, not the
    input width (same einsum attention and scale, `scale_factor`)."""

    def forward(self, x: Tensor) -> Tensor:
        batch, grids, points, _ = x.shape
        q, k, v = (t.reshape(batch, grids, points, self.n_heads, self.head_dim).permute(0, 1, 3, 2, 4)
                   for t in torch.chunk(self.to_qkv(x), 3, dim=-1))
        logits = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k * self.scale_factor)
        weights = F.softmax(logits + self.get_relative_positional_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", weights, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(batch, grids, points, self.n_heads * self.head_dim))


_PRUNED: dict[type[nn.Module], type[nn.Module]] = {
    nn.MultiheadAttention: PrunedMultiheadAttention,
    ShiftedWindowAttention: PrunedShiftedWindowAttention,
    ShiftedWindowAttentionV2: PrunedShiftedWindowAttentionV2,
    RelativePositionalMultiHeadAttention: PrunedRelativePositionalMultiHeadAttention,
}
"""Each supported attention class and its pruned subclass (a pruned module maps to itself)."""

ATTENTION_MODULES: tuple[type[nn.Module], ...] = (*_PRUNED, *_PRUNED.values())
