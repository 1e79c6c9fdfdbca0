"""benchmarks.head_to_head: the bisection's pure rule, and the quick mode end to end (real training, ORT, TP)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.head_to_head import (
    FULL,
    MATCH,
    NORTH_STAR,
    QUICK,
    TIMING_PASSES,
    TINY,
    ToolFailure,
    alignments,
    arm_label,
    bisect_ratio,
    calibrated_ratio,
    calibration_batch,
    failure_lines,
    match_level,
    nearest_match,
    north_star_epochs,
    probe_drift,
    recorded_failures,
    timing_record,
    uses_batch,
)

ROOT = Path(__file__).resolve().parents[1]


def test_bisect_ratio_matches_a_monotone_latency():
    ratio, ms = bisect_ratio(lambda r: 1.0 - 0.8 * r, 0.5, shrinks=True, iterations=20)  # 0.5 ms at r = 0.625
    assert abs(ms / 0.5 - 1) <= MATCH / 2 and abs(ratio - 0.625) < 0.02
    ratio, ms = bisect_ratio(lambda r: 0.1 + 0.9 * r, 0.55, shrinks=False, iterations=20)  # slim: keep 0.5
    assert abs(ms / 0.55 - 1) <= MATCH / 2 and abs(ratio - 0.5) < 0.02


def test_alignments_halve_the_channel_multiple_down_to_one():
    assert alignments(8) == [8, 4, 2, 1]
    assert alignments(16) == [16, 8, 4, 2, 1]
    assert alignments(6) == [6, 3, 1]
    assert alignments(1) == [1]


def test_nearest_match_leaves_out_the_multiples_where_the_tool_failed():
    tried = [{"probe_ms": 0.30, "budget_ms": 0.39, "round_to": 8}, {"probe_ms": 0.40, "budget_ms": 0.39, "round_to": 2},
             {"failed": "FastNAS fails at channel_divisor 1: IndexError", "budget_ms": 0.39, "round_to": 1}]
    assert nearest_match(tried)["round_to"] == 2
    with pytest.raises(ToolFailure, match="channel_divisor 1"):
        nearest_match(tried[2:])


def test_recorded_failures_read_every_failed_bisection_below_the_records(tmp_path):
    failed = {"failed": "FastNAS fails at channel_divisor 1: IndexError", "budget_ms": 0.28}
    for folder in ("r35/modelopt-fastnas", "r50/modelopt-fastnas/align1", "r70/modelopt-fastnas/second-aim/align1",
                   "r70/tp-mag/align2"):
        (tmp_path / folder).mkdir(parents=True)
        record = failed if "modelopt" in folder else {"ratio": 0.4, "probe_ms": 0.3, "budget_ms": 0.3}
        (tmp_path / folder / "match.json").write_text(json.dumps(record))
    found = recorded_failures(tmp_path, round_to=8)  # r35's failure is at the target's own multiple: no align folder
    assert [(f["arm"], f["budget"], f["round_to"]) for f in found] == [("modelopt-fastnas", 0.35, 8),
                                                                       ("modelopt-fastnas", 0.5, 1),
                                                                       ("modelopt-fastnas", 0.7, 1)]
    assert all(f["error"] == failed["failed"] for f in found)


def test_failure_lines_name_each_error_once_with_the_budgets_it_hit():
    arch = {"model": "mobilenet_v3_small", "tool_failures": [
        {"arm": "modelopt-fastnas", "budget": b, "round_to": 1, "error": "FastNAS fails at channel_divisor 1: IndexError"}
        for b in (0.35, 0.7, 0.35)]}
    lines = failure_lines([arch, {"model": "resnet20", "tool_failures": []}])
    assert len(lines) == 1
    assert lines[0].startswith("- mobilenet_v3_small: FastNAS fails at channel_divisor 1: IndexError (bisecting for 0.7, 0.35")


def test_arm_label_names_the_last_aim_and_a_finer_channel_multiple():
    row = {"arm": "tp-mag", "measured_aim": False, "third_aim": False, "second_aim": False, "round_to": 8}
    assert arm_label(row, 8) == "tp-mag"
    assert arm_label({**row, "round_to": 4}, 8) == "tp-mag (round_to 4)"
    assert arm_label({**row, "round_to": 2, "second_aim": True}, 8) == "tp-mag (2nd aim, round_to 2)"
    assert arm_label({**row, "arm": "halp", "round_to": None, "measured_aim": True}, 8) == "halp (measured)"


def test_calibrated_ratio_scales_a_missed_aim_and_keeps_a_met_one():
    assert calibrated_ratio(0.75, 0.76, 0.7, floor=0.3) == pytest.approx(0.75 * 0.7 / 0.76)  # IEE landed slow: aim lower
    assert calibrated_ratio(0.5, 0.475, 0.5, floor=0.3) == pytest.approx(0.5 * 0.5 / 0.475)  # HALP landed fast: aim higher
    assert calibrated_ratio(0.5, 0.505, 0.5, floor=0.3) is None  # within MATCH: the pilot's aim stands
    assert calibrated_ratio(0.36, 0.5, 0.35, floor=0.3) == 0.3  # never below the smallest ratio the knapsack accepts
    assert calibrated_ratio(0.95, 0.5, 0.7, floor=0.3) == 1.0


def test_north_star_gets_a_tenth_of_the_dense_flops_or_says_why_not():
    # quick: 200 images, batch 64 -> 3 steps an epoch; 10% of 4 dense epochs at HALP's 0.3 of a dense epoch
    assert north_star_epochs(QUICK, 4, 64, 0.3) == (1.33, None)  # floored; 4 steps, the first quarter holds one prune
    epochs, why = north_star_epochs(QUICK, 4, 64, 0.5)  # 0.8 epochs: 3 steps, a window of none
    assert epochs == 0.8 and why == ("not run: 10% of the dense training FLOPs is 3 steps of HALP here, and the first "
                                     "0.25 of them hold no prune step of dT = 1")
    assert north_star_epochs(FULL, 100, 64, 0.4) == (25.0, None)  # 10 of 100 dense epochs at 0.4 of their cost
    assert north_star_epochs(FULL, 300, 64, 0.4) == (75.0, None)  # the cost follows the architecture's own D


def test_each_architecture_trains_its_dense_model_for_its_own_epochs():
    assert FULL.dense_epochs_of("resnet20") == 300  # still climbing at 100, 150 and 200
    assert FULL.dense_epochs_of("mobilenet_v3_small") == FULL.dense_epochs == 100
    assert QUICK.dense_epochs_of("resnet20") == QUICK.dense_epochs == 4


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz").is_file(), reason="no CIFAR-10 copy")
def test_plateau_only_runs_the_dense_check_alone_and_keeps_its_records(tmp_path):
    """`--plateau-only` trains D and 0.75 D for every seed, records them, prints the paired check and writes no report;
    run again, it reads the records; another D is refused by them (they name their commands)."""
    argv = [sys.executable, "-m", "benchmarks.head_to_head", "--tiny", "--plateau-only", "--dense-epochs", "2",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    rec = tmp_path / "head_to_head_tiny_runs" / "resnet20"
    records = {p.name: json.loads(p.read_text()) for p in rec.glob("dense*.json")}
    assert set(records) == {"dense.json", "dense-0.75D.json"}  # tiny: one seed, whose D is the dense model
    assert "--epochs 2 " in records["dense.json"]["how"] and "--epochs 1.5 " in records["dense-0.75D.json"]["how"]
    diff = 100 * (records["dense-0.75D.json"]["test_top1"] - records["dense.json"]["test_top1"])
    assert all(r["test_images"] == 10 * TINY.test_per_class for r in records.values())  # the whole tiny test set
    assert f"resnet20: D = 2 epochs; 0.75 D minus D, paired by seed: {diff:+.2f}" in first.stdout
    assert not list(tmp_path.glob("head_to_head_tiny.*"))  # no report
    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.splitlines() == first.stdout.splitlines()[-1:]  # nothing trained
    other = subprocess.run([*argv[:6], "3", *argv[7:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "delete it to redo that run" in other.stderr


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz").is_file(), reason="no CIFAR-10 copy")
def test_calibration_batch_is_the_same_whatever_the_random_state():
    """Taylor importance and FastNAS prune from it: the bisection's process and every run's worker must see one batch."""
    import torch

    from benchmarks.common import cifar10_subset

    data = cifar10_subset(TINY.train_per_class, TINY.val_per_class)
    torch.manual_seed(1)
    first = calibration_batch(data, 6)
    torch.manual_seed(2)
    again = calibration_batch(data, 6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    after = torch.rand(1)  # the caller's random state is left as it was
    torch.manual_seed(2)
    assert torch.equal(after, torch.rand(1))
    assert [uses_batch(a) for a in ("tp-mag", "tp-mag-global", "tp-taylor", "tp-taylor-global", "modelopt-fastnas",
                                    "slim")] == [False, False, True, True, True, False]


def test_match_level_says_whether_every_seed_or_only_the_mean_meets_the_budget():
    assert match_level([0.495, 0.505, 0.509], 0.5) == "every seed"  # 0.509 is 1.8% over
    assert match_level([0.482, 0.5, 0.51], 0.5) == "mean"  # 0.482 is 3.6% under; the mean 0.4973 within
    assert match_level([0.52, 0.53, 0.51], 0.5) == "no"  # the mean 0.52: 4% over
    assert match_level([0.35], 0.35) == "every seed" and match_level([0.36], 0.35) == "no"


def test_probe_drift_compares_the_bisected_arms_retimed_engines_with_their_probes():
    rows = [{"model": "m", "arm": "tp-mag", "ratio": 0.37, "aimed_probe_ratio": 0.35},
            {"model": "m", "arm": "slim", "ratio": 0.50, "aimed_probe_ratio": 0.50},
            {"model": "m", "arm": "tp-mag-global", "ratio": 0.69, "aimed_probe_ratio": 0.70},
            {"model": "m", "arm": "tp-taylor-global", "ratio": 0.43, "aimed_probe_ratio": 0.53},  # its batch moves it
            {"model": "m", "arm": "halp", "ratio": 0.9, "aimed_probe_ratio": 0.3},  # ours: the one-shot probe, not it
            {"model": "m", "arm": "tp-mag", "ratio": float("nan"), "aimed_probe_ratio": 0.5},  # diverged: no engine
            {"model": "other", "arm": "tp-mag", "ratio": 2.0, "aimed_probe_ratio": 1.0}]
    median, low, high = probe_drift(rows, "m")
    assert (median, low, high) == (pytest.approx(1.0), pytest.approx(0.69 / 0.70), pytest.approx(0.37 / 0.35))
    assert probe_drift(rows, "absent") is None


def test_timing_record_is_reused_for_its_engines_and_never_completed_on_another_machine(tmp_path):
    from torch import nn

    from runtime.export import export_onnx
    from runtime.machine import machine_info

    onnx = {n: export_onnx(nn.Conv2d(3, c, 3).eval(), tmp_path / f"{n}.onnx", 8) for n, c in (("dense", 16), ("a", 8))}
    engines = {n: (f"digest-{n}", lambda p=p: p) for n, p in onnx.items()}
    path = tmp_path / "timing.json"
    first = timing_record(path, engines, 0.01, 2, False, "timing", resolution=8)
    assert len(first["passes"]) == 2 and set(first["ms"]) == {"dense", "a"} and all(v > 0 for v in first["ms"].values())
    assert first["ms"] == {n: min(p["ms"][n] for p in first["passes"]) for n in onnx}  # each engine's lowest reading
    here = machine_info()
    assert all(p["meta"]["machine_info"]["platform"] == here["platform"] for p in first["passes"])
    assert timing_record(path, engines, 0.01, 2, False, "timing", resolution=8)["passes"] == first["passes"]  # reused
    record = json.loads(path.read_text())
    record["passes"] = record["passes"][:1]  # a partial record: one more pass completes it on this machine
    path.write_text(json.dumps(record))
    assert timing_record(path, engines, 0.01, 2, False, "timing", resolution=8)["passes"][0] == first["passes"][0]
    elsewhere = {**here, "platform": "Linux-elsewhere", "cpu_identity": "family 1, model 1"}
    record["passes"][0]["meta"]["machine_info"] = elsewhere  # ... but not when its passes ran on another machine
    path.write_text(json.dumps(record))
    again = timing_record(path, engines, 0.01, 2, False, "timing", resolution=8)
    assert len(again["passes"]) == 2 and all(p["meta"]["machine_info"] != elsewhere for p in again["passes"])
    record["passes"] = again["passes"]
    record["passes"][0]["meta"]["machine_info"] = elsewhere  # a complete record from elsewhere reads as it was measured
    path.write_text(json.dumps(record))
    assert timing_record(path, engines, 0.01, 2, False, "timing", resolution=8)["passes"][0]["meta"]["machine_info"] == elsewhere


def test_int8_miss_states_how_far_the_speedups_are_from_multiplying():
    from benchmarks.int8 import speedups_multiply

    text = speedups_multiply({"fp32_speedup": 2.0, "int8_speedup": 2.3, "int8_ms": 0.3},
                             {"int8_speedup": 2.2, "int8_ms": 0.33})
    assert "multiply to 4.40x" in text and "together they give 2.30x" in text and "1.10x faster than the dense int8" in text
    assert "weigh less in int8" in text
    barely = speedups_multiply({"fp32_speedup": 1.0, "int8_speedup": 2.2, "int8_ms": 0.33}, {"int8_speedup": 2.2, "int8_ms": 0.33})
    assert "what falls short is the pruning itself" in barely


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz").is_file(), reason="no CIFAR-10 copy")
@pytest.mark.timeout(900)  # about 130 s on an idle 2-core machine; several minutes beside another test or job
def test_tiny_mode_table_shape(tmp_path):
    """Every arm at the budget (and the north star) with every column; the engines re-timed side by side; the report
    rebuilt from the run records alone.

    One budget keeps the test short (a full run of the pipeline takes about a minute per budget here);
    `--quick` runs every budget."""
    argv = [sys.executable, "-m", "benchmarks.head_to_head", "--tiny", "--budgets", "0.5", "--runs",
               str(tmp_path / "runs"), "--results", str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=600)
    record = json.loads((tmp_path / "head_to_head_tiny.json").read_text())
    cells = [(t["budget"], t["arm"]) for t in record["table"]]
    assert sorted(cells) == sorted([(0.5, a) for a in TINY.arms] + [(0.5, NORTH_STAR)])
    for t in record["table"]:
        assert set(t) == {"model", "budget", "arm", "seeds", "top1", "top1_std", "measured_ms", "ratio",
                          "ratio_range", "match", "round_to", "second_aim", "third_aim", "measured_aim",
                          "train_flops_vs_dense_training", "vs_iee", "lut_minus_flops"}
        assert t["seeds"] == 1 and 0 < t["ratio"] < 1.2 and (t["vs_iee"] is None) == (t["arm"] == "iee")
        assert (t["lut_minus_flops"] is None) == (t["arm"] != "halp")
        assert t["match"] == match_level([r["ratio"] for r in record["rows"] if (r["budget"], r["arm"]) == (
            t["budget"], t["arm"])], t["budget"])
    arch = record["architectures"][0]
    # an external arm runs at the target's channel multiple unless no ratio there lands within MATCH of the budget: then
    # at the first finer multiple whose bisection does (else the nearest); each bisection is a record of its own
    runs = tmp_path / "head_to_head_tiny_runs" / "resnet20" / "r50"
    for t in record["table"]:
        if t["arm"] not in (*TINY.external_arms, "slim"):
            assert t["round_to"] is None
            continue
        folders = {a: runs / t["arm"] / ("" if a == arch["round_to"] else f"align{a}") for a in alignments(arch["round_to"])}
        tried = [a for a, folder in folders.items() if (folder / "match.json").is_file()]
        misses = {a: abs(m["probe_ms"] / m["budget_ms"] - 1)
                  for a in tried for m in [json.loads((folders[a] / "match.json").read_text())]}
        assert tried == alignments(arch["round_to"])[:len(tried)]  # coarsest first, none skipped
        assert all(misses[a] > MATCH for a in tried[:-1])  # a finer multiple only after a miss
        if not t["second_aim"]:
            assert t["round_to"] == min(tried, key=misses.__getitem__)
    assert {"dense_plateau", "finetune_plateau", "smallest_ratio", "calibrations"} <= set(arch)
    assert set(arch["smallest_ratio"]) == {"latency", "flops"}
    assert arch["dense_plateau"]["difference"]["n"] == arch["finetune_plateau"]["difference"]["n"] == TINY.seeds
    # every knapsack cell has its pilot's calibration; a calibrated cell's rows ran at the calibrated ratio
    cals = {(c["arm"], c["budget"]): c for c in arch["calibrations"]}
    assert set(cals) == {(a, 0.5) for a in ("iee", "halp", "halp-flops", NORTH_STAR)}
    for (arm, budget), c in cals.items():
        assert c["calibrated"] == (abs(c["pilot_ratio"] / budget - 1) > MATCH)
        for r in (r for r in record["rows"] if (r["arm"], r["budget"]) == (arm, budget)
                  and not (r["second_aim"] or r["third_aim"] or r["measured_aim"])):
            assert r["aimed_ratio"] == c["ratio"] and (r["pilot_ratio"] is None) != c["calibrated"]
            assert ("/calibrated/" in r["command"]) == c["calibrated"]
    # a cell whose engines missed the budget got a second aim: its rows ran at it, in its own folder; every
    # decision is a record
    seconds = {(c["arm"], c["budget"]): c for c in arch["second_aims"]}
    thirds = {(c["arm"], c["budget"]): c for c in arch["third_aims"] if c["ratio"] is not None}
    assert arch["measured_aims"] == []  # tiny mode runs no measured budget
    for r in record["rows"]:
        second, third = seconds.get((r["arm"], r["budget"])), thirds.get((r["arm"], r["budget"]))
        assert r["second_aim"] == (second is not None) and r["third_aim"] == (third is not None)
        assert not r["measured_aim"] and "--measure-budget" not in r["command"]
        assert ("/second-aim/" in r["command"]) == (second is not None and third is None)
        assert ("/third-aim/" in r["command"]) == (third is not None)
        if second or third:
            aim = third or second
            assert r["aimed_ratio"] == aim["ratio"] and abs(aim["measured"] / r["budget"] - 1) > MATCH
        if third:  # our knapsack cells only, aimed through every final engine the cell had
            assert r["arm"] in ("iee", "halp", "halp-flops", NORTH_STAR) and third["points"]
            assert match_level(third["seed_ratios"], r["budget"]) == "no"
    thirds_decided = {path.parent.name: json.loads(path.read_text())
                      for path in (tmp_path / "head_to_head_tiny_runs" / "resnet20").glob("r50/*/third_aim.json")}
    assert set(thirds_decided) == {"iee", "halp", "halp-flops", NORTH_STAR} & {r["arm"] for r in record["rows"]
                                                                              if not r["diverged"]}
    assert not list((tmp_path / "head_to_head_tiny_runs").glob("*/r50/*/measured_aim.json"))  # none in tiny mode
    decisions = {path.parent.name: json.loads(path.read_text())
                 for path in (tmp_path / "head_to_head_tiny_runs" / "resnet20").glob("r50/*/second_aim.json")}
    timed_arms = {r["arm"] for r in record["rows"] if not r["diverged"]}
    assert set(decisions) == timed_arms  # every timed cell's decision, a met one too, so that it stays as it is
    assert {arm for arm, d in decisions.items() if d["ratio"] is not None} == {arm for arm, _ in seconds}
    text = (tmp_path / "head_to_head_tiny.md").read_text()
    assert "halp-flops" in text and f"within {100 * MATCH:g}%" in text
    assert (tmp_path / "head_to_head_tiny.png").stat().st_size > 0
    assert 0.8 < arch["trained_vs_structure_ms"] < 1.25  # the structure with re-drawn weights times as the engine

    # the INT8 benchmark prunes the same dense model: its fp32-LUT arm is the head-to-head's halp run, quantized
    int8_argv = [sys.executable, "-m", "benchmarks.int8", "--tiny", "--runs", str(tmp_path / "runs"), "--results",
                 str(tmp_path)]
    subprocess.run(int8_argv, cwd=ROOT, check=True, env=env, timeout=300)
    int8 = json.loads((tmp_path / "int8_tiny.json").read_text())
    int8_arch = int8["architectures"][0]
    assert int8_arch["dense"]["int8_speedup"] > 1.2  # measured 2.2x on this CPU
    halp_pilot = cals[("halp", 0.5)]  # seed 0 at the one-shot aim: the int8 benchmark's fp32-LUT run
    fp32_lut = next(r for r in int8_arch["rows"] if r["arm"] == "fp32-lut")
    assert fp32_lut["command"] == halp_pilot["pilot_command"]
    halp = next(r for r in record["rows"] if (r["arm"], r["seed"]) == ("halp", 0))
    if not (halp_pilot["calibrated"] or halp["second_aim"] or halp["third_aim"] or halp["measured_aim"]):  # the pilot
        assert fp32_lut["fp32_top1"] == pytest.approx(halp["val_acc"], abs=0.01)
    assert fp32_lut["int8_speedup"] > 1 and 0 <= fp32_lut["agreement"] <= 1
    # the INT8 LUT's arm ran, or is refused with the table's own one-line reason (a table too flat to prune against)
    ran = any(r["arm"] == "int8-lut" for r in int8_arch["rows"])
    assert ran != ("int8-lut" in int8_arch["refused"])
    assert "## The answer" in (tmp_path / "int8_tiny.md").read_text()

    # an external arm's run stopped after its checkpoint goes on from it when the benchmark resumes (its first aim's
    # run, in the folder of its channel multiple)
    records = tmp_path / "head_to_head_tiny_runs" / "resnet20"
    first_aim = next(p for p in sorted((records / "r50" / "tp-mag").glob("**/seed0.json")) if "second-aim" not in p.parts)
    stopped = tmp_path / "runs" / "tiny" / "resnet20" / first_aim.parent.relative_to(records) / "seed0"
    (stopped / "summary.json").unlink()
    first_aim.unlink()
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=300)
    resumed = json.loads((tmp_path / "head_to_head_tiny.json").read_text())
    assert [(r["arm"], r["top1"], r["second_aim"], r["third_aim"]) for r in resumed["rows"]] == [
        (r["arm"], r["top1"], r["second_aim"], r["third_aim"]) for r in record["rows"]]  # the recorded aims stand

    # a fresh clone has the committed records only: the report is rebuilt from them, nothing is trained again, and
    # the recorded side-by-side timing is reused, so the report reads as it was measured
    shutil.rmtree(tmp_path / "runs")
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=300)
    again = json.loads((tmp_path / "head_to_head_tiny.json").read_text())
    assert not (tmp_path / "runs" / "tiny" / "resnet20" / "dense").exists()
    assert [(r["arm"], r["top1"], r["command"], r["ratio"]) for r in again["rows"]] == [
        (r["arm"], r["top1"], r["command"], r["ratio"]) for r in resumed["rows"]]
    assert again["architectures"][0]["timed"] == resumed["architectures"][0]["timed"]
    # --retime times the engines again, as their structures (no trained engine is left to compare)
    subprocess.run([*argv, "--retime"], cwd=ROOT, check=True, env=env, timeout=300)
    retimed = json.loads((tmp_path / "head_to_head_tiny.json").read_text())
    assert retimed["architectures"][0]["trained_vs_structure_ms"] is None
    timed = retimed["architectures"][0]["timed"]["passes"]
    assert len(timed) == TIMING_PASSES and timed[0]["date"] >= again["architectures"][0]["timed"]["passes"][-1]["date"]
    assert all(0 < r["ratio"] < 1.2 for r in retimed["rows"])
    subprocess.run(int8_argv, cwd=ROOT, check=True, env=env, timeout=300)  # rebuilt from its records too
    assert not (tmp_path / "runs" / "tiny" / "resnet20" / "r50" / "halp").exists()
    assert [(r["arm"], r["int8_top1"]) for r in json.loads((tmp_path / "int8_tiny.json").read_text())["architectures"][0][
        "rows"]] == [(r["arm"], r["int8_top1"]) for r in int8_arch["rows"]]

    # an unfinished arm on a fresh clone starts from the recorded dense weights: not retrained, the same result
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "head_to_head_tiny_runs" / "resnet20" / "r50" / "iee" / "seed0.json").unlink()
    subprocess.run(argv, cwd=ROOT, check=True, env=env, timeout=300)
    dense_run = tmp_path / "runs" / "tiny" / "resnet20" / "dense"
    assert (dense_run / "final_model.pt").is_file() and not (dense_run / "metrics.jsonl").exists()
    redone = json.loads((tmp_path / "head_to_head_tiny.json").read_text())
    assert [(r["arm"], r["top1"]) for r in redone["rows"]] == [(r["arm"], r["top1"]) for r in record["rows"]]

    # a record made with other settings is refused in one line, not reused
    dense = tmp_path / "head_to_head_tiny_runs" / "resnet20" / "dense.json"
    dense.write_text(dense.read_text().replace("--epochs 4", "--epochs 5"))
    shutil.rmtree(tmp_path / "head_to_head_tiny_runs" / "resnet20" / "r50" / "iee")
    done = subprocess.run(argv, cwd=ROOT, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode != 0 and "records a run with other settings" in done.stderr.strip().splitlines()[-1]
