"""`benchmarks.detection --quick`: the detection benchmark's whole pipeline on one tiny SSDlite (LUT, dense and
plateau runs, HALP and IEE under the budget, engines built and timed side by side, the report), and its report
rebuilt from the run records alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from benchmarks.common import ROOT
from benchmarks.detection import METHODS, QUICK


@pytest.mark.timeout(900)  # about 90 s on an idle 2-core machine; several minutes when it is shared
def test_quick_mode_writes_every_arm_and_rebuilds_from_its_records(tmp_path):
    argv = [sys.executable, "-m", "benchmarks.detection", "--quick", "--runs", str(tmp_path / "runs"), "--results",
            str(tmp_path / "results")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # as the benchmark's runs
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=900, capture_output=True)
    record = json.loads((tmp_path / "results" / "detection_quick.json").read_text())
    (row,) = record["rows"]
    assert row["model"] == QUICK.models[0] and set(row["arms"]) == set(METHODS)
    for arm in row["arms"].values():
        assert 0 <= arm["map_50"] <= 1 and arm["ms"] > 0 and arm["speedup"] > 0 and arm["postprocess_ms"] > 0
        assert len(arm["per_seed"]) == QUICK.seeds and arm["flops"] > 0
    assert row["dense"]["ms"] > 0 and "plateaued" in row and row["iee_vs_halp"]["n"] == QUICK.seeds
    text = (tmp_path / "results" / "detection_quick.md").read_text()
    assert "| ssdlite | iee |" in text and "Paper (Fig. 4)" in text and "--method halp" in text
    shutil.rmtree(tmp_path / "runs")  # the records alone rebuild the report: nothing is trained again
    done = subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=300, capture_output=True, text=True)
    assert "epoch 1" not in done.stdout + done.stderr
    again = json.loads((tmp_path / "results" / "detection_quick.json").read_text())
    assert again["rows"][0]["arms"]["iee"]["map_50"] == row["arms"]["iee"]["map_50"]
