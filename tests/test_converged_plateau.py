"""The converged benchmark's plateau check across probes, and its device switch (benchmarks/converged.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.converged import (
    FULL,
    PLATEAU_SPARSITY,
    QUICK,
    Run,
    command,
    execute,
    periods,
    plateau_probes,
)


def _finished(folder: Path, run: Run, val_acc: float, device: str, subset: int = FULL.subset) -> None:
    """The two files of a finished run folder that the probes read."""
    out = folder / run.folder
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"val_acc": val_acc}))
    (out / "config.json").write_text(json.dumps({"device": device, "subset": subset, "val_subset": FULL.val_images}))


def test_plateau_probes_pair_seeds_per_epoch_count_and_keep_devices_apart(tmp_path):
    static = lambda seed: Run("static", "static", PLATEAU_SPARSITY, seed)  # noqa: E731
    short = lambda seed: Run("static 0.75E", "static", PLATEAU_SPARSITY, seed, epochs_scale=0.75)  # noqa: E731
    # E = 24 on cuda: 0.75 E is 1 point below at every seed (not plateaued)
    for seed, acc in enumerate((0.80, 0.81, 0.82)):
        _finished(tmp_path / "full-e24-cuda", static(seed), acc, "cuda")
        _finished(tmp_path / "full-e24-cuda", short(seed), acc - 0.01, "cuda")
    # E = 48 on cuda: +0.1 and -0.3 points (mean -0.1: plateaued); seed 2 has only one arm, so it is left out
    _finished(tmp_path / "full-e48-cuda", static(0), 0.830, "cuda")
    _finished(tmp_path / "full-e48-cuda", short(0), 0.831, "cuda")
    _finished(tmp_path / "full-e48-cuda", static(1), 0.835, "cuda")
    _finished(tmp_path / "full-e48-cuda", short(1), 0.832, "cuda")
    _finished(tmp_path / "full-e48-cuda", static(2), 0.5, "cuda")
    # the default full folder (E = FULL.epochs) on the CPU: not a cuda probe
    _finished(tmp_path / "full", static(0), 0.7, "cpu")
    _finished(tmp_path / "full", short(0), 0.7, "cpu")
    # an earlier full mode's runs (another training set) in an -e64 folder: never a probe of this one
    _finished(tmp_path / "full-e64", static(0), 0.8, "cpu", subset=10_000)
    _finished(tmp_path / "full-e64", short(0), 0.7, "cpu", subset=10_000)

    cuda = plateau_probes(tmp_path, "cuda")
    assert [p["epochs"] for p in cuda] == [24, 48]
    assert cuda[0]["seeds"] == [0, 1, 2] and cuda[0]["trained_on"] == ["cuda"]
    assert cuda[0]["difference"]["mean"] == pytest.approx(-0.01) and not cuda[0]["plateaued"]
    assert cuda[1]["seeds"] == [0, 1] and cuda[1]["static_at_E"] == [0.830, 0.835]
    assert cuda[1]["difference"]["mean"] == pytest.approx(-0.001) and cuda[1]["plateaued"]
    cpu = plateau_probes(tmp_path, "cpu")
    assert [(p["epochs"], p["difference"]["mean"], p["plateaued"]) for p in cpu] == [(FULL.epochs, 0.0, True)]


def test_the_device_reaches_every_training_command_and_the_cpu_command_is_unchanged():
    per = periods(FULL)
    run = Run("iee", "iee", 0.9, 0)
    data = Path(__file__).resolve().parents[1] / "benchmarks" / ".cache" / "fashion-mnist"
    cpu = command(run, FULL, per, data, Path("runs/x"))
    cuda = command(run, FULL, per, data, Path("runs/x"), "cuda")
    assert "--device" not in cpu
    assert cuda[cuda.index("--device") + 1] == "cuda"
    assert [a for a in cuda if a not in ("--device", "cuda")] == cpu


def test_the_full_mode_scores_on_its_own_validation_sample_and_refuses_another_modes_folder(tmp_path):
    per = periods(FULL)
    run = Run("static", "static", 0.9, 0)
    data = Path(__file__).resolve().parents[1] / "benchmarks" / ".cache" / "fashion-mnist"
    cmd = command(run, FULL, per, data, Path("runs/x"))
    assert cmd[cmd.index("--val-subset") + 1] == str(FULL.val_images) and FULL.val_count == FULL.val_images
    assert "--val-subset" not in command(run, QUICK, periods(QUICK), data, Path("runs/x"))  # quick: subset / 5
    assert QUICK.val_count == QUICK.subset // 5
    _finished(tmp_path / FULL.name, run, 0.8, "cpu", subset=10_000)
    with pytest.raises(SystemExit, match="holds a run on 10000 training images"):
        execute(run, FULL, per, data, str(tmp_path), "cpu")
