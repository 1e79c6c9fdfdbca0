"""The fx tracer's shape arithmetic (which skips torch's slow meta kernels) equals torch's own result,
and hands back to torch (None) wherever torch would refuse the input."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iee_deploy.graph.trace import (
    _adaptive_pool_shape,
    _attention_shape,
    _call_value,
    _cat_shape,
    _conv_shape,
    _functional_conv_shape,
    _interpolate_shape,
    _linear_shape,
    _pad_shape,
    _reduce_shape,
    _rnn_value,
    _statistic_shape,
    broadcast_shape,
)


def torch_shape(fn, *args, **kwargs) -> tuple[int, ...] | None:
    try:
        return tuple(fn(*args, **kwargs).shape)
    except RuntimeError:
        return None


@pytest.mark.parametrize("cls", [nn.Conv1d, nn.Conv2d])
def test_conv_shapes_equal_torch(cls):
    nd = 1 if cls is nn.Conv1d else 2
    checked = 0
    for k, s, p, d in itertools.product((1, 3, 4), (1, 2, 3), (0, 1, "same", "valid"), (1, 2)):
        if p == "same" and s > 1:
            continue  # refused by nn.Conv itself
        conv = cls(4, 6, k, stride=s, padding=p, dilation=d, groups=2)
        for size, batched in itertools.product((1, 5, 8), (True, False)):
            x = torch.zeros(((1, 4) if batched else (4,)) + (size,) * nd)
            expected = torch_shape(conv, x)
            assert _conv_shape(conv, x.to("meta")) == expected, (k, s, p, d, size, x.shape)
            checked += expected is not None
    assert checked > 150
    conv = cls(4, 6, 3)
    assert _conv_shape(conv, torch.zeros((1, 3) + (9,) * nd, device="meta")) is None  # wrong channels: torch's error
    assert _conv_shape(cls(4, 6, 3, padding=1, padding_mode="reflect"), torch.zeros((1, 4) + (9,) * nd)) is None


def test_functional_conv_shapes_equal_torch():
    checked = 0
    for fn, nd in ((F.conv1d, 1), (F.conv2d, 2)):
        w = torch.zeros((6, 2) + (3,) * nd)
        for size, stride, padding, dilation, groups, batched in itertools.product(
                (1, 4, 7), (1, 2), (0, 1, (1,) * nd), (1, 2), (1, 2), (True, False)):
            x = torch.zeros(((1,) if batched else ()) + (2 * groups,) + (size,) * nd)
            kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
            expected = torch_shape(fn, x, w, None, **kwargs)
            assert _functional_conv_shape(fn, (x.to("meta"), w), kwargs) == expected, (fn, size, kwargs)
            checked += expected is not None
    assert checked > 100
    x, w = torch.zeros(1, 4, 8, 8), torch.zeros(6, 4, 3, 3)
    assert _functional_conv_shape(F.conv2d, (x, w, None, 1, "same"), {}) is None  # string padding: left to torch
    assert _functional_conv_shape(F.conv2d, (x, torch.zeros(6, 3, 3, 3)), {}) is None  # wrong channels: torch's error


def test_adaptive_pool_shapes_equal_torch():
    for pool in (nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((None, 3)), nn.AdaptiveMaxPool2d((2, 3)),
                 nn.AdaptiveAvgPool1d(4), nn.AdaptiveAvgPool3d((1, None, 2))):
        nd = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool3d: 3}.get(type(pool), 2)
        for shape in ((2, 3) + (5,) * nd, (3,) + (5,) * nd):
            assert _adaptive_pool_shape(pool, torch.zeros(shape, device="meta")) == torch_shape(pool, torch.zeros(shape))
    assert _adaptive_pool_shape(nn.AdaptiveMaxPool2d(1, return_indices=True), torch.zeros(1, 3, 4, 4)) is None


def test_cat_shapes_equal_torch():
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4, 4)
    for tensors, dim in (((a, b), 1), ([a, a, a], 0), ((a, b), -3), ((a,), 3), ((a, b), 0), ((a, b), 4)):
        expected = torch_shape(torch.cat, tensors, dim=dim) if -4 <= dim < 4 else None
        assert _cat_shape(([t.to("meta") for t in tensors], dim), {}) == expected, (dim, expected)
    assert _cat_shape(((a, b.long()), 1), {}) is None  # type promotion: left to torch
    assert _cat_shape(((a, b.transpose(2, 3)), 1), {}) is None  # another layout: left to torch


def test_attention_shapes_equal_torch():
    q, k, v = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 4)
    assert _attention_shape((q, k, v), {}) == torch_shape(F.scaled_dot_product_attention, q, k, v) == (2, 3, 5, 4)
    assert _attention_shape((q, k, v[..., :6, :]), {}) is None  # keys and values disagree: torch's error
    assert _attention_shape((q, k[:, :1], v[:, :1]), {}) is None  # broadcast heads: left to torch


def test_reduction_shapes_equal_torch():
    x = torch.zeros(2, 3, 4, 5)
    for fn in (torch.mean, torch.Tensor.sum, torch.amax):
        for args, kwargs in (((x, (2, 3)), {"keepdim": True}), ((x, -1), {}), ((x,), {"dim": [0, 2]}), ((x, 1, True), {})):
            assert _reduce_shape((args[0].to("meta"), *args[1:]), kwargs) == torch_shape(fn, *args, **kwargs)
    assert _reduce_shape((x, (1, 1)), {}) is None  # a repeated dim: torch's error
    assert _reduce_shape((x, 4), {}) is None  # out of range
    assert _reduce_shape((x.long(), 1), {}) is None  # an integer sum widens its dtype: left to torch
    assert _reduce_shape((x,), {}) is None  # every dim: left to torch


def test_broadcast_shapes_equal_torch():
    checked = 0
    for ranks in itertools.product(range(4), repeat=3):
        for sizes in itertools.product((1, 2, 3), repeat=sum(ranks)):
            it = iter(sizes)
            shapes = [torch.Size([next(it) for _ in range(r)]) for r in ranks]
            try:
                expected = tuple(torch.broadcast_shapes(*shapes))
            except RuntimeError:
                expected = None
            assert broadcast_shape(shapes) == expected, shapes
            checked += expected is not None
    assert checked > 1000


def test_pad_and_linear_shapes_equal_torch():
    x = torch.zeros(2, 3, 4, 5)
    for pad in ((1, 2), (0, 1, 2, 3), (1, 1, 1, 1, 1, 1), (0, 0, 0, 0, 0, 0, 0, 0), (2, 0, 0, 1, 1, 0)):
        for kwargs in ({}, {"mode": "constant", "value": 0.5}):
            assert _pad_shape((x.to("meta"), pad), kwargs) == torch_shape(F.pad, x, pad, **kwargs), (pad, kwargs)
    assert _pad_shape((x, (1, -1)), {}) is None  # a negative pad crops: left to torch
    assert _pad_shape((x, (1, 1)), {"mode": "reflect"}) is None
    assert _pad_shape((x, (1, 1, 1)), {}) is None  # odd: torch's error
    w, b = torch.zeros(7, 5), torch.zeros(7)
    for args in ((x, w), (x, w, b), (x[0, 0, 0], w), (x, w, None)):
        assert _linear_shape(args, {}) == torch_shape(F.linear, *args)
    assert _linear_shape((x,), {"weight": w, "bias": b}) == (2, 3, 4, 7)
    assert _linear_shape((x, w.t()), {}) is None  # the wrong width: torch's error
    assert _linear_shape((x, w, torch.zeros(3)), {}) is None


def test_a_memoised_meta_call_equals_torchs_and_is_a_fresh_tensor_per_node():
    memo: dict = {}
    x, y = torch.empty(2, 8, 6, device="meta"), torch.empty(2, 8, 6, device="meta").transpose(1, 2)
    first = _call_value("reduce", torch.Tensor.cumsum, (x, -1), {}, memo)
    second = _call_value("reduce", torch.Tensor.cumsum, (x.clone(), -1), {}, memo)
    assert len(memo) == 1 and first is not second and first.shape == second.shape == (2, 8, 6)
    other = _call_value("reduce", torch.Tensor.cumsum, (y, -1), {}, memo)  # another layout: its own entry
    assert len(memo) == 2 and other.shape == (2, 6, 8)
    made = [_call_value("creation", torch.full, ((2,), fill), {"device": "meta"}, memo) for fill in (1, True, 1.0)]
    assert [t.dtype for t in made] == [torch.int64, torch.bool, torch.float32]  # 1 == True == 1.0: apart by type
    assert len(memo) == 5
    stats = _call_value("reduce", torch.var_mean, (x,), {"dim": 1}, memo)
    assert [tuple(t.shape) for t in stats] == [(2, 6), (2, 6)] and len(memo) == 6
    real = torch.zeros(2, 3)  # a tensor with data: computed, never memoised
    assert _call_value("reduce", torch.Tensor.norm, (real,), {}, memo).item() == 0 and len(memo) == 6
    for _ in range(2):  # a result with data (a position grid made on the CPU) is computed each time, values and all
        assert _call_value("creation", torch.arange, (4,), {}, memo).tolist() == [0, 1, 2, 3]
    assert len(memo) == 6
    kept = _call_value("movement", torch.Tensor.unsqueeze, (x, 0), {}, memo)
    kept.unsqueeze_(0)  # an in-place op on one node's value leaves the next node's alone
    assert _call_value("movement", torch.Tensor.unsqueeze, (x, 0), {}, memo).shape == (1, 2, 8, 6)


def test_norm_and_moment_shapes_equal_torch():
    x = torch.randn(2, 3, 4, 5)
    calls = [(torch.norm, (x,), {"p": 2, "dim": (1, 2), "keepdim": True}), (torch.Tensor.norm, (x, 2, -1), {}),
             (torch.Tensor.norm, (x, float("inf"), 1, True), {}), (torch.linalg.vector_norm, (x, 1, (0, 3)), {}),
             (torch.var, (x, 1), {"keepdim": True}), (torch.Tensor.var, (x, (2, 3), False, True), {}),
             (torch.std, (x,), {"dim": -1, "correction": 0}), (torch.Tensor.std, (x, 2), {"unbiased": True})]
    for fn, args, kwargs in calls:
        meta = (args[0].to("meta"), *args[1:])
        assert _statistic_shape(fn, meta, kwargs) == torch_shape(fn, *args, **kwargs), (fn, args[1:], kwargs)
    assert _statistic_shape(torch.norm, (x,), {"p": "fro"}) is None  # a matrix norm: left to torch
    assert _statistic_shape(torch.Tensor.norm, (x,), {}) is None  # every dim: left to torch
    assert _statistic_shape(torch.var, (x, True), {}) is None  # var(x, unbiased): no dims
    assert _statistic_shape(torch.Tensor.norm, (x, 2, 1), {"dtype": torch.float64}) is None


def test_casts_and_comparisons_keep_their_own_dtype_in_the_trace():
    """The shape shortcut of per-element ops must not give a cast or a comparison its input's dtype."""
    import operator

    x = torch.empty(2, 3, device="meta")
    assert _call_value("pointwise", torch.Tensor.bool, (x,), {}).dtype == torch.bool
    assert _call_value("pointwise", torch.Tensor.half, (x,), {}).dtype == torch.float16
    assert _call_value("pointwise", torch.Tensor.to, (x, torch.int64), {}).dtype == torch.int64
    assert _call_value("elementwise", operator.lt, (x, x), {}).dtype == torch.bool
    assert _call_value("elementwise", operator.add, (x, x), {}).dtype == torch.float32


def test_interpolate_shapes_equal_torch():
    checked = 0
    for shape in ((2, 3, 7), (1, 4, 5, 9), (1, 2, 3, 4, 5)):
        x, nd = torch.zeros(shape), len(shape) - 2
        for kwargs in ({"size": 6}, {"size": (11,) * nd}, {"scale_factor": 2}, {"scale_factor": 0.5},
                       {"scale_factor": 1.7}, {"scale_factor": (1.5,) * nd, "mode": "nearest"}):
            for mode in ("nearest", "linear" if nd == 1 else "bilinear" if nd == 2 else "trilinear"):
                call = {"mode": mode, **kwargs}
                expected = torch_shape(F.interpolate, x, **call)
                assert _interpolate_shape((x.to("meta"),), call) == expected, (shape, call)
                checked += 1
    assert checked == 36
    x = torch.zeros(1, 3, 8, 8)
    assert _interpolate_shape((x, (4, 4)), {}) == torch_shape(F.interpolate, x, (4, 4)) == (1, 3, 4, 4)  # size by position
    assert _interpolate_shape((x,), {"size": 4, "scale_factor": 2}) is None  # both: torch's error
    assert _interpolate_shape((x,), {"size": (4, 4, 4)}) is None  # a size of the wrong length: torch's error
    assert _interpolate_shape((x,), {"scale_factor": 2, "recompute_scale_factor": True}) is None  # left to torch
    assert _interpolate_shape((x.long(),), {"scale_factor": 2}) is None  # an integer input: left to torch


@pytest.mark.parametrize("module", [nn.LSTM(8, 6, 2, batch_first=True, bidirectional=True), nn.LSTM(8, 6, proj_size=3),
                                    nn.GRU(8, 5, 3), nn.RNN(8, 4, batch_first=True, bidirectional=True)],
                         ids=["lstm-bidirectional", "lstm-proj", "gru", "rnn"])
def test_recurrent_layer_outputs_by_arithmetic_equal_torchs(module):
    x = torch.randn(2, 7, 8)

    def shapes(value):
        return [tuple(value.shape)] if isinstance(value, torch.Tensor) else [s for v in value for s in shapes(v)]

    with torch.no_grad():
        assert shapes(_rnn_value(module, (x.to("meta"),), {})) == shapes(module(x))
    assert _rnn_value(module, (x[0],), {}) is None  # unbatched: torch decides
    assert _rnn_value(module, (x, torch.zeros(1)), {}) is None  # an initial state: torch decides
    assert _rnn_value(module, (torch.randn(2, 7, 5),), {}) is None  # another width: torch refuses it
