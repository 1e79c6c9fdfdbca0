"""Exact expectations for the pure maths: distributions, selections, N:M layout, schedules, FLOPs."""

import math

import pytest
import torch

from iee_deploy.flops import LayerCost, StepCost, forward_flops, iee_train_flops, train_step_flops
from iee_deploy.methods.schedule import (
    Event,
    Stage,
    dst_update_due,
    gmp_sparsity,
    gmp_update_due,
    iee_period,
    iee_step,
    iee_updates,
    resolve_period,
    update_fraction,
    update_window,
)
from iee_deploy.sparse import selection
from iee_deploy.sparse.distributions import erk_densities, layer_active_counts
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.tracking import StructureTracker, iou, survival

SHAPES = [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3), (10, 64)]


def test_erk_hand_computed_with_dense_capping():
    # raw = sum/prod: 8/16 = 0.5 and 200/10000 = 0.02. Uncapped eps = 5008/208 puts layer 0 above
    # density 1, so it is made dense and eps = (5000 - 8) / 200 = 24.96 -> density 0.4992.
    assert erk_densities([(4, 4), (100, 100)], 0.5) == pytest.approx([1.0, 0.4992])
    assert layer_active_counts([(4, 4), (100, 100)], 0.5, "erk") == [16, 4992]


def test_erk_counts_are_exact_and_proportional_to_the_kernel():
    counts = layer_active_counts(SHAPES, 0.9, "erk")
    numels = [math.prod(s) for s in SHAPES]
    assert sum(counts) == round(0.1 * sum(numels))
    densities = erk_densities(SHAPES, 0.9)
    raw = [sum(s) / math.prod(s) for s in SHAPES]
    sparse = [i for i, d in enumerate(densities) if d < 1]
    eps = {densities[i] / raw[i] for i in sparse}
    assert max(eps) - min(eps) < 1e-12  # one scale for every non-capped layer
    for c, d, n in zip(counts, densities, numels):
        assert abs(c - d * n) < 1  # largest-remainder rounding
    assert counts[0] == numels[0]  # the 3-channel stem is capped dense at 90%


def test_uniform_counts_round_each_layer():
    assert layer_active_counts(SHAPES, 0.9, "uniform") == [round(0.1 * math.prod(s)) for s in SHAPES]


def test_selection_exact_with_ties_broken_by_index():
    scores = torch.tensor([3.0, 1.0, 1.0, 0.5, 2.0, 1.0])
    candidates = torch.tensor([True, True, True, False, True, True])
    assert selection.smallest(scores, candidates, 2).tolist() == [False, True, True, False, False, False]
    assert selection.largest(scores, candidates, 2).tolist() == [True, False, False, False, True, False]
    with pytest.raises(ValueError):
        selection.smallest(scores, candidates, 6)
    glob = selection.smallest_global([scores[:3], scores[3:]], [candidates[:3], candidates[3:]], 3)
    assert torch.cat(glob).tolist() == [False, True, True, False, False, True]


def test_largest_per_row():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    candidates = torch.tensor([[False, True, True, True], [True, True, True, True]])
    chosen = selection.largest_per_row(scores, candidates, torch.tensor([2, 1]))
    assert chosen.tolist() == [[False, True, True, False], [False, False, False, True]]


def test_nm_groups_run_along_input_channels():
    nm = NMPattern(2, 4)
    w = torch.arange(2 * 8 * 3 * 3).view(2, 8, 3, 3)
    groups = nm.to_groups(w)
    assert groups.shape == (2 * 3 * 3 * 2, 4)
    assert groups[0].tolist() == [w[0, c, 0, 0].item() for c in range(4)]
    assert torch.equal(nm.from_groups(groups, w.shape), w)
    assert nm.fits((16, 8, 3, 3)) and not nm.fits((16, 3, 3, 3)) and not nm.fits((16, 1, 3, 3))
    mask = torch.zeros(2, 8, 3, 3, dtype=torch.bool)
    mask[:, 0:2] = True
    mask[:, 4:6] = True
    assert nm.holds(mask)
    mask[0, 2, 0, 0] = True
    assert not nm.holds(mask) and not nm.holds(mask, exact=False)


def test_iee_schedule_follows_algorithm_1():
    # H=2, J=1, Q=2 (period 5), T=2 updates: grow at 5 and 10, nothing after.
    table = {
        0: (Stage.IMPORTANCE_ESTIMATION, ()), 1: (Stage.IMPORTANCE_ESTIMATION, ()),
        2: (Stage.ACCURACY_IMPROVEMENT, (Event.PRUNE,)), 3: (Stage.REACTIVATE_EXPLORE, (Event.REACTIVATE,)),
        4: (Stage.REACTIVATE_EXPLORE, ()), 5: (Stage.IMPORTANCE_ESTIMATION, (Event.GROW,)),
        7: (Stage.ACCURACY_IMPROVEMENT, (Event.PRUNE,)), 10: (Stage.FINAL, (Event.GROW,)),
        12: (Stage.FINAL, ()), 15: (Stage.FINAL, ()),
    }
    for step, (stage, events) in table.items():
        s = iee_step(step, 2, 1, 2, 2)
        assert (s.stage, s.events) == (stage, events), step
    assert iee_step(7, 2, 1, 2, 2).t == 1 and iee_step(12, 2, 1, 2, 2).t == 2
    # J = 0: Reactivate follows Prune on the same step (Table 4's "150, 0, 150").
    assert iee_step(2, 2, 0, 2, 1).events == (Event.PRUNE, Event.REACTIVATE)
    assert iee_updates(total_steps=40, period=5, update_end=0.75) == 6
    with pytest.raises(ValueError):
        iee_step(0, 1, 0, 0, 1)


def test_update_window_floors_without_float_error():
    assert update_window(400, 0.75) == 300  # 0.75 * 400 is 300 exactly, not 299.99...
    assert update_window(310, 0.75) == 232  # 232.5 floored
    assert update_window(3, 0.1) == 0 and update_window(100, 1.0) == 100


def test_iee_period_is_the_papers_when_enough_updates_fit():
    # window 0.75 * 2400 = 1800 = 4 x 450: the paper's period fits exactly 4 updates
    p = iee_period(2400, 0.75)
    assert p.hjq == (150, 150, 150) and "paper's period" in p.reason and "4 >= 4" in p.reason
    # one step less: 1799 // 450 = 3 < 4, so the short-run rule takes over: period 1799 // 4 = 449,
    # Q = J = round(449 / 10) = round(44.9) = 45, H = 449 - 90 = 359
    assert iee_period(2399, 0.75).hjq == (359, 45, 45)
    # 7500 // 450 = 16 < 30 updates: period 7500 // 30 = 250, Q = J = round(25.0) = 25, H = 200
    assert iee_period(10_000, 0.75, min_updates=30).hjq == (200, 25, 25)
    assert iee_period(100_000, 0.75, min_updates=30).hjq == (150, 150, 150)


def test_iee_period_short_run_rule_exact():
    # the Fashion-MNIST run: 310 steps, window 232, period 232 // 4 = 58, Q = J = round(5.8) = 6
    p = iee_period(310, 0.75)
    assert p.hjq == (46, 6, 6)
    assert "58" in p.reason and "short-run rule" in p.reason
    # the CIFAR command of the issue: 1092 steps, window 819, period 204, Q = J = round(20.4) = 20
    assert iee_period(1092, 0.75).hjq == (164, 20, 20)
    # the old rule is explore_share 1/3: thirds of the period (with rounding: 58 -> 19.33 -> 19, H = 20)
    assert iee_period(310, 0.75, explore_share=1 / 3).hjq == (20, 19, 19)
    # more updates give a shorter period: 232 // 8 = 29, Q = round(2.9) = 3
    assert iee_period(310, 0.75, min_updates=8).hjq == (23, 3, 3)
    # tiny runs keep H, J, Q >= 1 and a period of at least 3
    assert iee_period(10, 0.75).hjq == (1, 1, 1)
    assert iee_period(40, 0.75, explore_share=0.1).hjq == (5, 1, 1)  # window 30, period 7, Q = max(1, round(0.7)) = 1
    for bad in ({"min_updates": 0}, {"explore_share": 0.0}, {"explore_share": 0.34}):
        with pytest.raises(ValueError):
            iee_period(310, 0.75, **bad)


def test_budget_and_baseline_schedules():
    assert update_fraction(0.0) == pytest.approx(0.3)
    assert update_fraction(0.5) == pytest.approx(0.15)
    assert update_fraction(0.0, decay="exponential") == pytest.approx(0.3)
    assert update_fraction(1.0, decay="exponential") == pytest.approx(0.003)
    assert resolve_period(450, total_steps=10_000, update_end=0.75) == 450
    assert resolve_period(450, total_steps=220, update_end=0.75) == 41
    assert [s for s in range(0, 400) if dst_update_due(s, 100, 300)] == [100, 200]
    assert gmp_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert gmp_sparsity(0, 0.9, 0, 100) == 0.0 and gmp_sparsity(150, 0.9, 0, 100) == pytest.approx(0.9)
    assert [s for s in range(0, 200) if gmp_update_due(s, 30, 10, 100)] == [40, 70, 100]


def test_flops_formulas():
    costs = {"conv": LayerCost(weights=100, positions=16), "fc": LayerCost(weights=10, positions=1)}
    assert forward_flops(costs) == 2 * (100 * 16 + 10)
    assert forward_flops(costs, {"conv": 25, "fc": 10}) == 2 * (25 * 16 + 10)
    zp, zd = 1.0, 10.0
    assert train_step_flops(StepCost.SPARSE, zp, zd) == 3
    assert train_step_flops(StepCost.DENSE_FORWARD, zp, zd) == 12
    assert train_step_flops(StepCost.DENSE, zp, zd) == 30
    assert iee_train_flops(150, 150, 150, zp, zd) == pytest.approx((11 * zp + zd) / 4)  # appendix 3


def test_iou_and_survival_tracking():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert iou(a, b) == pytest.approx(1 / 3) and survival(b, a) == 0.5 and survival(a & ~a, b) is None
    tracker = StructureTracker()
    first = tracker.record_prune(torch.tensor([True, False, False, False]), step=2, t=0, moved=1)
    assert first.iou is None and first.survival is None
    tracker.record_grow(torch.tensor([True, False, True, True]), torch.tensor([False, False, True, True]), 5, 0)
    second = tracker.record_prune(torch.tensor([True, False, True, False]), step=7, t=1, moved=2)
    assert second.iou == 0.5 and second.survival == 0.5
