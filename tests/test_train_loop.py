"""The training loop end to end: run folder, kill-and-resume, DDP under torchrun, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT, assert_user_error, run_cli

from iee_deploy.cli import main
from iee_deploy.data import build_datasets
from iee_deploy.deploy.run_models import load_run_models
from iee_deploy.methods import SparsityConfig
from iee_deploy.models import build_model
from iee_deploy.sparse.distributions import layer_active_counts
from iee_deploy.sparse.masks import prunable_layers
from iee_deploy.sparse.state import TrainableSet
from iee_deploy.train import TrainConfig, Trainer

ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # one thread: deterministic and fast when shared
SMALL = ("--model", "resnet20", "--resolution", "8", "--subset", "160", "--batch-size", "16", "--no-progress")


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iee_deploy", "train", *SMALL, *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def updates(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "update"]


def test_train_writes_the_run_folder_with_exact_erk_sparsity(tmp_path):
    run = tmp_path / "run"
    result = cli("--epochs", "4", "--sparsity", "0.8", "--out", str(run))
    out, err = result.communicate(timeout=300)
    assert result.returncode == 0, err
    assert "grown-weight survival" in out and "epoch 4:" in out
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["kind"] == "unstructured" and info["sparsity"] == 0.8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["structure"]["prunes"] == summary["structure"]["grows"] == summary["settings"]["updates"] >= 4
    assert 0 < summary["flops"]["sparse_forward"] < summary["flops"]["dense_forward"]
    recs = updates(run)
    assert all(0 <= r["survival"] <= 1 for r in recs if r["event"] == "prune" and r["t"] > 0)
    assert all(r["iou"] is not None for r in recs[2:])
    model = build_model("resnet20", 10, 8)
    model.load_state_dict(torch.load(run / "final_model.pt"))
    shapes = [tuple(m.weight.shape) for _, m in prunable_layers(model)]
    assert [int(m.weight.ne(0).sum()) for _, m in prunable_layers(model)] == layer_active_counts(shapes, 0.8, "erk")
    pruned = load_run_models(run).pruned
    assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), model.state_dict().values()))
    assert (run / "curves.png").stat().st_size > 0
    assert "survival" in (run / "summary.md").read_text()


def test_a_model_handed_over_in_eval_mode_trains_in_train_mode(tmp_path):
    """BatchNorm learns batch statistics while training (a pruner may hand the model back in eval mode)."""
    data = build_datasets("digits", resolution=8, subset=64)
    model = build_model("resnet20", 10, 8).eval()
    before = model.bn1.running_mean.clone()
    config = TrainConfig(resolution=8, subset=64, batch_size=32, epochs=1, sparsity=SparsityConfig(method="static",
                                                                                                   sparsity=0.0))
    Trainer(config, tmp_path / "run", model=model, data=data, progress_bar=False).fit()
    assert not torch.equal(model.bn1.running_mean, before)  # updated only by forward passes in train mode


def test_eval_every_validates_every_nth_epoch_and_the_last(tmp_path):
    """3.5 epochs at eval_every=2: epoch records at 2 and at the partial last one (4), the summary's figures from it."""
    data = build_datasets("digits", resolution=8, subset=64)
    config = TrainConfig(resolution=8, subset=64, batch_size=16, epochs=3.5, eval_every=2,
                         sparsity=SparsityConfig(method="static", sparsity=0.0))
    summary = Trainer(config, tmp_path / "run", data=data, progress_bar=False).fit()
    epochs = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [2, 4] and [r["step"] for r in epochs] == [7, 13]  # 4 steps an epoch
    assert summary["val_acc"] == epochs[-1]["val_acc"]
    with pytest.raises(ValueError, match="`eval_every` 0 is not a positive number"):
        TrainConfig(eval_every=0)


def test_kill_and_resume_gives_the_same_final_masks(tmp_path):
    args = ("--epochs", "6", "--checkpoint-every", "4", "--method", "iee")
    whole = cli(*args, "--out", str(tmp_path / "whole"))
    killed = cli(*args, "--out", str(tmp_path / "killed"))
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not (tmp_path / "killed" / "summary.json").exists()  # really interrupted
    resumed = cli(*args, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    assert whole.wait(timeout=300) == 0, whole.communicate()[1]
    a, b = (torch.load(tmp_path / name / "final_model.pt") for name in ("whole", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights, so the same masks
    assert updates(tmp_path / "whole") == updates(tmp_path / "killed")  # same IoU / survival history


def test_resume_in_the_middle_of_reactivate_and_explore(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses: fast on a shared machine
    try:
        _resume_mid_explore(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_mid_explore(tmp_path):
    data = build_datasets("digits", resolution=8, subset=96)
    config = TrainConfig(resolution=8, subset=96, batch_size=16, epochs=3, checkpoint_every=1,
                         sparsity=SparsityConfig(hjq=(2, 1, 2)))
    reference = tmp_path / "reference"
    Trainer(config, reference, data=data, progress_bar=False).fit()

    class Crash(Exception):
        pass

    def crash(step, model, method):
        if method.state.trainable is TrainableSet.EXPLORATION and step > 8:
            raise Crash

    with pytest.raises(Crash):
        Trainer(config, tmp_path / "crashed", data=data, progress_bar=False, on_step_end=crash).fit()
    assert torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)["sparsifier"]["method"]["space"][
        "masks"]["trainable"] == "exploration"
    Trainer(config, tmp_path / "crashed", data=data, progress_bar=False, resume=True).fit()
    a, b = (torch.load(tmp_path / name / "final_model.pt") for name in ("reference", "crashed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_piped_train_logs_whole_lines(tmp_path):
    """Without a TTY (a log file, CI) the progress bar is whole lines, and the epoch lines stay."""
    args = [arg for arg in SMALL if arg != "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "iee_deploy", "train", *args, "--epochs", "2", "--sparsity", "0.5",
                             "--out", str(tmp_path / "run")], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout + result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    progress_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert progress_lines[0].startswith("epoch 1/2: 1/") and " step (" in progress_lines[0]
    assert any(line.startswith("epoch 2/2: ") and "(100%)" in line for line in progress_lines), progress_lines


def test_torchrun_two_ranks_hold_identical_masks(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "run"), str(dump)]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (torch.load(dump / f"rank{r}.pt") for r in (0, 1))
    assert r0["step"] == r1["step"] and (r0["rank"], r1["rank"]) == (0, 1)
    assert all(torch.equal(a, b) for a, b in zip(r0["masks"], r1["masks"]))
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert len(updates(tmp_path / "run")) == 4  # 8 steps, updates in the first 6: T = 2 (rank 0 wrote the metrics)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_batch"] == 24


def test_train_user_errors(tmp_path):
    assert_user_error(run_cli("train", "--latency-ms", "5"), "needs a latency lookup table (--lut)")
    runner = CliRunner()
    for args, fragment in [
        (["--method", "halp"], "needs a latency budget"),
        (["--out", str(tmp_path), "--resume"], "nothing to resume"),
        (["--nm", "2:4", "--distribution", "global"], "cannot be combined with --distribution global"),
        (["--nm", "2:4", "--sparsity", "0.9"], "contradicts --nm"),
        (["--method", "rigl", "--hjq", "5,5,5"], "does not use --hjq"),
        (["--hjq", "5,5"], "'--hjq': '5,5' is not three"),
        (["--update-end", "0"], "'--update-end': 0.0 is not in the range 0<x<=1"),
        (["--eval-every", "0"], "'--eval-every': 0 is not in the range x>=1"),
    ]:
        result = runner.invoke(main, ["train", "--subset", "64", "--out", str(tmp_path), *args])
        assert result.exit_code == 2 and fragment in result.output, (args, result.output)


def test_epoch_seeds_fit_a_torch_generator_and_keep_earlier_data_orders():
    """Every --seed the help advertises (0 .. 2**63 - 1) seeds the data order; small seeds are unchanged."""
    from iee_deploy.seeding import MAX_SEED, epoch_seed
    from iee_deploy.train.device_data import augmentation_seed

    assert epoch_seed(3, 2) == 3 * 1_000_003 + 2
    assert augmentation_seed(3, 2) == (3 * 1_000_003 + 2) * 2 + 7_919
    for seed in (MAX_SEED, MAX_SEED - 1, 2**62):
        for value in (epoch_seed(seed, 5), augmentation_seed(seed, 5)):
            assert 0 <= value < 2**63
            torch.Generator().manual_seed(value)


def test_resume_names_each_changed_setting_with_both_values():
    from iee_deploy.train.trainer import config_differences

    stored = {"epochs": 1.0, "lr": 0.1, "sparsity": {"method": "static", "sparsity": 0.9}}
    wanted = {"epochs": 2.0, "lr": 0.1, "sparsity": {"method": "rigl", "sparsity": 0.9}}
    assert config_differences(stored, wanted) == [("method", "`method` 'static', not 'rigl'"),
                                                  ("epochs", "`epochs` 1.0, not 2.0")]


def test_resume_names_the_task_model_method_and_dataset_before_other_differences():
    """A refusal shows the first three differences and "and N more": a changed task must not hide there."""
    from iee_deploy.train.trainer import config_differences

    stored = {"task": "classification", "batch_size": 64, "epochs": 1.0, "lr": 0.1, "model": "resnet20",
              "dataset": "digits", "sparsity": {"method": "static"}}
    wanted = {"task": "detection", "batch_size": 2, "epochs": 0.5, "lr": 0.01, "model": "ssdlite",
              "dataset": "voc", "sparsity": {"method": "rigl"}}
    assert [field for field, _ in config_differences(stored, wanted)] == [
        "task", "model", "method", "dataset", "batch_size", "epochs", "lr"]


def test_nm_shortfall_warns_with_the_achieved_figure():
    from iee_deploy.train.trainer import nm_shortfall

    assert nm_shortfall("2:4", 0.5) is None
    assert nm_shortfall("1:16", 0.936) == ("warning: some layers cannot hold 1:16 (their input width is not a multiple "
                                           "of 16) and stay dense: the network is 93.60% sparse, not 93.75%")


def test_a_run_folder_from_before_tasks_resumes(tmp_path):
    """A classification run whose config.json has no `task` and whose checkpoint holds its last figures as
    `val_loss` and `val_acc` resumes."""
    data = build_datasets("digits", resolution=8, subset=32)
    config = TrainConfig(resolution=8, subset=32, batch_size=16, epochs=2, sparsity=SparsityConfig(method="static"))

    class Crash(Exception):
        pass

    def crash(step, model, method):
        if step == 2:
            raise Crash

    with pytest.raises(Crash):
        Trainer(config, tmp_path, data=data, progress_bar=False, on_step_end=crash).fit()
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["task"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    progress = checkpoint["progress"]
    progress["val_loss"], progress["val_acc"] = progress["val"].pop("val_loss"), progress.pop("val").pop("val_acc")
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    summary = Trainer(config, tmp_path, data=data, progress_bar=False, resume=True).fit()
    assert summary["steps"] == 4 and 0 <= summary["val_acc"] <= 1 and summary["best_val_acc"] >= summary["val_acc"]
