"""IEE and the baselines on a tiny model, step by step through the loop's own `train_step`.

Every expectation is computed independently from the weights the method saw (sorting magnitudes
or gradients here), and compared exactly.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.methods import SparsityConfig, TrainContext, build_method
from iee_deploy.methods.schedule import update_fraction
from iee_deploy.sparse.distributions import layer_active_counts
from iee_deploy.sparse.masks import prunable_layers
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.state import TrainableSet
from iee_deploy.train import train_step

pytestmark = pytest.mark.usefixtures("one_thread")


TOTAL = 20  # steps; with H, J, Q = 2, 1, 2 (period 5) T = floor(15 / 5) = 3 IEE updates


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 4, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)


def setup(**overrides):
    model = tiny_model()
    defaults = {"sparsity": 0.5, "distribution": "erk", "hjq": (2, 1, 2) if overrides.get("method", "iee") == "iee" else None}
    config = SparsityConfig(**{**defaults, **overrides})
    method = build_method(config, model, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    method.setup(TrainContext(TOTAL, optimizer))
    return model, method, optimizer


def run(model, method, optimizer, steps, lr=None):
    for step in steps:
        if lr is not None:
            optimizer.param_groups[0]["lr"] = lr
        train_step(model, method, optimizer, step, *batch(step))


def weights(model):
    return [m.weight.detach().clone() for _, m in prunable_layers(model)]


def masks(method):
    return [m.clone() for m in method.space.masks.masks]


def topk(values, candidates, k, largest):
    """Independent expectation: the k candidates with the smallest / largest |value| (ties: lower index)."""
    flat, cand = values.abs().flatten(), candidates.flatten()
    idx = [i for i in sorted(range(flat.numel()), key=lambda i: (-flat[i].item() if largest else flat[i].item(), i))
           if cand[i]][:k]
    out = torch.zeros_like(cand)
    out[idx] = True
    return out.view_as(candidates)


def budgets(method, t):
    space = method.space
    return [0 if fixed else round(update_fraction(t / 3) * target) for target, fixed in zip(space.targets, space.fixed)]


def test_iee_prune_removes_exactly_the_smallest_active_magnitudes_per_layer():
    model, method, opt = setup()
    run(model, method, opt, range(2))  # Importance Estimation
    before_w, before_m = weights(model), masks(method)
    run(model, method, opt, [2])  # Prune at the start of step 2
    after_m = masks(method)
    for w, old, new, k in zip(before_w, before_m, after_m, budgets(method, 0)):
        removed = old & ~new
        assert not (new & ~old).any()
        assert torch.equal(removed, topk(w, old, k, largest=False))
    assert sum(budgets(method, 0)) > 0


def test_reactivate_explore_freezes_theta_k_bitwise_and_restores_mru():
    model, method, opt = setup()
    never_active = [~m for m in masks(method)]
    run(model, method, opt, range(2))
    w_before_prune = weights(model)
    state_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run(model, method, opt, [2])  # Prune + Accuracy Improvement
    theta_k = masks(method)
    mru = [v.clone() for v in method.space.masks.mru]
    pruned_now = [old_w.ne(0) & ~k for old_w, k in zip(w_before_prune, theta_k)]
    for v, w, p, never in zip(mru, w_before_prune, pruned_now, never_active):
        assert torch.equal(v[p], w[p])  # MRU = value when pruned
        assert (v[never & ~p] == 0).all()  # never used: MRU zero
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = [b.clone() for b in model.buffers()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters() if p.dim() > 1]

    run(model, method, opt, [3], lr=0.0)  # Reactivate; with lr 0 the weights are what the forward pass saw
    assert method.state.trainable is TrainableSet.EXPLORATION
    for w, k, v in zip(weights(model), theta_k, mru):
        assert torch.equal(w[~k], v[~k])  # Theta_P carries its MRU values
    run(model, method, opt, [4], lr=0.1)  # explore with weight decay and momentum
    for (name, p), k in zip(((n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1), theta_k):
        assert torch.equal(p.detach()[k], frozen[name][k]), name  # Theta_K bitwise unchanged
        assert (~k).sum() == 0 or not torch.equal(p.detach()[~k], frozen[name][~k]), name  # Theta_P trained
    for name, p in model.named_parameters():
        if p.dim() == 1:  # BN weights and biases, the linear bias
            assert torch.equal(p.detach(), frozen[name]), name
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers))  # BN running statistics
    for p, buf, k in zip((p for p in model.parameters() if p.dim() > 1), momentum, theta_k):
        assert torch.equal(opt.state[p]["momentum_buffer"][k], buf[k])
    assert any(not torch.equal(frozen[n], state_before[n]) for n in frozen)  # training did happen before


def test_grow_adds_exactly_the_largest_explored_magnitudes_with_their_values():
    model, method, opt = setup()
    run(model, method, opt, range(5))  # through Reactivate & Explore of update 0
    explored, theta_k = weights(model), masks(method)
    run(model, method, opt, [5], lr=0.0)  # Grow at the start of step 5
    new = masks(method)
    for w_exp, old, now, k, w in zip(explored, theta_k, new, budgets(method, 0), weights(model)):
        added = now & ~old
        assert torch.equal(added, topk(w_exp, ~old, k, largest=True))
        assert torch.equal(w[added], w_exp[added])  # grown weights keep their explored values
        assert (w[~now] == 0).all()
    for v, w_exp, now in zip(method.space.masks.mru, explored, new):
        assert torch.equal(v[~now], w_exp[~now])  # dormant again, explored value kept as MRU
    assert method.state.trainable is TrainableSet.ACTIVE


def test_zero_init_reactivates_at_zero_and_no_freeze_trains_theta_k():
    model, method, opt = setup(grow_init="zero", freeze=False)
    run(model, method, opt, range(3))
    theta_k, before = masks(method), weights(model)
    run(model, method, opt, [3], lr=0.0)
    assert method.state.trainable is TrainableSet.ALL
    assert all((w[~k] == 0).all() for w, k in zip(weights(model), theta_k))
    run(model, method, opt, [4], lr=0.1)
    assert any(not torch.equal(w[k], b[k]) for w, b, k in zip(weights(model), before, theta_k))


def test_final_per_layer_counts_match_erk_exactly():
    model, method, opt = setup(sparsity=0.8)
    shapes = [tuple(m.weight.shape) for _, m in prunable_layers(model)]
    target = layer_active_counts(shapes, 0.8, "erk")
    seen_prune = False
    for step in range(TOTAL):
        run(model, method, opt, [step])
        counts = method.space.active_counts()
        seen_prune |= counts != target
        if step % 5 != 2 and step % 5 != 3 and step % 5 != 4 or step >= 15:
            assert counts == target, step  # exact outside the window between Prune and Grow
    assert seen_prune
    assert [int((m.weight != 0).sum()) for _, m in prunable_layers(model)] == target


def test_global_distribution_prunes_by_global_rank():
    model, method, opt = setup(distribution="global")
    run(model, method, opt, range(2))
    w, old = weights(model), masks(method)
    run(model, method, opt, [2])
    removed = torch.cat([(o & ~n).flatten() for o, n in zip(old, masks(method))])
    k = round(0.3 * sum(t for t, f in zip(method.space.targets, method.space.fixed) if not f))
    flat_w = torch.cat([x.flatten() for x in w])
    cand = torch.cat([(o & ~torch.tensor(f)).flatten() for o, f in zip(old, method.space.fixed)])
    assert torch.equal(removed, topk(flat_w, cand, k, largest=False))


@pytest.mark.parametrize("name", ["iee", "rigl", "set", "static", "gmp"])
def test_nm_holds_exactly_after_every_prune_and_grow(name):
    extra = {} if name in ("iee", "static") else {"delta_t": 3}
    model, method, opt = setup(sparsity=0.5, nm="2:4", distribution="uniform", method=name, **extra)
    nm = NMPattern(2, 4)
    assert [nm.fits(tuple(m.weight.shape)) for _, m in prunable_layers(model)] == [True, True, True]
    exact = name != "gmp"  # random N:M start (GMP starts dense)
    moves = 0
    for step in range(TOTAL):
        records = train_step(model, method, opt, step, *batch(step)).records
        moves += len(records)
        if records:  # exactly N per group after a grow, at most N after a prune
            exact = records[-1].event == "grow"
        if name != "gmp":
            assert all(nm.holds(m, exact=exact) for m in method.space.masks.masks), step
    assert all(nm.holds(m) for m in method.space.masks.masks)  # exactly N of every M at the end, GMP included
    assert moves > 0 or name == "static"


def test_rigl_grows_by_dense_gradient_at_zero():
    model, method, opt = setup(method="rigl", hjq=None, delta_t=4)
    run(model, method, opt, range(4))
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(batch(4)[0]), batch(4)[1]).backward()
    grads = [m.weight.grad.clone() for _, m in prunable_layers(twin)]
    w, old = weights(model), masks(method)
    run(model, method, opt, [4], lr=0.0)
    fraction = update_fraction(4 / 15)
    k = [0 if f else round(fraction * t) for t, f in zip(method.space.targets, method.space.fixed)]
    for g, wi, o, n, ki, now in zip(grads, w, old, masks(method), k, weights(model)):
        dropped = topk(wi, o, ki, largest=False)
        grown = topk(g, ~(o & ~dropped), ki, largest=True)
        assert torch.equal(n, (o & ~dropped) | grown)
        assert (now[grown & ~o] == 0).all()  # new connections start at zero
        assert torch.equal(now[grown & dropped], wi[grown & dropped])  # dropped and regrown: unchanged


def test_gmp_and_static_follow_their_schedules():
    model, method, opt = setup(method="gmp", hjq=None, delta_t=5)
    numels = [m.weight.numel() for _, m in prunable_layers(model)]
    assert method.space.active_counts() == numels  # dense start
    run(model, method, opt, range(TOTAL))
    assert method.space.active_counts() == method.space.targets
    model, method, opt = setup(method="static", hjq=None)
    start = masks(method)
    run(model, method, opt, range(TOTAL))
    assert all(torch.equal(a, b) for a, b in zip(start, masks(method)))


def test_methods_reject_options_they_do_not_use_and_unfit_schedules():
    with pytest.raises(UserError, match="does not use `hjq`"):
        setup(method="rigl", hjq=(2, 1, 2))
    with pytest.raises(UserError, match="does not use `freeze`"):
        setup(method="set", hjq=None, freeze=False)
    with pytest.raises(UserError, match="no IEE update fits"):
        setup(hjq=(10, 10, 10))


def test_j_zero_explores_right_after_prune_and_random_grow_moves_the_budget():
    model, method, opt = setup(hjq=(2, 0, 2), grow_criterion="random")  # period 4, T = 3
    run(model, method, opt, range(2))
    records = train_step(model, method, opt, 2, *batch(2)).records
    assert [r.event for r in records] == ["prune"] and method.state.trainable is TrainableSet.EXPLORATION
    run(model, method, opt, [3])
    old = masks(method)
    records = train_step(model, method, opt, 4, *batch(4)).records
    assert [r.event for r in records] == ["grow"]
    added = [(n & ~o).sum().item() for o, n in zip(old, masks(method))]
    assert added == budgets(method, 0) and method.space.active_counts() == method.space.targets


def test_iee_period_is_chosen_by_the_run_length_and_says_why():
    model = tiny_model()
    method = build_method(SparsityConfig(sparsity=0.5), model, seed=0)
    method.setup(TrainContext(310, torch.optim.SGD(model.parameters(), lr=0.1)))
    settings = method.describe()
    assert (settings["h"], settings["j"], settings["q"]) == (46, 6, 6)  # iee_period(310, 0.75)
    assert "short-run rule" in settings["period_reason"] and settings["update_end"] == 0.75
    assert settings["omega_decay"] == "cosine"  # the unstructured default (RigL's schedule)
    _, given, _ = setup()
    assert given.describe()["period_reason"] == "set in the config (hjq)"


def test_fractions_of_training_read_as_people_write_them():
    from iee_deploy.methods.schedule import STRUCTURED_UPDATE_END, fraction_words

    assert fraction_words(STRUCTURED_UPDATE_END) == "5/130"
    assert fraction_words(0.75) == "3/4"
    assert fraction_words(0.5) == "0.5"
    assert fraction_words(0.3) == "0.3"
    assert fraction_words(0.123) == "0.123"
