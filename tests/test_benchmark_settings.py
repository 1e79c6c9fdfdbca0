"""Benchmark settings other than the default get their own run folders and results, a finished run is
reused only for the command it ran (benchmarks/common.py), and the structured benchmark's device reaches
every training command (benchmarks/structured.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks.structured as structured
from benchmarks.common import ROOT, budget_folder, folder_budget, setting_suffix, stale_settings, train_run
from benchmarks.structured import base_command
from iee_deploy.methods.base import SparsityConfig
from iee_deploy.train import TrainConfig


def test_a_budget_folder_names_the_percent_and_reads_back():
    assert [budget_folder(b) for b in (0.7, 0.5, 0.35, 1.0)] == ["r70", "r50", "r35", "r100"]
    assert [folder_budget(budget_folder(b)) for b in (0.7, 0.5, 0.35)] == [0.7, 0.5, 0.35]
    for name in ("seed0", "r", "r3.5", "align8"):
        with pytest.raises(ValueError, match="not a budget folder"):
            folder_budget(name)


def test_setting_suffix_names_every_changed_length_then_the_device():
    assert setting_suffix("cpu", e=(None, 48)) == ""
    assert setting_suffix("cpu", e=(48, 48)) == ""  # the default given explicitly is the default
    assert setting_suffix("cuda", e=(48, 48)) == "-cuda"
    assert setting_suffix("cpu", e=(24, 48)) == "-e24"
    assert setting_suffix("cpu", d=(60, 15), e=(30, 10)) == "-d60-e30"
    assert setting_suffix("cuda", d=(None, 15), e=(30, 10)) == "-e30-cuda"
    assert setting_suffix("cuda", d=(60, 15), e=(10, 10)) == "-d60-cuda"


def test_structured_device_reaches_the_training_command_and_the_cpu_command_is_unchanged():
    args = argparse.Namespace(model="resnet20", batch_size=64, lr=0.1, device="cpu")
    data = ROOT / "benchmarks" / ".cache" / "cifar10-jpeg-1000-200"
    cpu = base_command(data, args, 7.5, 2)
    cuda = base_command(data, argparse.Namespace(**{**vars(args), "device": "cuda"}), 7.5, 2)
    assert "--device" not in cpu
    assert cuda[cuda.index("--device") + 1] == "cuda"
    assert [a for a in cuda if a not in ("--device", "cuda")] == cpu
    assert cpu[cpu.index("--epochs") + 1] == "7.5" and cpu[cpu.index("--seed") + 1] == "2"
    assert Path(cpu[cpu.index("--data-dir") + 1]) == Path("benchmarks/.cache/cifar10-jpeg-1000-200")


def test_the_structured_carry_copies_exactly_the_subset_and_lut_a_run_reads(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    data = cache / "cifar10-jpeg-2-1"
    (data / "train" / "cat").mkdir(parents=True)
    (data / "train" / "cat" / "0.jpg").write_bytes(b"jpeg")
    lut = cache / "luts" / "cpu-resnet20-32.csv"
    lut.parent.mkdir()
    lut.write_text("csv")
    lut.with_suffix(".json").write_text("{}")
    (cache / "luts" / "other.csv").write_text("not carried")
    monkeypatch.setattr(structured, "CACHE", cache)
    out = tmp_path / "carry"
    (out / "stale").mkdir(parents=True)  # an earlier carry is replaced, not merged
    structured.carry(out, data, lut)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "cifar10-jpeg-2-1/train/cat/0.jpg", "luts/cpu-resnet20-32.csv", "luts/cpu-resnet20-32.json"]


def test_the_structured_benchmark_refuses_an_impossible_training_set_in_one_line():
    done = subprocess.run([sys.executable, "-m", "benchmarks.structured", "--train-per-class", "6000"], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 1
    assert done.stderr.strip() == "--train-per-class 6000: give 1 to 5000 (CIFAR-10 has 5,000 per class)"


def test_the_structured_carry_refuses_an_unwritable_folder_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "benchmarks.structured", "--carry", str(blocker)], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 1
    assert done.stderr.strip().startswith("`carry` ") and "is a file, not a folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _stored() -> dict:
    """config.json of an IEE run: 96 epochs, seed 1, H, J, Q = 60,7,7, delta_t auto (null)."""
    return TrainConfig(model="resnet20", dataset="cifar10", data_dir="data/c", val_subset=2000, epochs=96.0, seed=1,
                       sparsity=SparsityConfig(method="iee", sparsity=0.9, hjq=(60, 7, 7))).to_json()


def _command(*options: str) -> list[str]:
    return ["python", "-m", "iee_deploy", "train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir",
            "data/c", "--val-subset", "2000", "--epochs", "96", "--seed", "1", "--method", "iee", "--sparsity", "0.9",
            "--hjq", "60,7,7", *options, "--out", "runs/x", "--no-progress"]


def test_stale_settings_names_each_stated_option_the_finished_run_did_not_have():
    assert stale_settings(_command(), _stored()) == []
    assert stale_settings(_command("--delta-t", "auto"), _stored()) == []  # auto is stored as null
    assert stale_settings(_command("--epochs", "72"), _stored()) == ["--epochs 72 (the run has 96.0)"]
    assert stale_settings(_command("--hjq", "64,8,8", "--seed", "2"), _stored()) == [
        "--hjq 64,8,8 (the run has [60, 7, 7])", "--seed 2 (the run has 1)"]
    assert stale_settings(_command("--val-subset", "1000"), _stored()) == ["--val-subset 1000 (the run has 2000)"]
    assert stale_settings(_command("--delta-t", "25"), _stored()) == ["--delta-t 25 (the run has null)"]
    assert stale_settings(_command("--no-freeze"), _stored()) == ["--no-freeze (the run has freeze true)"]


def test_train_run_refuses_a_finished_folder_of_other_settings_in_one_line(tmp_path):
    out = tmp_path / "seed1"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(_stored()))
    (out / "summary.json").write_text("{}")
    cmd = _command()
    assert train_run(cmd, out).endswith("--no-progress")  # the same settings: reused, nothing trained
    with pytest.raises(SystemExit, match=r"holds a finished run with other settings than this benchmark's: "
                       r"--epochs 72 \(the run has 96.0\): move it away"):
        train_run(_command("--epochs", "72"), out)
