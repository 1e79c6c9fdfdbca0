"""`Sparsifier` misuse in a user's own loop: one line naming the mistake, never a silent wrong result.

Two Sparsifiers on one model, a state saved by another method, model or schedule, a model loaded before the
Sparsifier that resumes it, two optimizer steps in one step context, a negative batch, a frozen model and a
model with nothing to sparsify.
"""

from __future__ import annotations

import gc
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iee_deploy.errors import UserError
from iee_deploy.sparsifier import Sparsifier


def net(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def attach(model: nn.Module, steps: int = 12, **fields) -> tuple[torch.optim.Optimizer, Sparsifier]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return optimizer, Sparsifier(model, optimizer, steps, **{"method": "rigl", "sparsity": 0.8, "delta_t": 2, **fields})


def train(model: nn.Module, optimizer: torch.optim.Optimizer, sparsifier: Sparsifier, steps: int, seed: int = 1) -> None:
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images, labels = torch.randn(4, 3, 8, 8, generator=data), torch.randint(0, 10, (4,), generator=data)
        with sparsifier.step(len(labels)):
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()


def test_a_second_sparsifier_on_one_model_is_refused_until_the_first_detaches(one_thread):
    model = net()
    optimizer, first = attach(model)
    with pytest.raises(UserError, match=r"`model` \(Sequential\) already has a Sparsifier attached \(method 'rigl'\)"
                                        r".*call \.detach\(\) on the first") as err:
        Sparsifier(model, optimizer, 12, method="static", sparsity=0.9)
    assert err.value.field == "model"
    with pytest.raises(UserError, match="already has a Sparsifier"):  # a part of the model is held too
        Sparsifier(model[3], torch.optim.SGD(model[3].parameters(), lr=0.1), 12, method="static")
    train(model, optimizer, first, 2)  # the first one still works
    first.detach()
    with pytest.raises(UserError, match="was detached"):
        train(model, optimizer, first, 1)
    _, second = attach(model, method="static", sparsity=0.9, delta_t=None)
    zeros = sum(int((m.weight == 0).sum()) for m in (model[0], model[3], model[8]))
    assert zeros / sum(m.weight.numel() for m in (model[0], model[3], model[8])) == pytest.approx(0.9, abs=0.01)
    del second
    gc.collect()
    attach(model)  # a dropped Sparsifier holds nothing


def test_state_round_trip_keeps_weights_whichever_is_loaded_first(one_thread):
    torch.manual_seed(0)
    model = net()
    optimizer, sparsifier = attach(model)
    train(model, optimizer, sparsifier, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sparsifier": sparsifier.state_dict()},
               buffer)
    for model_first in (True, False):
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        again = net()
        if model_first:  # the natural order: rebuild the model from its weights, then attach a Sparsifier
            again.load_state_dict(saved["model"])
        optimizer2, resumed = attach(again)
        resumed.load_state_dict(saved["sparsifier"])
        if not model_first:
            again.load_state_dict(saved["model"])
        optimizer2.load_state_dict(saved["optimizer"])
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
        train(again, optimizer2, resumed, 7, seed=2)
        resumed.detach()
    train(model, optimizer, sparsifier, 7, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(("saved", "loading", "fragment"), [
    ({}, {"method": "iee", "delta_t": None}, "method 'rigl' there, 'iee' here"),
    ({}, {"sparsity": 0.9}, "sparsity 0.8 there, 0.9 here"),
    ({}, {"steps": 20}, "a schedule of 12 steps, this Sparsifier's has 20"),
    ({}, {"width": 4}, "the masks of another model (layer '0': 216 weights there, 108 here)"),
    ({"state": {}}, {}, "is not a Sparsifier's state_dict() (got a dict with keys: none)"),
    ({"state": [1, 2]}, {}, "is not a Sparsifier's state_dict() (got a list)"),
], ids=["other-method", "other-sparsity", "other-schedule", "other-model", "empty", "a-list"])
def test_a_state_of_another_sparsifier_is_refused(saved, loading, fragment):
    _, source = attach(net())
    state = saved.get("state", source.state_dict())
    fields = {k: v for k, v in loading.items() if k not in ("steps", "width")}
    _, target = attach(net(loading.get("width", 8)), loading.get("steps", 12), **fields)
    with pytest.raises(UserError, match="load the state_dict") as err:
        target.load_state_dict(state)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_one_optimizer_step_per_context_and_a_batch_of_samples():
    model = net()
    optimizer, sparsifier = attach(model)
    twice = "optimizer.step\\(\\) was called twice inside the context of training step 0"
    with pytest.raises(UserError, match=twice), sparsifier.step(2):
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(2, 3, 8, 8)).sum().backward()
            optimizer.step()
    for bad in (-5, 2.5, True):
        with pytest.raises(UserError, match="`batch_size` must be the step's number of samples") as err, \
                sparsifier.step(bad):  # type: ignore[arg-type]
            pass
        assert err.value.field == "batch_size"


def test_numpy_integers_are_whole_numbers_and_bools_are_not():
    import json

    import numpy as np

    # np.int64(20) steps were refused as "not a positive whole number"; stored, they are plain ints
    model = net()
    optimizer, sparsifier = attach(model, np.int64(12), delta_t=np.int32(2), seed=np.int64(3), resolution=np.int16(8))
    assert type(sparsifier.total_steps) is int and type(sparsifier.config.delta_t) is int
    assert json.loads(json.dumps(sparsifier.state_dict()["total_steps"])) == 12
    with sparsifier.step(np.int64(4)):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        optimizer.step()
    sparsifier.detach()
    model = net()
    iee = Sparsifier(model, torch.optim.SGD(model.parameters(), lr=0.1), 12, method="iee", hjq=list(np.array([1, 0, 1])))
    assert iee.config.hjq == (1, 0, 1) and all(type(v) is int for v in iee.config.hjq)
    iee.detach()
    for bad in (np.bool_(True), True):
        with pytest.raises(UserError, match="`total_steps` must be a positive whole number"):
            attach(net(), bad)


def test_a_step_called_bare_instead_of_entered_is_refused_at_the_next_step():
    """`sparsifier.step()` called like a scheduler's step does nothing: the next call says so."""
    _, sparsifier = attach(net())
    sparsifier.step(2)
    with pytest.raises(UserError, match=r"never entered.*; wrap each training step: `with sparsifier.step"):
        sparsifier.step(2)


def test_a_frozen_model_and_one_without_layers_to_sparsify_are_refused():
    frozen = net().requires_grad_(False)
    with pytest.raises(UserError, match="every parameter of `model` is frozen"):
        attach(frozen)
    norm = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12))
    with pytest.raises(UserError, match="no trainable Conv2d or Linear layer to sparsify") as err:
        attach(norm)
    assert err.value.field == "model"


def test_a_resolution_other_than_the_inputs_is_refused_at_the_first_forward():
    """`resolution` only feeds the FLOP counts: a wrong one made every FLOP figure wrong without a word."""
    model = net()
    optimizer, sparsifier = attach(model, resolution=1)
    with pytest.raises(UserError, match=r"first input is 8 x 8 px, but the Sparsifier was given `resolution` 1") as err:
        train(model, optimizer, sparsifier, 1)
    assert err.value.field == "resolution" and "pass resolution=8" in str(err.value)
    sparsifier.detach()
    model = net()
    optimizer, sparsifier = attach(model, resolution=8)
    train(model, optimizer, sparsifier, 2)  # the right size trains, and later forwards are not checked again
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    assert sparsifier.dense_flops > sparsifier.sparse_flops > 0  # counted at the inputs' 8 px


def test_a_frozen_layer_stays_dense_and_the_rest_is_sparsified():
    """A conv the user froze (and left out of the optimizer) could never retrain nor regrow once pruned."""
    model = net()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    sparsifier = Sparsifier(model, optimizer, 12, method="rigl", sparsity=0.8, delta_t=2)
    train(model, optimizer, sparsifier, 4)
    assert torch.equal(model[0].weight, frozen)  # untouched: dense
    trained = [model[3].weight, model[8].weight]
    zeros = sum(int((w == 0).sum()) for w in trained) / sum(w.numel() for w in trained)
    assert abs(zeros - 0.8) < 0.02  # the target sparsity over the layers that train


def test_a_scripted_model_is_named():
    model = torch.jit.script(net())
    with pytest.raises(UserError, match="`model` is a TorchScript module, whose layers cannot be sparsified"):
        attach(model)


def test_tied_weights_are_refused_and_an_untied_copy_sparsifies():
    """Two convs sharing one weight would each mask it: the tensor sparser than either mask, the reported sparsity wrong."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    model[4].weight = model[2].weight
    with pytest.raises(UserError, match="'2.weight' and '4.weight' are one tensor \\(tied weights\\)"):
        attach(model)
    model[4].weight = nn.Parameter(model[2].weight.detach().clone())  # the fix the message gives
    optimizer, sparsifier = attach(model)
    train(model, optimizer, sparsifier, 2)


def test_an_nm_pattern_without_a_sparsity_sets_it_and_a_contradicting_one_is_refused():
    """`nm` alone means sparsity 1 - N/M, as `train --nm` (the default 0.9 was refused as a contradiction the
    user had not written); an explicit contradicting sparsity still is."""
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = Sparsifier(model, optimizer, 12, method="static", nm="2:4")
    assert sparsifier.config.sparsity == 0.5
    sparsifier.detach()
    with pytest.raises(UserError, match="`sparsity` 0.9 contradicts `nm` 2:4"):
        Sparsifier(model, optimizer, 12, method="static", nm="2:4", sparsity=0.9)
    with pytest.raises(UserError, match=r"`nm` \(2, 4\) is not an N:M pattern written as text; pass e.g. '2:4'"):
        Sparsifier(model, optimizer, 12, method="static", nm=(2, 4))


def test_a_missing_lut_names_the_field():
    model = net()
    with pytest.raises(UserError, match="LUT '/nonexistent.csv' does not exist") as err:
        Sparsifier(model, torch.optim.SGD(model.parameters(), lr=0.1), 12, method="iee", latency_ratio=0.5,
                   lut="/nonexistent.csv", resolution=8)
    assert err.value.field == "lut"


def test_a_model_gone_nan_between_structure_updates_is_not_deployable():
    """A static mask has no structure update to catch NaN inputs: deployable() refuses the NaN weights instead of
    handing them out."""
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = Sparsifier(model, optimizer, 4, method="static", sparsity=0.5)
    for _ in range(2):
        with sparsifier.step(4):
            optimizer.zero_grad()
            F.cross_entropy(model(torch.full((4, 3, 8, 8), float("nan"))), torch.zeros(4, dtype=torch.long)).backward()
            optimizer.step()
    with pytest.raises(UserError, match="the model's weights hold NaN or inf values in '0.weight'"):
        sparsifier.deployable()
