"""`benchmarks.detection --quick`: the detection benchmark's whole pipeline on one tiny SSDlite (LUT, dense and
plateau runs, HALP and IEE under the budget, engines built and timed side by side, the report), and its report
rebuilt from the run records alone."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from benchmarks.common import ROOT
from benchmarks.detection import (
    FULL,
    METHODS,
    QUICK,
    SCENE_SECONDS,
    Sizing,
    against_paper,
    base_train,
    estimated_hours,
    evaluated,
    plateau_pairs,
    plateau_runs,
    table_machine,
)


@pytest.mark.timeout(900)  # about 90 s on an idle 2-core machine; several minutes when it is shared
def test_quick_mode_writes_every_arm_and_rebuilds_from_its_records(tmp_path):
    argv = [sys.executable, "-m", "benchmarks.detection", "--quick", "--runs", str(tmp_path / "runs"), "--results",
            str(tmp_path / "results")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # as the benchmark's runs
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=900, capture_output=True)
    record = json.loads((tmp_path / "results" / "detection_quick.json").read_text())
    (row,) = record["rows"]
    assert row["model"] == QUICK.models[0].model and set(row["arms"]) == set(METHODS)
    assert row["sizing"]["train_scenes"] == QUICK.models[0].train_scenes and row["training_seconds"] > 0
    for arm in row["arms"].values():
        assert 0 <= arm["map_50"] <= 1 and arm["ms"] > 0 and arm["speedup"] > 0 and arm["postprocess_ms"] > 0
        assert len(arm["per_seed"]) == QUICK.seeds and arm["flops"] > 0
    assert row["dense"]["ms"] > 0 and "plateaued" in row and row["iee_vs_halp"]["n"] == QUICK.seeds
    assert row["dense"]["seeds_map_50"] == [row["dense"]["map_50"]]  # one seed: D is the dense model
    assert "its latency table profiled" in (tmp_path / "results" / "detection_quick.md").read_text()
    assert len(row["timing_passes"]) == 3 and all(set(p) == set(row["timing_passes"][0]) for p in row["timing_passes"])
    text = (tmp_path / "results" / "detection_quick.md").read_text()
    assert "| ssdlite | iee |" in text and "Paper (Fig. 4)" in text and "--method halp" in text
    assert (tmp_path / "results" / "detection_quick.png").stat().st_size > 0 and "8 training and 4 validation scenes" in text
    shutil.rmtree(tmp_path / "runs")  # the records alone rebuild the report: nothing is trained again
    done = subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=300, capture_output=True, text=True)
    assert "epoch 1" not in done.stdout + done.stderr
    again = json.loads((tmp_path / "results" / "detection_quick.json").read_text())
    assert again["rows"][0]["arms"]["iee"]["map_50"] == row["arms"]["iee"]["map_50"]
    assert again["rows"][0]["timing_passes"] == row["timing_passes"]  # the recorded timing, read as it was measured
    record = next((tmp_path / "results" / "detection_quick_runs").glob("*/iee/seed0.json"))
    record.unlink()  # a pruned run still to train, and the dense model's weights gone with the runs folder
    lost = subprocess.run(argv, cwd=ROOT, env=env, timeout=300, capture_output=True, text=True)
    assert lost.returncode != 0 and "Traceback" not in lost.stderr
    assert "pruned run(s) start from the dense checkpoint" in lost.stderr and "to train the dense model again" in lost.stderr


def test_estimated_hours_counts_dense_plateau_and_every_pruned_run():
    mode = dataclasses.replace(FULL, models=(Sizing("ssdlite", 100, 4, 2),), seeds=3, jobs=2)
    # 100 scenes x (3 seeds x (4 dense + 3 plateau epochs) + 2 methods x 3 seeds x 2 epochs), two runs at a time
    assert estimated_hours(mode) == pytest.approx(100 * (21 + 12) * SCENE_SECONDS["ssdlite"] / 3600 / 2)


def test_a_setting_has_its_own_folder_and_evaluates_as_its_sizing_says():
    first, wider = Sizing("fcos_resnet18", 300, 60, 8), Sizing("ssdlite", 1000, 80, 10, val_scenes=1000, eval_every=10)
    assert (first.folder, wider.folder) == ("fcos_resnet18-d60", "ssdlite-d80-v1000")  # the first settings' names hold
    cmd = base_train(FULL, wider, 60, 1, 0.01)
    assert cmd[cmd.index("--val-subset") + 1] == "1000" and cmd[cmd.index("--eval-every") + 1] == "10"
    assert "--eval-every" not in base_train(FULL, first, 60, 1, 0.01)  # the recorded commands of the first settings
    assert evaluated(1) == "" and evaluated(10) == " (evaluated every 10 epochs and after the last)"


def test_plateau_check_pairs_every_seed_and_the_dense_model_is_seed_0s_full_run():
    assert plateau_pairs(3) == (["dense-0.75D", "dense-0.75D-seed1", "dense-0.75D-seed2"],
                                ["dense", "dense-seed1", "dense-seed2"])
    assert plateau_runs(Sizing("ssdlite", 100, 80, 10), 3) == [
        ("dense", 80.0, 0), ("dense-seed1", 80.0, 1), ("dense-seed2", 80.0, 2), ("dense-0.75D", 60.0, 0),
        ("dense-0.75D-seed1", 60.0, 1), ("dense-0.75D-seed2", 60.0, 2)]
    assert plateau_runs(Sizing("ssdlite", 8, 2, 4), 1) == [("dense", 2.0, 0), ("dense-0.75D", 1.5, 0)]


def test_against_paper_says_the_speed_up_and_the_side_of_dense_resolved_only_outside_zero():
    d = lambda mean, low, high, n=3: {"mean": mean, "low": low, "high": high, "n": n}  # noqa: E731
    assert against_paper(d(0.01, 0.002, 0.02), 2.214) == "2.21x, above dense (resolved)"
    assert against_paper(d(0.01, -0.01, 0.03), 1.5) == "1.50x, above dense (unresolved)"
    assert against_paper(d(-0.0062, -0.0403, 0.0278), 2.18) == "2.18x, below dense (unresolved)"
    assert against_paper(d(-0.03, -0.05, -0.01), 2.0) == "2.00x, below dense (resolved)"
    nan = float("nan")
    assert against_paper(d(0.02, nan, nan, 1), 2.0) == "2.00x, above dense (unresolved)"  # one seed: no interval


def test_table_machine_flags_a_table_profiled_on_another_cpu_or_another_virtual_host():
    zen3 = {"date": "2026-12-07T01:01:14+00:00", "platform": "Linux-v1272", "cpu_identity": "family 25, model 1, avx2"}
    zen4 = {"date": "2026-12-07T12:57:48+00:00", "platform": "Linux-v1300", "cpu_identity": "family 25, model 17, avx512"}
    assert table_machine(zen4, {**zen4, "platform": "Linux-v1301"}) == (  # the CPU decides where both name theirs
        "profiled 2026-12-07T12:57:48+00:00 on the machine that timed the engines (Linux-v1300, family 25, model 17, "
        "avx512)")
    assert table_machine(zen3, zen4).startswith("profiled 2026-12-07T01:01:14+00:00 on **another machine** than the "
                                                "engines' timing (Linux-v1272, family 25, model 1, avx2; timed on "
                                                "Linux-v1300, family 25, model 17, avx512)")
    old = {k: v for k, v in zen3.items() if k != "cpu_identity"}  # a table from before identities were recorded
    assert "(Linux-v1272, CPU identity not recorded; timed on" in table_machine(old, zen4)
    assert "on the machine that timed the engines" in table_machine(old, {**zen4, "platform": "Linux-v1272"})
