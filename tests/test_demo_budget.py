"""The demo's budget: half the dense latency, or just above the smallest network a table predicts where it cannot
reach half (an int8 table on the demo's small model can stop just short)."""

from __future__ import annotations

from synthetic_lut import write_synthetic_lut

from iee_deploy.cli.demo import LATENCY_RATIO, MODEL, RATIO_MARGIN, RESOLUTION, budget_ratio
from iee_deploy.models import build_model
from iee_deploy.structured.space import smallest_latency_ratio


def test_the_demo_asks_half_the_latency_or_just_above_the_tables_floor(tmp_path):
    model = build_model(MODEL, 10, RESOLUTION)
    steep = write_synthetic_lut(tmp_path / "steep.csv", MODEL, model, 10, RESOLUTION)
    assert smallest_latency_ratio(model, str(steep), "cpu") < LATENCY_RATIO and budget_ratio(steep) == LATENCY_RATIO
    # every layer costs a fixed 0.01 ms plus its MACs: the floor lies above half the dense latency
    flat = write_synthetic_lut(tmp_path / "flat.csv", MODEL, model, 10, RESOLUTION,
                               layer_ms=lambda sig, cin, cout: 0.01 + 1e-9 * cin * cout)
    floor = smallest_latency_ratio(model, str(flat), "cpu")
    assert floor > LATENCY_RATIO
    ratio = budget_ratio(flat)
    assert floor + RATIO_MARGIN <= ratio < floor + RATIO_MARGIN + 0.01 and abs(100 * ratio - round(100 * ratio)) < 1e-9
