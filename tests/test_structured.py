"""Structured IEE and HALP under a latency budget: importance, masking, knapsacks, budget, end to end.

Latency tables are real LUT files written through the profiler's own classes from a known latency
function (`synthetic_lut`), so the latency model, `check_lut` and the pruners run unchanged; every
expectation below is computed independently (by hand, with numpy, or with another solver).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli
from synthetic_lut import macs_ms, write_synthetic_lut
from torch import nn

from iee_deploy.deploy.run_models import load_run_models
from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph
from iee_deploy.methods import SparsityConfig, TrainContext, build_method
from iee_deploy.methods.schedule import halp_prune_due, halp_target
from iee_deploy.models import build_model
from iee_deploy.sparse.state import TrainableSet
from iee_deploy.structured.budget import open_latency_model
from iee_deploy.structured.costs import (
    count_deltas,
    grow_problem,
    smallest_count,
    touching_layers,
    uniform_counts,
    unit_multiple,
)
from iee_deploy.structured.space import ChannelSpace, Start
from iee_deploy.structured.taylor import TaylorImportance
from iee_deploy.train import TrainConfig, Trainer, train_step
from profiler.layers import LayerSignature
from solvers import solve

pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread on a shared machine

RES = 16


def stepped_ms(sig: LayerSignature, cin: int, cout: int) -> float:
    """A latency that is not bilinear: work rounded up to blocks of 8 channels, plus a superlinear term."""
    blocks = math.ceil(cin / 8) * math.ceil(cout / 8) * 64
    return macs_ms(sig, cin, cout) * 0.5 + 1e-6 * sig.kernel[0] * sig.kernel[1] * sig.out_hw[0] * sig.out_hw[1] * \
        (blocks + 1e-3 * (cin * cout) ** 1.5) + 0.01


@pytest.fixture(scope="module")
def lut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lut") / "resnet20.csv"
    return write_synthetic_lut(path, "resnet20", build_model("resnet20", 10, RES), 10, RES, layer_ms=stepped_ms)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 3, RES, RES, generator=g), torch.randint(0, 10, (8,), generator=g)


def structured(lut: Path, total: int, seed: int = 0, model: nn.Module | None = None, **overrides):
    torch.manual_seed(seed)
    model = model or build_model("resnet20", 10, RES)
    config = SparsityConfig(**{"method": "iee", "latency_ratio": 0.5, "lut": str(lut), "update_end": 0.75, **overrides})
    method = build_method(config, model, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method.setup(TrainContext(total, optimizer))
    return model, method, optimizer


# --- pure maths --------------------------------------------------------------------------------
def test_halp_schedule_and_unit_rounding_exact():
    assert halp_target(0.0, 8.0, 2.0) == pytest.approx(8.0) and halp_target(1.0, 8.0, 2.0) == 2.0  # the budget exactly
    assert halp_target(0.5, 8.0, 2.0) == pytest.approx(4.0)  # geometric mean
    assert halp_target(0.25, 16.0, 1.0) == pytest.approx(8.0)
    assert [s for s in range(30) if halp_prune_due(s, 4, 5)] == [4, 8, 12, 16, 20]
    assert unit_multiple(1, 16) == 16 and unit_multiple(4, 16) == 4 and unit_multiple(32, 16) == 1
    assert unit_multiple(3, 8) == 8
    assert smallest_count(64, 1, 16) == 16 and smallest_count(64, 20, 16) == 32 and smallest_count(12, 1, 16) == 12
    sizes, smallest, multiple = {"a": 64, "b": 10}, {"a": 16, "b": 4}, {"a": 16, "b": 4}
    assert uniform_counts(sizes, smallest, multiple, 0.6) == {"a": 32, "b": 4}
    assert uniform_counts(sizes, smallest, multiple, 0.9) == {"a": 48, "b": 8}
    assert uniform_counts(sizes, smallest, multiple, 1.0) == sizes


def test_group_costs_are_the_exact_prediction_change_of_one_group(lut):
    model = build_model("resnet20", 10, RES)
    source = open_latency_model(str(lut), "cpu", model)
    graph = build_dependency_graph(model, torch.zeros(1, 3, RES, RES))
    touching = touching_layers(graph.layers)
    assert {name for name, *_ in touching["conv1"]} >= {"conv1", "layer1.0.conv2", "layer2.0.conv1", "layer1.0.conv1"}
    counts = {g.id: g.size // 2 for g in graph.prunable_groups}
    channels = graph.layer_channels(counts)
    base = source.model.predict(channels)
    for gid in ("conv1", "layer2.0.conv2", "layer3.1.conv1"):
        ks = np.array([4, counts[gid], graph.group(gid).size])
        expected = [source.model.predict(graph.layer_channels({**counts, gid: int(k)})) - base for k in ks]
        np.testing.assert_allclose(count_deltas(source.model, touching[gid], channels, counts[gid], ks), expected,
                                   rtol=1e-12, atol=1e-12)


# --- Taylor importance ---------------------------------------------------------------------------
def test_taylor_importance_equals_hand_computed_values():
    torch.manual_seed(0)
    bn_net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))
    plain = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(4, 2, 1, bias=False))
    nn.init.normal_(bn_net[1].bias)
    nn.init.uniform_(bn_net[1].weight, 0.5, 1.5)
    xs = [torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for net in (bn_net, plain):
        graph = build_dependency_graph(net, xs[0])
        taylor = TaylorImportance(net, graph.prunable_groups)
        assert [g.id for g in graph.prunable_groups] == ["0"]
        expected = []
        for x in xs:
            net.zero_grad()
            net(x).sum().backward()
            taylor.accumulate()
            # L = sum over n,h,w,o of conv2(.)[o] = sum_c s_c * sum_{n,h,w} h_c with s_c = sum_o W2[o, c]
            s = net[-1].weight.detach()[:, :, 0, 0].sum(0).double()
            if net is bn_net:  # dL/dbeta_c = s_c N H W; dL/dgamma_c = s_c sum(xhat_c) = 0 in training mode
                expected.append((s * x[:, 0].numel() * bn_net[1].bias.detach().double()).abs())
            else:  # dL/dW1[c, i] = s_c sum_{n,h,w} x_i: |sum_i W1[c, i] dL/dW1[c, i]|
                w1 = net[0].weight.detach()[:, :, 0, 0].double()
                expected.append((s * (w1 * x.double().sum((0, 2, 3))).sum(1)).abs())
        scored = bn_net[1].weight if net is bn_net else net[0].weight
        scored.grad[0] = float("nan")  # an iteration with a NaN score is skipped whole
        taylor.accumulate()
        assert taylor.iterations == 2 and taylor.skipped == 1
        torch.testing.assert_close(taylor.average()[0], (expected[0] + expected[1]) / 2, rtol=1e-5, atol=1e-6)


# --- the structured state --------------------------------------------------------------------------
def test_masked_model_computes_what_the_physically_pruned_model_computes(lut):
    model, method, optimizer = structured(lut, 40, hjq=(2, 1, 2))
    space: ChannelSpace = method.space  # type: ignore[assignment]
    for step in range(8):  # through a prune, a reactivate & explore and a grow
        train_step(model, method, optimizer, step, *batch(step))
    counts = space.masks.counts()
    assert any(counts[g.id] < g.size for g in space.groups)
    pruned = space.pruned_model(model).eval()
    model.eval()
    x = batch(99)[0]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)
    widths = {name: (m.in_channels, m.out_channels) for name, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths == {k: tuple(v) for k, v in space.graph.layer_channels(counts).items() if k in widths}


def test_during_explore_active_channels_are_bitwise_unchanged(lut):
    model, method, optimizer = structured(lut, 40, hjq=(2, 1, 4))
    space: ChannelSpace = method.space  # type: ignore[assignment]
    masks = space.masks
    for step in range(4):  # H = 2, prune at 2, J = 1: reactivate at the start of step 3
        train_step(model, method, optimizer, step, *batch(step))
    assert masks.trainable is TrainableSet.EXPLORATION

    def active_values():
        return [torch.where(m, p, torch.zeros_like(p)).clone() for p, m in zip(masks.params, masks.masks)]

    def frozen_momentum():  # momentum of Theta_K entries and of every parameter outside the masked tensors
        masked = {id(p): m for p, m in zip(masks.params, masks.masks)}
        return [torch.where(masked.get(id(p), torch.ones_like(p, dtype=torch.bool)), optimizer.state[p]["momentum_buffer"], 0)
                for p in model.parameters() if p in optimizer.state]

    before, explored, momentum = active_values(), [p.detach().clone() for p in masks.params], frozen_momentum()
    other = [p.detach().clone() for p in masks.other_params]
    for step in range(4, 7):  # explore steps (the grow is at step 7)
        train_step(model, method, optimizer, step, *batch(step))
        assert all(torch.equal(a, b) for a, b in zip(active_values(), before))  # parameters AND BN running stats
        assert all(torch.equal(a, b) for a, b in zip(frozen_momentum(), momentum))
        assert all(torch.equal(p, q) for p, q in zip(masks.other_params, other))
    moved = [bool((p.detach() != e).any()) for p, e, m in zip(masks.params, explored, masks.masks) if not m.all()]
    assert any(moved)  # ... while the exploration set trained


def test_grown_set_equals_the_solvers_selection(lut):
    model, method, optimizer = structured(lut, 40, hjq=(2, 1, 3))
    space: ChannelSpace = method.space  # type: ignore[assignment]
    for step in range(6):
        train_step(model, method, optimizer, step, *batch(step))
    counts, units = space.masks.counts(), [u.clone() for u in space.masks.units]
    scores = [s.clone() for s in space.importance()]
    explore = {g: s[~u].numpy() for g, s, u in zip(space.ids, scores, units)}
    headroom = space.psi - space.predicted_ms()
    records = train_step(model, method, optimizer, 6, *batch(6)).records  # Grow of update 0
    assert [r.event for r in records] == ["grow"]
    chosen = records[0].extra["solver"]["counts"]
    for g, u, s, now in zip(space.ids, units, scores, space.masks.units):
        added = now & ~u
        assert int(added.sum()) == chosen[g]
        left = s[~u & ~now]
        if chosen[g] and left.numel():  # the k best explored units of the group
            assert s[added].min() >= left.max()
    used = records[0].extra["solver"]  # the first attempt's budget is the headroom; later ones are tightened
    assert used["budget_ms"] <= headroom and (used["budget_ms"] == headroom) == (used["attempts"] == 1)
    problem = grow_problem(explore, counts, space.multiple, space._deltas(counts), used["budget_ms"])
    reference = solve(problem, "dp")  # an independent exact solver reaches the same optimum
    assert used["objective"] == pytest.approx(reference.objective, rel=1e-9)
    assert space.predicted_ms() <= space.psi


@pytest.mark.parametrize("method_name, overrides", [("iee", {"hjq": (2, 1, 2)}), ("halp", {"delta_t": 3}),
                                                    ("iee", {"hjq": (2, 1, 2), "start": "dense", "delta_t": 2})])
def test_predicted_latency_after_every_prune_and_grow_is_within_the_budget(lut, method_name, overrides):
    total = 60
    model, method, optimizer = structured(lut, total, method=method_name, latency_ratio=0.45, update_end=0.8, **overrides)
    space: ChannelSpace = method.space  # type: ignore[assignment]
    graph, latency = space.graph, space.latency
    events = []
    within = space.predicted_ms() <= space.psi
    assert within == (space.start is Start.SCRATCH)  # a dense start is brought down to Psi by the descent
    for step in range(total):
        for r in train_step(model, method, optimizer, step, *batch(step)).records:
            truth = latency.predict(graph.layer_channels({g.id: int(u.sum()) for g, u in zip(space.groups, space.masks.units)}))
            assert r.extra["predicted_latency_ms"] == pytest.approx(truth, rel=1e-12)
            assert truth <= r.extra["limit_ms"] and not r.extra["fallback"]
            events.append((r.event, truth))
        assert space.predicted_ms() <= space.psi or not within  # once within Psi, never above it
        within = within or space.predicted_ms() <= space.psi
    assert events and all(ms <= space.psi for event, ms in events if event == "grow")
    assert space.predicted_ms() <= space.psi
    if method_name == "halp":
        limits = [ms for _, ms in events]
        assert limits == sorted(limits, reverse=True) and len(events) == method.prunes
    else:
        assert {e for e, _ in events} == {"prune", "grow"}


def test_structured_iee_descends_on_halps_schedule(lut):
    """IEE from a dense start prunes at the same steps to the same latency goals as HALP alone (paper Table 1)."""
    total, halp_end = 80, 24  # HALP prunes in the first 24 steps; IEE's window is twice that, descent half of it
    goals = {}
    for name, overrides in (("halp", {"method": "halp", "update_end": halp_end / total, "delta_t": 6}),
                            ("iee", {"start": "dense", "update_end": 2 * halp_end / total, "descent": 0.5, "delta_t": 6})):
        model, method, optimizer = structured(lut, total, seed=3, **overrides)
        goals[name] = [(r.step, r.event, round(r.extra["limit_ms"], 9)) for step in range(total)
                       for r in train_step(model, method, optimizer, step, *batch(step)).records]
    descent = [g for g in goals["iee"] if g[0] <= halp_end and g[1] == "prune"][:len(goals["halp"])]
    assert [g[0] for g in goals["halp"]] == [6, 12, 18, 24]
    assert descent == goals["halp"]  # same steps, same goals, the last one exactly Psi
    assert any(g[1] == "grow" for g in goals["iee"])  # then IEE's own updates
    assert max(g[0] for g in goals["iee"]) <= 2 * halp_end


# --- the command line ------------------------------------------------------------------------------
SMALL = ("--model", "resnet20", "--resolution", "8", "--subset", "160", "--batch-size", "16", "--no-progress")


@pytest.fixture(scope="module")
def lut8(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lut8") / "resnet20-8.csv"
    return write_synthetic_lut(path, "resnet20", build_model("resnet20", 10, 8), 10, 8)


def test_infeasible_budget_is_a_one_line_error_before_training(lut8, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *SMALL, "--lut", str(lut8), "--latency-ms", "0.01", "--out", str(out))
    assert_user_error(result, "below the smallest achievable network's latency", "ms")
    assert not (out / "metrics.jsonl").exists()  # nothing trained


def test_mismatched_luts_targets_and_methods_are_user_errors(lut8, lut):
    model = build_model("resnet20", 10, 8)
    with pytest.raises(UserError, match="does not match the LUT .* target cpu"):
        open_latency_model(str(lut8), "titanv", model)
    with pytest.raises(UserError, match="resolution 16, not 8"):
        open_latency_model(str(lut), None, model, resolution=8)
    with pytest.raises(UserError, match="num_classes 10, not 100"):
        open_latency_model(str(lut8), None, build_model("resnet20", 100, 8), num_classes=100)
    with pytest.raises(UserError, match="prunes channels under a latency budget"):
        build_method(SparsityConfig(method="halp"), model)
    with pytest.raises(UserError, match="no latency-budget"):
        build_method(SparsityConfig(method="rigl", latency_ratio=0.5, lut=str(lut8)), model)
    with pytest.raises(UserError, match="exactly one latency budget"):
        build_method(SparsityConfig(latency_ratio=0.5, latency_ms=1.0, lut=str(lut8)), model)


def check_run_folder(out: Path) -> dict:
    """A finished structured run folder: facts, channel configuration and a pruned model equal to the masked one."""
    info = json.loads((out / "run.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    channels = json.loads((out / "channels.json").read_text())
    assert info["kind"] == "structured" and info["target"] == "cpu" and info["finished"]
    assert info["predicted_latency_ms"] <= info["budget_ms"] == summary["latency"]["budget_ms"]
    assert channels["predicted_latency_ms"] == info["predicted_latency_ms"]
    assert summary["structure"]["latency_trajectory"] and summary["flops"]["train_total"] > 0
    model = build_model("resnet20", 10, 8)
    model.load_state_dict(torch.load(out / "final_model.pt"))
    pruned = load_run_models(out).pruned  # rebuilt from run.json, final_model.pt and channels.json
    widths = {n: [m.in_channels, m.out_channels] for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths == {n: c for n, c in channels["layers"].items() if n in widths}
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model.eval()(x), rtol=1e-4, atol=1e-5)
    return summary


def test_cli_structured_iee_writes_a_deployable_run_folder(lut8, tmp_path):
    out = tmp_path / "iee"
    # --update-end 0.75: the structured default (epoch 5 of 130) leaves no update in a 20-step run
    result = run_cli("train", *SMALL, "--epochs", "2", "--lut", str(lut8), "--latency-ratio", "0.5", "--update-end", "0.75",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "predicted latency" in result.stdout and "grown-channel survival" in result.stdout
    summary = check_run_folder(out)
    assert summary["structure"]["prunes"] == summary["structure"]["grows"] >= 4


def test_halp_and_iee_from_a_checkpoint_through_the_same_loop(lut8, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "dense.pt"
    torch.save(build_model("resnet20", 10, 8).state_dict(), checkpoint)
    for name, sparsity in (("halp", SparsityConfig(method="halp", latency_ratio=0.5, lut=str(lut8), update_end=0.75)),
                           ("iee", SparsityConfig(latency_ratio=0.5, lut=str(lut8), start="dense", update_end=0.75))):
        config = TrainConfig(model="resnet20", dataset="digits", resolution=8, subset=160, batch_size=16, epochs=2,
                             init_checkpoint=str(checkpoint), sparsity=sparsity)
        summary = Trainer(config, tmp_path / name, progress_bar=False).fit()
        assert check_run_folder(tmp_path / name)["latency"]["start"] == "dense"
        events = [r["event"] for r in summary["structure"]["latency_trajectory"]]
        if name == "halp":
            assert set(events) == {"prune"} and len(events) == summary["settings"]["prunes"]
        else:
            assert [p["method"] for p in summary["settings"]["phases"]] == ["halp", "iee"]
            assert events[: summary["settings"]["phases"][0]["prunes"]] == ["prune"] * summary["settings"]["phases"][0]["prunes"]
            assert "grow" in events


class Stop(Exception):
    """Raised from a step callback to interrupt a run mid-training."""


def test_a_structured_run_resumed_mid_explore_repeats_the_uninterrupted_run(lut8, tmp_path):
    config = TrainConfig(model="resnet20", dataset="digits", resolution=8, subset=160, batch_size=16, epochs=2,
                         checkpoint_every=3, sparsity=SparsityConfig(latency_ratio=0.5, lut=str(lut8), hjq=(2, 1, 2),
                                                                          update_end=0.75))
    Trainer(config, tmp_path / "whole", progress_bar=False).fit()

    def stop_after_the_checkpoint_in_explore(step, model, method):
        if step == 9:  # the last checkpoint was written after step 8, a Reactivate & Explore step
            assert method.state.trainable is TrainableSet.EXPLORATION
            raise Stop

    with pytest.raises(Stop):
        Trainer(config, tmp_path / "cut", progress_bar=False, on_step_end=stop_after_the_checkpoint_in_explore).fit()
    Trainer(config, tmp_path / "cut", resume=True, progress_bar=False).fit()
    a, b = (torch.load(tmp_path / name / "final_model.pt") for name in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [[r for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
                if r["type"] == "update"] for name in ("whole", "cut")]
    for r in records[0] + records[1]:
        r["solver"].pop("seconds")  # solver wall time
    assert records[0] == records[1] and len(records[0]) >= 6
