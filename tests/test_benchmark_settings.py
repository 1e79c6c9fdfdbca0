"""Benchmark settings other than the default get their own run folders and results (benchmarks/common.py),
and the structured benchmark's device reaches every training command (benchmarks/structured.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import benchmarks.structured as structured
from benchmarks.common import ROOT, setting_suffix
from benchmarks.structured import base_command


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
