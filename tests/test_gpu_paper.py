"""benchmarks/gpu_paper.py: its sizing rules exactly, and every stage end to end in its CPU dry run."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import gpu_paper
from benchmarks.gpu_paper import concurrent_epoch_s, epoch_accuracies, size_schedule, step_classes


def test_concurrent_epoch_time_is_the_sum_of_the_arms_alone():
    rates = {"static": 10_000.0, "rigl": 10_000.0, "iee": 5_000.0, "dense": 1.0}
    assert concurrent_epoch_s(rates, 50_000) == pytest.approx(5 + 5 + 10)


def test_schedule_keeps_the_paper_period_only_with_15_iee_updates():
    long = size_schedule(epoch_s=10.0, train_s=1000.0, steps_per_epoch=390)
    assert long["epochs"] == 86 and long["steps"] == 86 * 390  # floor(1000 / (10 x 1.15))
    assert long["update_window"] == int(0.75 * 86 * 390) and long["paper_period_updates"] == 55
    assert (long["hjq"], long["delta_t"], long["paper_period"]) == ("150,150,150", "100", True)
    short = size_schedule(epoch_s=20.0, train_s=300.0, steps_per_epoch=390)
    assert short["epochs"] == 13 and short["paper_period_updates"] == 8  # 3802 // 450
    assert (short["hjq"], short["delta_t"], short["paper_period"]) == ("auto", "auto", False)
    edge = size_schedule(epoch_s=1.0, train_s=1.15 * 24 + 0.01, steps_per_epoch=375)  # 24 epochs: 6750 steps, window 6750
    assert edge["paper_period_updates"] == 15 and edge["paper_period"]
    assert size_schedule(epoch_s=100.0, train_s=1.0, steps_per_epoch=390)["epochs"] == 1
    assert size_schedule(epoch_s=0.001, train_s=1000.0, steps_per_epoch=390, max_epochs=250)["epochs"] == 250


def test_step_classes_and_epoch_accuracies():
    assert step_classes(["sparse", "dense_forward", "sparse", "dense"], [False, False, True, False]) == \
        ["sparse", "explore", "update", "explore"]
    metrics = [{"type": "update", "step": 3}, {"type": "epoch", "val_acc": 0.5}, {"type": "epoch", "val_acc": 0.625}]
    assert epoch_accuracies(metrics) == [50.0, 62.5]


@pytest.fixture(scope="module")
def tiny_jpeg_cifar(tmp_path_factory):
    """train/<class>/*.jpg (5 per class) and test/<class>/*.jpg (2 per class), 32 x 32, random pixels."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("test", 2)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_times_sizes_and_trains_the_three_arms(tiny_jpeg_cifar, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    record = gpu_paper.main(["--dry-run", "--data", str(tiny_jpeg_cifar), "--out", str(out), "--work", str(work),
                             "--budget-s", "800"])
    arms = record.throughput["arms"]
    assert set(arms) == {"dense", "static", "rigl", "iee"} and all(a["images_per_s"] > 0 for a in arms.values())
    assert arms["iee"]["explore_steps"] > 0 and arms["iee"]["update_steps"] > 0 and arms["rigl"]["update_steps"] > 0
    assert arms["static"]["explore_steps"] == arms["static"]["update_steps"] == 0
    assert record.throughput["iee_sparse_step_vs_static"] > 0
    schedule = record.schedule
    assert 1 <= schedule["epochs"] <= 2 and schedule["hjq"] == "auto" and len(schedule["commands"]) == 3
    for arm in ("static", "rigl", "iee"):
        run = record.runs[arm]
        assert run["finished"] and run["returncode"] == 0, (arm, (work / f"{arm}.log").read_text()[-2000:])
        assert len(run["epoch_top1"]) == schedule["epochs"] and run["top1"] == run["epoch_top1"][-1]
        assert run["sparsity"] == pytest.approx(0.9, abs=0.01) and run["train_flops"] > 0
    assert record.runs["iee"]["grows"] > 0 and record.runs["rigl"]["grows"] > 0
    # the same seed: identical initial weights, data order and augmentation in every arm
    configs = [json.loads((work / arm / "config.json").read_text()) for arm in ("static", "rigl", "iee")]
    assert len({(c["seed"], c["batch_size"], c["lr"], c["epochs"], c["subset"]) for c in configs}) == 1
    assert sorted(p.name for p in out.iterdir()) == ["details.tar.gz", "gpu_paper.json", "gpu_paper.log", "gpu_paper.md"]
    md = (out / "gpu_paper.md").read_text()
    assert "Dry run on a CPU" in md and "| iee |" in md and "93.6" in md and "IEE > RigL > static" in md
