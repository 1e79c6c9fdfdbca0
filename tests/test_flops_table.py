"""profiler.flops_table: a latency table's grid costed in MACs, used by the same knapsack as the control arm."""

from __future__ import annotations

import pytest
import torch
from synthetic_lut import write_synthetic_lut

from iee_deploy.flops import forward_flops, layer_costs
from iee_deploy.models import build_model
from iee_deploy.structured.budget import open_latency_model
from iee_deploy.structured.space import ChannelSpace, Start
from profiler.flops_table import BACKEND, flops_table, layer_macs
from profiler.latency import Calibration
from profiler.layers import LayerSignature
from profiler.lut import load_lut


def test_layer_macs_of_a_dense_a_depthwise_conv_and_a_linear_layer():
    dense = LayerSignature("conv", (3, 3), (2, 2), (1, 1), (1, 1), "dense", 1, (8, 8), 16, 32, False, False)
    assert layer_macs(dense, 8, 24) == 9 * 4 * 4 * 8 * 24  # 4x4 outputs at stride 2
    depthwise = LayerSignature("conv", (3, 3), (1, 1), (1, 1), (1, 1), "depthwise", 32, (8, 8), 32, 32, False, False)
    assert layer_macs(depthwise, 16, 16) == 9 * 8 * 8 * 16  # one input channel per output channel
    linear = LayerSignature("linear", (1, 1), (1, 1), (0, 0), (1, 1), "dense", 1, (1, 1), 64, 10, False, True)
    assert layer_macs(linear, 40, 10) == 400


def test_the_flops_table_predicts_the_macs_of_the_physically_pruned_network(tmp_path):
    """The knapsack's cost of a kept configuration is exactly the MACs counted on the pruned network."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 8)
    source = write_synthetic_lut(tmp_path / "lat.csv", "resnet20", model, 10, 8, calibration=Calibration(0.7, 0.2))
    table = flops_table(source, tmp_path / "flops.csv")
    meta = load_lut(table).meta
    assert (meta.backend, meta.grid_block, meta.calibration) == (BACKEND, 1, {"a": 1.0, "b": 0.0, "points": []})
    assert meta.grid_align == load_lut(source).meta.grid_align  # the same channel multiples as the measured table
    space = ChannelSpace(model, open_latency_model(str(table), "cpu", model), latency_ratio=0.5, start=Start.SCRATCH)
    assert space.dense_ms == pytest.approx(forward_flops(layer_costs(model, 8)) / 2e6, rel=1e-5)
    kept = space.predicted_ms()
    pruned = space.pruned_model(model)
    assert kept <= space.psi and kept == pytest.approx(forward_flops(layer_costs(pruned, 8)) / 2e6, rel=1e-5)
    assert kept < 0.6 * space.dense_ms
