"""The sparsity sweep of the converged benchmark (benchmarks/converged.py --sweep): its report rebuilt from run
records alone, its plateau stop, and (slow) real training of a reduced sweep that resumes from its records."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks import converged
from benchmarks.common import ROOT, shown_command
from benchmarks.converged import (
    DENSE,
    FULL,
    RECIPE,
    Mode,
    Run,
    command,
    crossover,
    periods,
    sweep,
    sweep_runs,
)
from iee_deploy.io import write_json

DATA = ROOT / "benchmarks" / ".cache" / "fashion-mnist"
META = {"date": "2026-01-01T00:00:00+00:00", "machine": "test", "torch_threads": 1, "load_average": [0, 0, 0],
        "versions": {}, "commit": "test", "command": "PYTHONPATH=. python -m benchmarks.converged --sweep"}


def args_for(tmp: Path, quick: bool = False, past_plateau: bool = False) -> argparse.Namespace:
    return argparse.Namespace(quick=quick, jobs=2, runs=str(tmp / "runs"), results=str(tmp / "results"), device="cpu",
                              past_plateau=past_plateau, only=None, plateau_only=False, epochs=None, sweep=True)


def accuracy(run: Run) -> float:
    """Made-up top-1s: IEE 1 point above RigL at 98% and 99% (+-0.1 by seed), tied at 95%; the 0.75 E runs
    0.1 points below static; IEE 2:4 beats the recipe by 0.5 (+-0.1), the recipe beats IEE 1:4 by 2 points."""
    jitter = 0.0005 * (run.seed - 2)  # mean 0 over seeds 0-4
    if run.nm is not None:
        return {("iee", "2:4"): 0.905 + jitter, (RECIPE, "2:4"): 0.90, ("iee", "1:4"): 0.86 + jitter,
                (RECIPE, "1:4"): 0.88}.get((run.label, run.nm), 0.85)
    if run.label == "iee":
        return 0.80 + (0.01 if run.sparsity >= 0.98 else 0.0) + jitter
    return {"rigl": 0.80, "static 0.75E": 0.779, DENSE: 0.91}.get(run.label, 0.78)


def row(run: Run, how: str) -> dict[str, Any]:
    """A run's row as `execute` makes it (FLOPs: dense 1.0 x 2e9 per step, the fine-tune 0.5 x)."""
    steps = round(run.epochs_scale * periods(FULL).total_steps)
    relative = 1.0 if run.label == DENSE else 0.5
    return {**asdict(run), "command": how, "folder": run.folder, "val_acc": accuracy(run), "best_val_acc": accuracy(run),
            "achieved_sparsity": run.sparsity, "train_flops_relative": relative, "train_flops": relative * 2e9 * steps,
            "seconds": 300.0 * run.epochs_scale, "steps": steps,
            "mean_survival": 0.5 if run.method in ("iee", "rigl", "set") else None, "settings": {},
            "theta_k_steps": steps, "survival_curve": [], "iou_curve": []}


def write_records(tmp: Path, runs: list[Run], mode: Mode) -> None:
    """Every run's committed record, its `how` the command the sweep gives it."""
    per = periods(mode)
    for run in runs:
        how = shown_command(command(run, mode, per, DATA, tmp / "runs" / mode.name / run.folder))
        write_json(tmp / "results" / "sparsity_sweep_runs" / f"{run.folder}.json", {"how": how, **row(run, how)})


def converged_json(folder: Path) -> None:
    """A converged.json of the full setting: 80% and 90% rows of static, RigL, SET and IEE, 5 seeds, plateaued."""
    rows = [row(Run(m, m, s, seed), "") for s in (0.8, 0.9) for m in ("static", "rigl", "set", "iee", "gmp")
            for seed in range(FULL.seeds)]
    plateau = {"mean": 0.0, "low": -0.001, "high": 0.001, "n": 5, "plateaued": True}
    write_json(folder / "converged.json", {"mode": "full", "mode_settings": asdict(FULL), "plateau": plateau,
                                           "rows": rows})


def no_training(*args: object, **kwargs: object) -> dict[str, Any]:
    raise AssertionError("the sweep trained a run that has a record")


def test_the_report_is_rebuilt_from_the_records_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(converged, "RESULTS", tmp_path / "reference")
    monkeypatch.setattr(converged, "execute", no_training)
    converged_json(tmp_path / "reference")
    runs = sweep_runs(FULL, periods(FULL), str(tmp_path / "runs"))
    assert len(runs) == 5 * 24
    write_records(tmp_path, runs, FULL)
    sweep(args_for(tmp_path), FULL, META, DATA, "")
    record = json.loads((tmp_path / "results" / "sparsity_sweep.json").read_text())
    text = (tmp_path / "results" / "sparsity_sweep.md").read_text()
    assert (tmp_path / "results" / "sparsity_sweep.png").is_file()
    assert [(t["sparsity"], t["label"]) for t in record["erk"]] == [
        (s, m) for s in (0.8, 0.9, 0.95, 0.98, 0.99) for m in ("static", "rigl", "set", "iee")]
    iee = {t["sparsity"]: t for t in record["erk"] if t["label"] == "iee"}
    assert iee[0.98]["vs_rigl"]["mean"] == pytest.approx(0.01) and iee[0.98]["vs_rigl"]["low"] > 0
    assert iee[0.95]["vs_rigl"]["low"] < 0 < iee[0.95]["vs_rigl"]["high"]
    assert record["crossover"]["rigl"] == "IEE is resolved above RigL from 98% sparsity (up to 99%)."
    assert [(p["sparsity"], p["from"], p["check"]["plateaued"]) for p in record["plateau"]] == [
        (0.9, "converged.json", True), (0.95, None, True), (0.98, None, True), (0.99, None, True)]
    assert record["plateau"][1]["check"]["mean"] == pytest.approx(-0.001)
    nm = {(t["nm"], t["label"]): t for t in record["nm"]}
    assert set(nm) == {(None, DENSE)} | {(p, m) for p in ("2:4", "1:4") for m in ("iee", "static", "rigl", RECIPE)}
    recipe, steps = nm[("2:4", RECIPE)], periods(FULL).total_steps
    assert recipe["steps"] == steps  # equal total steps: the dense half and the fine-tune
    assert recipe["train_flops"] == pytest.approx(2e9 * (steps / 2 + 0.5 * steps / 2))
    assert recipe["train_flops_relative"] == pytest.approx(0.75)
    assert nm[("2:4", "iee")]["vs_recipe"]["mean"] == pytest.approx(0.005) and nm[("2:4", "iee")]["vs_recipe"]["low"] > 0
    assert "- 2:4: IEE minus dense then prune at equal steps: +0.50" in text and "**IEE beats the recipe**" in text
    assert "- 1:4: IEE minus dense then prune at equal steps: -2.00" in text and "**the recipe beats IEE**" in text
    assert record["estimated_hours"] == pytest.approx(
        sum(300.0 * r.epochs_scale for r in runs) / 2 / 3600)  # every method took 300 s at E in the made-up runs
    assert "--method gmp --sparsity 0.5 --distribution erk --nm 2:4" in text and "--update-end 0.00100806" in text


def test_the_crossover_sentence_needs_intervals_and_every_sparsity_above():
    def table(*cells: tuple[float, float, float, int]) -> list[dict[str, Any]]:
        return [{"sparsity": s, "label": "iee", "vs_rigl": {"mean": (low + high) / 2, "low": low, "high": high, "n": n}}
                for s, low, high, n in cells]

    assert crossover(table((0.9, 0.01, 0.02, 1)), "vs_rigl", "RigL") == "IEE against RigL: no interval here (one seed or none)."
    assert crossover(table((0.9, -0.01, 0.02, 5), (0.99, 0.01, 0.02, 5)), "vs_rigl", "RigL") == (
        "IEE is resolved above RigL from 99% sparsity (up to 99%).")
    assert crossover(table((0.9, 0.01, 0.02, 5), (0.99, -0.01, 0.02, 5)), "vs_rigl", "RigL") == (
        "IEE is resolved above RigL at 90% only, not at every sparsity above.")
    assert crossover(table((0.9, -0.02, -0.01, 5)), "vs_rigl", "RigL") == "IEE is resolved above RigL nowhere up to 90%."


def test_a_sparsity_that_has_not_plateaued_stops_the_full_sweep_before_the_other_arms(tmp_path, monkeypatch):
    monkeypatch.setattr(converged, "execute", no_training)
    runs = sweep_runs(FULL, periods(FULL), str(tmp_path / "runs"))
    late = [r for r in runs if r.label == "static 0.75E" and r.sparsity == 0.99]
    write_records(tmp_path, [r for r in runs if r.label in ("static", "static 0.75E") and r.nm is None], FULL)
    for run in late:  # static at 0.75 E one point below static at E at 99%
        path = tmp_path / "results" / "sparsity_sweep_runs" / f"{run.folder}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "val_acc": 0.77}))
    with pytest.raises(SystemExit, match=r"not plateaued at E = 96 epochs \(99%: -1.00 \[-1.00, -1.00\] \(n=5\)"):
        sweep(args_for(tmp_path), FULL, META, DATA, "")


@pytest.mark.slow
def test_a_reduced_sweep_trains_every_arm_prunes_the_dense_run_to_n_m_and_resumes_from_its_records(tmp_path, monkeypatch):
    """One sparsity and one pattern of the quick mode on 128 images: 10 real runs in this process."""
    monkeypatch.setattr(converged, "SWEEP_SPARSITIES", (0.98,))
    monkeypatch.setattr(converged, "NM_PATTERNS", ("2:4",))
    mode = Mode("quick", subset=128, resolution=8, epochs=4, seeds=1, min_updates=2)
    args = args_for(tmp_path, quick=True)
    sweep(args, mode, META, converged.fashion_mnist_root(), "")
    first = json.loads((tmp_path / "results" / "sparsity_sweep_quick.json").read_text())
    assert [(r["label"], r["nm"]) for r in first["rows"]] == [
        *((m, None) for m in ("static", "rigl", "set", "iee", "static 0.75E")), (DENSE, None),
        *((m, "2:4") for m in ("iee", "static", "rigl", RECIPE))]
    nm = {r["label"]: r for r in first["rows"] if r["nm"] == "2:4"}
    assert nm[RECIPE]["achieved_sparsity"] == nm["static"]["achieved_sparsity"] < 0.5  # exact 2:4, conv1 dense
    prunes = [json.loads(line) for line in Path(nm[RECIPE]["folder"], "metrics.jsonl").read_text().splitlines()
              if '"prune"' in line]
    assert [p["step"] for p in prunes] == [1]  # one prune from the dense weights, after one step
    # a fresh clone: the run folders are gone, the records stay; the report comes back without training
    (tmp_path / "runs").rename(tmp_path / "gone")
    monkeypatch.setattr(converged, "execute", no_training)
    sweep(args, mode, META, converged.fashion_mnist_root(), "")
    again = json.loads((tmp_path / "results" / "sparsity_sweep_quick.json").read_text())
    assert again["erk"] == first["erk"] and again["nm"] == first["nm"]
