"""benchmarks.head_to_head: the bisection's pure rule, and the quick mode end to end (real training, ORT, TP)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.head_to_head import ARMS, MATCH, NORTH_STAR, bisect_ratio

ROOT = Path(__file__).resolve().parents[1]


def test_bisect_ratio_matches_a_monotone_latency():
    ratio, ms = bisect_ratio(lambda r: 1.0 - 0.8 * r, 0.5, shrinks=True, iterations=20)  # 0.5 ms at r = 0.625
    assert abs(ms / 0.5 - 1) <= MATCH / 2 and abs(ratio - 0.625) < 0.02
    ratio, ms = bisect_ratio(lambda r: 0.1 + 0.9 * r, 0.55, shrinks=False, iterations=20)  # slim: keep 0.5
    assert abs(ms / 0.55 - 1) <= MATCH / 2 and abs(ratio - 0.5) < 0.02


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz").is_file(), reason="no CIFAR-10 copy")
def test_quick_mode_table_shape(tmp_path):
    """Every arm at every budget (and the north star) with its columns; the engines re-timed side by side."""
    subprocess.run([sys.executable, "-m", "benchmarks.head_to_head", "--quick", "--budgets", "0.7,0.5",
                    "--runs", str(tmp_path / "runs"), "--results", str(tmp_path)], cwd=ROOT, check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=900)
    record = json.loads((tmp_path / "head_to_head_quick.json").read_text())
    cells = {(t["budget"], t["arm"]) for t in record["table"]}
    assert cells == {(b, a) for b in (0.7, 0.5) for a in ARMS} | {(0.5, NORTH_STAR)}
    for t in record["table"]:
        assert {"ratio", "val_acc", "within_match", "train_flops_vs_dense_training", "vs_iee"} <= set(t)
        assert 0 < t["ratio"] < 1.2 and (t["vs_iee"] is None) == (t["arm"] == "iee")
    assert (tmp_path / "head_to_head_quick.png").stat().st_size > 0
