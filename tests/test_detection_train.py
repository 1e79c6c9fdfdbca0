"""`iee-deploy train --task detection`: the project's trainer on a detector (its own loss dict, mAP on the
validation set), with a Sparsifier method under a latency budget and an unstructured one, on the digit scenes."""

from __future__ import annotations

import json

import detectors
import pytest
import torch
from click.testing import CliRunner
from synthetic_lut import write_synthetic_lut

from iee_deploy.cli import main
from iee_deploy.data.scenes import NUM_CLASSES
from iee_deploy.errors import UserError
from iee_deploy.methods import SparsityConfig
from iee_deploy.models.detection import network_of
from iee_deploy.train import TrainConfig, Trainer

SIZE = 64
TINY = ["--model", "detectors:retinanet_tiny", "--resolution", str(SIZE), "--subset", "4", "--val-subset", "2",
        "--batch-size", "2", "--lr", "0.01", "--no-progress"]


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("method", ["halp", "iee"])
def test_train_task_detection_under_a_latency_budget_end_to_end(method, tmp_path):
    torch.manual_seed(0)
    lut = write_synthetic_lut(tmp_path / "lut.csv", "detectors:retinanet_tiny",
                              network_of(detectors.retinanet_tiny(NUM_CLASSES)), NUM_CLASSES, SIZE)
    out = tmp_path / "run"
    timing = ["--delta-t", "1"] if method == "halp" else ["--hjq", "1,1,1"]
    result = CliRunner().invoke(main, ["train", "--task", "detection", *TINY, "--epochs", "2", "--method", method,
                                       "--latency-ratio", "0.6", "--lut", str(lut), "--update-end", "0.75", *timing,
                                       "--out", str(out)], prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["score"] == "val_map_50" and summary["steps"] == 4
    assert 0.0 <= summary["val_map_50"] <= 1.0 and 0.0 <= summary["val_map"] <= summary["val_map_50"]
    latency = summary["latency"]
    assert latency["within_budget"] and latency["predicted_ms"] < latency["dense_ms"]
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in epochs if r["type"] == "epoch"]
    assert evaluations and {"val_map_50", "val_map", "train_loss"} <= set(evaluations[-1])
    assert "val_acc" not in evaluations[-1] and "train_acc" not in evaluations[-1]
    assert f"{method}: mAP@0.5 " in result.output and "predicted latency" in result.output
    # the final weights are the whole detector's (pre- and post-processing included), its pruned channels zero
    state = torch.load(out / "final_model.pt", weights_only=True)
    assert state.keys() == detectors.retinanet_tiny(NUM_CLASSES).state_dict().keys()
    groups = json.loads((out / "channels.json").read_text())["groups"]
    assert sum(g["kept"] for g in groups.values()) < sum(g["size"] for g in groups.values())


def test_an_unstructured_method_trains_a_detector_through_the_library(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(task="detection", model="detectors:retinanet_tiny", resolution=SIZE, subset=4, val_subset=2,
                         batch_size=2, epochs=2, lr=0.01, sparsity=SparsityConfig(method="rigl", sparsity=0.8, delta_t=1))
    summary = Trainer(config, tmp_path / "run", progress_bar=False).fit()
    assert summary["sparsity"]["achieved"] == pytest.approx(0.8, abs=0.02)
    assert summary["structure"]["grows"] >= 1 and summary["flops"]["sparse_forward"] < summary["flops"]["dense_forward"]
    assert set(summary) >= {"val_map_50", "val_map", "best_val_map_50"}


def test_unknown_tasks_and_classifiers_as_detectors_are_refused_in_one_line(tmp_path):
    runner = CliRunner()
    line = one_line_error(runner.invoke(main, ["train", "--task", "segmentation"], prog_name="iee-deploy"))
    assert "unknown task 'segmentation'" in line and "classification, detection" in line
    from iee_deploy.tasks import task_named

    for name in (None, 3):  # through the library: not a name at all
        with pytest.raises(UserError, match=f"unknown task {name!r}; choose one of: classification, detection"):
            task_named(name)  # type: ignore[arg-type]
    line = one_line_error(runner.invoke(main, ["train", "--task", "detection", "--model", "resnet20"], prog_name="iee-deploy"))
    assert "'resnet20' is not a detector" in line and "ssdlite" in line
    with pytest.raises(UserError, match="is a CifarResNet, not a torchvision detector"):
        config = TrainConfig(task="detection", model="resnet20", resolution=SIZE, subset=2, val_subset=1)
        from iee_deploy.models import build_model

        Trainer(config, tmp_path / "run", model=build_model("resnet20", NUM_CLASSES, SIZE), progress_bar=False).fit()
    with pytest.raises(UserError, match="`task` 'segmentation' is not a task"):
        TrainConfig(task="segmentation")
