"""The Python API (`Sparsifier`) in a plain PyTorch loop: the README's snippet, the same masks and
weights as `iee-deploy train` for the same seed, and a user's own DDP loop on two ranks."""

import json
import os
import re
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import ROOT
from torch import nn

from iee_deploy.cli import main
from iee_deploy.data import build_datasets
from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.runs import RunFolder
from iee_deploy.seeding import seed_everything
from iee_deploy.sparse.distributions import layer_active_counts
from iee_deploy.sparse.masks import prunable_layers
from iee_deploy.sparsifier import Sparsifier
from iee_deploy.train.data import ResumableBatchSampler
from iee_deploy.train.device_data import device_train_loader
from iee_deploy.train.trainer import cosine_lr_factor


def test_readme_snippet_runs_in_a_plain_loop(one_thread, capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- python-api:[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README's Python API block is gone"
    assert len(block.group(1).strip().splitlines()) <= 30
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    sparsifier, model = scope["sparsifier"], scope["model"]
    assert sparsifier.steps_done == scope["epochs"] * len(scope["loader"])
    weights = [m.weight for _, m in prunable_layers(model)]
    with sparsifier.evaluation():
        density = sum(int(w.ne(0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert density == pytest.approx(0.1, abs=0.01)
    events = [r["event"] for r in sparsifier.history]
    assert events.count("prune") == events.count("grow") >= 2
    last = sparsifier.history[-1]
    assert last["event"] == "grow" and 0 <= last["iou"] <= 1 and 0 < last["forward_flops"] < last["dense_forward_flops"]
    evaluated = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines() if re.match(r"\d+ \d", line)]
    assert evaluated == list(range(scope["epochs"]))  # every epoch once, in order: epoch 0 ends inside an update
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in scope["deployable"].parameters())


ARGS = ["--model", "resnet20", "--resolution", "8", "--subset", "160", "--batch-size", "16", "--epochs", "3",
        "--seed", "3", "--no-progress"]


def api_loop(method: str, steps_epochs: int = 3, **fields) -> Sparsifier:
    """What a user writes: their own data order, optimizer, schedule and loop, with a Sparsifier.

    It holds the images in memory and trains in channels-last as the trainer does, so that the
    arithmetic, not only the method, is the CLI's."""
    bundle = build_datasets("digits", resolution=8, subset=160)
    seed_everything(3)
    model = build_model("resnet20", bundle.num_classes, 8).to(memory_format=torch.channels_last)
    sampler = ResumableBatchSampler(len(bundle.train), 16, seed=3)
    loader = device_train_loader(bundle.train, sampler, torch.device("cpu"), seed=3)
    assert loader is not None
    total = steps_epochs * len(sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(cosine_lr_factor, total=total, warmup=0))
    sparsifier = Sparsifier(model, optimizer, total, method=method, resolution=8, seed=3, **fields)
    for epoch in range(steps_epochs):
        sampler.set_position(epoch, 0)
        for images, labels in loader:
            with sparsifier.step(len(labels)):
                optimizer.zero_grad()
                F.cross_entropy(model(images), labels).backward()
                optimizer.step()
            schedule.step()
    return sparsifier


def same(a, b) -> bool:
    """Equal nested checkpoint states (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("method", ["iee", "rigl"])
def test_python_api_and_cli_give_identical_masks_and_weights(method, tmp_path, one_thread):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["train", *ARGS, "--method", method, "--sparsity", "0.8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sparsifier = api_loop(method, sparsity=0.8)
    ours, theirs = sparsifier.active_state_dict(), RunFolder(out).load_final_model()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # weights, BN statistics
    stored = RunFolder(out).load_checkpoint()["sparsifier"]["method"]  # masks, MRU values, generator, history
    assert same(sparsifier.method.state_dict(), stored)
    logged = [{k: v for k, v in r.items() if k not in ("type", "epoch")} for r in RunFolder(out).updates()]
    assert logged == json.loads(json.dumps(sparsifier.history)) and logged  # same IoU / survival / FLOPs history
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flops"]["train_total"] == pytest.approx(sparsifier.train_flops)


def test_misuse_is_named(one_thread):
    model = build_model("resnet20", 10, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = Sparsifier(model, optimizer, 10, method="static", sparsity=0.5)
    with pytest.raises(UserError, match="was not called"), sparsifier.step():
        pass
    with pytest.raises(UserError, match="either `config` or"):
        Sparsifier(model, optimizer, 10, sparsifier.config, sparsity=0.5)
    assert sparsifier.steps_done == 0
    optimizer.step()  # outside a step context the optimizer is a plain one


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"model": "resnet20"}, "model", "must be a torch.nn.Module"),
    ({"model": nn.ReLU()}, "model", "with parameters"),
    ({"optimizer": "sgd"}, "optimizer", "must be a torch.optim.Optimizer"),
    ({"optimizer": "other"}, "optimizer", "holds none of the model's parameters"),
    ({"total_steps": 0}, "total_steps", "positive whole number"),
    ({"total_steps": 2.5}, "total_steps", "positive whole number"),
    ({"resolution": -8}, "resolution", "positive number of pixels"),
    ({"sparsity": 1.5}, "sparsity", "sparsity"),
    ({"colour": "red"}, None, "unknown argument"),
    ({"method": "rigl", "delta_t": "5"}, "delta_t", "not a positive whole number of steps"),
    ({"method": "iee", "hjq": "1,1,1"}, "hjq", r"as a tuple, e.g. \(150, 150, 150\)"),  # the CLI's spelling
    ({"model": "meta"}, "model", "meta device"),
    ({"config": "iee"}, "config", "must be a SparsityConfig"),  # the method's name where the config goes
], ids=["model-a-name", "model-no-params", "optimizer-a-name", "optimizer-of-another-model", "steps-zero",
        "steps-fraction", "resolution-negative", "sparsity-above-one", "unknown-keyword", "delta-t-a-string", "hjq-a-string",
        "model-on-the-meta-device", "config-a-string"])
def test_every_bad_argument_is_a_user_error_naming_it(change, field, fragment):
    model = build_model("resnet20", 10, 8)
    args = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "total_steps": 10,
            "resolution": 8, "method": "static", "sparsity": 0.5}
    if change.get("model") == "meta":
        with torch.device("meta"):
            meta = build_model("resnet20", 10, 8)
        change = {"model": meta, "optimizer": torch.optim.SGD(meta.parameters(), lr=0.1)}
    if change.get("optimizer") == "other":
        change = {"optimizer": torch.optim.SGD(build_model("resnet20", 10, 8).parameters(), lr=0.1)}
    if "config" in change:  # given instead of the fields
        del args["method"], args["sparsity"]
    args.update(change)
    with pytest.raises(UserError, match=fragment) as info:
        Sparsifier(args.pop("model"), args.pop("optimizer"), args.pop("total_steps"), **args)
    if field is not None:
        assert info.value.field == field


BN_SNAPSHOT = "method/space/masks/buffers/"
"""IEE's copy of the BN running statistics taken at Reactivate (restored after each frozen exploration step).
Under DDP those statistics are each rank's own, as DDP keeps them (it broadcasts rank 0's before every
forward), so the copy may differ between ranks; everything else of the method's state may not."""


def test_user_ddp_loop_keeps_ranks_identical_and_sparsity_exact(tmp_path):
    """torchrun, 2 gloo ranks on CPU, each with its own batches: IEE and RigL through `Sparsifier` on a DDP model."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_user_loop.py"), str(tmp_path), "iee", "rigl"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for method, updates in (("iee", 3), ("rigl", 4)):
        ours, theirs = ranks[0][method], ranks[1][method]
        assert ours["events"] == theirs["events"] == ["prune", "grow"] * updates, method
        budget = layer_active_counts([tuple(s) for s in ours["shapes"]], 0.8, "erk")
        for mine, other in zip(ours["steps"], theirs["steps"]):
            assert all(name.startswith(BN_SNAPSHOT) for name in other["differ"]), (method, other)
            assert other["compared"] >= 16  # 10 parameters, and the masks and MRU values of 3 layers (and more)
            assert mine["active"] == other["active"] and mine["nonzero"] == mine["active"]  # Theta_K is what computes
            if mine["in_update"]:  # between IEE's Prune and Grow Theta_K is short of its budget
                assert all(a <= b for a, b in zip(mine["active"], budget)) and mine["active"] != budget
            else:
                assert mine["active"] == budget, (method, mine["step"])  # exact ERK sparsity 0.8
        assert any(s["in_update"] for s in ours["steps"]) == (method == "iee")
