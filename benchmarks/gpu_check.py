"""The GPU check: one run on a machine with an NVIDIA GPU measures, validates and checks the toolkit's GPU paths.

Stages, each a user's command line (`python -m iee_deploy ...`) run as a subprocess, so that the
check exercises the stable surface (the CLI) and not the internals behind it:

| stage | what | result |
|---|---|---|
| install | the carried wheels (`tools/fetch_gpu_wheels.sh` -> `.whl/`) into /tmp/site | device, driver, torch, CUDA, cuDNN |
| tests | `pytest -m gpu tests/test_gpu.py` on the real GPU (CUDA profiling, torch-cuda engine, NCCL, trainer) | passed / failed / skipped |
| profile | a LUT of resnet50, fp16, the target's batch, torch/cuDNN with CUDA graphs; the channel grid sized to the time budget from a coarse probe | rows, grid, seconds |
| validate-lut | 10 random physically pruned sub-networks | MAPE, Spearman |
| prune | `train --method halp --latency-ratio 0.5` on a synthetic image folder with the model's class count: the knapsack over Taylor importance down to half the dense predicted latency (a few steps of untrained weights: latency does not depend on the values) | predicted latency, budget |
| build-engine | `--backend torch-cuda` on dense and pruned, timed side by side | median ms, images/s, speed-up |
| validate | engine vs PyTorch outputs, and the measured latency in the LUT's statistic against the budget (x 1.1); top-1 is reported, not checked (untrained weights, random images) | pass / fail per check |

Everything lands in `--work` (default: a temporary folder); `--out` receives at most 8 files (small
enough to copy back): `gpu.md`, `gpu.json` (rewritten after every stage, so a killed run still
reports what it finished), the LUT (`<target>-<model>.csv` and `.json`, for `targets/luts/`),
`gpu_check.log` and `details.tar.gz` (every stage's logs and JSON/markdown reports).

`--dry-run` runs every stage the same way on this CPU (the `cpu` target, WRN-22-2 at 16 px, a tiny
grid and few repeats, the onnxruntime engine), so the script is tested in the suite
(tests/test_gpu_check.py) without a GPU. Its numbers are CPU numbers of a tiny model: a pipeline check.

    python -m benchmarks.gpu_check --out $OUT                   # on the GPU machine (make gpu-check)
    python -m benchmarks.gpu_check --dry-run --out runs/gpu-dry # here
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SITE = Path("/tmp/site")  # where the carried wheels are installed on the GPU machine
LOG_NAME = "gpu_check.log"
DETAILS = "details.tar.gz"
DETAIL_SUFFIXES = (".json", ".md", ".log", ".xml", ".csv")  # never models or engines (size)
BUDGET_RATIO = 0.5
BUDGET_TOLERANCE = 0.1  # the acceptance bound: measured latency <= 1.1x the budget
ACCEPTANCE = {"mape_pct": (10.0, 5.0), "spearman": (0.9, 0.95), "speedup": (1.6, 1.8)}  # (limit, goal)


@dataclass(frozen=True)
class Plan:
    """What one mode of the check runs: model, sizes, time budgets, backends."""

    mode: str
    model: str
    num_classes: int
    resolution: int
    device: str  # training device of the prune stage: cuda or cpu
    engine_backend: str
    profile_seconds: float  # probe + profile
    probe_step: int  # the coarsest grid: measured first, to learn the cost of one row
    steps: tuple[int, ...]  # grid steps to choose from, finest first
    profile_timing: tuple[str, ...] = ()  # extra `profile` options (the GPU mode uses the target's timing and grid)
    engine_timing: tuple[str, ...] = ()  # extra `build-engine` / `validate` timing options
    samples: int = 10  # validate-lut sub-networks
    train_subset: int = 256  # images of the synthetic image folder for the few pruning steps (N/5 for validate)
    per_class: int = 1  # training images per class in that folder (2 validation images per class)
    train_batch: int = 32  # 8 steps (4 in the dry run): HALP prunes 3 times before 3/4 of them
    delta_t: int = 2
    budget_ratio: float = BUDGET_RATIO  # the prune stage's latency budget, a fraction of dense


GPU = Plan(mode="gpu", model="resnet50", num_classes=1000, resolution=224, device="cuda", engine_backend="torch-cuda",
           profile_seconds=180.0, probe_step=1024, steps=(32, 64, 128, 256, 512, 1024))
DRY_RUN = Plan(mode="dry-run", model="wrn22_2", num_classes=10, resolution=16, device="cpu", engine_backend="onnxruntime",
               profile_seconds=12.0, probe_step=128, steps=(32, 64, 128),
               # a pipeline check: a 12 s CPU profile on a busy machine can put half the dense latency out of reach
               budget_ratio=0.8,
               # a finer channel floor than the cpu target's 16 keeps half the dense latency reachable on a busy machine
               profile_timing=("--warmup", "1", "--repeats", "3", "--network-repeats", "3", "--calibration-networks", "2",
                               "--min-channels", "8", "--align", "8"),
               engine_timing=("--warmup-s", "0.05", "--min-iters", "5", "--min-seconds", "0.2"),
               train_subset=48, train_batch=12, delta_t=1, per_class=6)


@dataclass
class Stage:
    """One command the check ran: its command line (as a user types it), exit status and wall time."""

    name: str
    command: str
    returncode: int | None = None  # None: not run (an earlier stage it needs failed, or no time was left)
    seconds: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Header:
    """What a GPU results file states first: mode (gpu or dry-run), date, command, commit, machine and versions."""

    mode: str
    date: str
    command: str
    commit: str
    environment: dict[str, Any] = field(default_factory=dict)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Record(Header):
    """gpu.json: the facts, the stages and the figures, each figure with its device, backend and precision."""

    stages: list[Stage] = field(default_factory=list)
    tests: dict[str, Any] = field(default_factory=dict)
    lut: dict[str, Any] = field(default_factory=dict)
    validate_lut: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    budget_check: dict[str, Any] = field(default_factory=dict)
    acceptance: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# --- pure helpers (exact tests in tests/test_gpu_check.py) -------------------------------------------


def choose_step(rows_by_step: Mapping[int, int], seconds_per_row: float, budget_s: float) -> int:
    """The finest grid step whose planned rows fit `budget_s` at `seconds_per_row`; the coarsest if none does."""
    if not rows_by_step:
        raise ValueError("no grid steps to choose from")
    fitting = [step for step, rows in rows_by_step.items() if rows * seconds_per_row <= budget_s]
    return min(fitting) if fitting else max(rows_by_step)


def match_target(device_name: str, patterns: Mapping[str, str]) -> str | None:
    """The target whose device pattern (a regex, searched case-insensitively) matches `device_name`."""
    for target, pattern in sorted(patterns.items()):
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return target
    return None


def junit_counts(xml_text: str) -> dict[str, int]:
    """tests / failures / errors / skipped / passed of a pytest --junitxml report."""
    root = ElementTree.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def verdict(value: float | None, limit: float, goal: float, higher_is_better: bool) -> str:
    """'goal', 'pass' or 'fail' of a measured figure against the issue's acceptance limit and goal."""
    if value is None:
        return "not measured"
    better = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
    return "goal" if better(value, goal) else "pass" if better(value, limit) else "fail"


# --- the machine ---------------------------------------------------------------------------------------


def install_wheels(wheels: Path, log: Log) -> str:
    """pip-install every carried wheel into SITE (no index: the GPU machine may reach no registry)."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return f"no wheels in {wheels}: nothing installed"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", str(SITE), *map(str, files)]
    log.line("$ " + shlex.join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    log.line(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"installing the wheels in {wheels} failed ({done.returncode}); see {log.path}")
    sys.path.insert(0, str(SITE))
    return f"installed {', '.join(f.name.split('-')[0] + ' ' + f.name.split('-')[1] for f in files)} into {SITE}"


def environment(mode: str) -> dict[str, Any]:
    """Device, driver, torch, CUDA and cuDNN versions (GPU) or the CPU (dry run)."""
    import torch

    from profiler.targets import cpu_name

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()}
    for package in ("onnxruntime", "ortools", "numpy"):
        try:
            env[package] = __import__(package).__version__
        except ImportError:
            env[package] = "missing"
    if mode == "dry-run" or not torch.cuda.is_available():
        env["device"] = f"CPU: {env['cpu']}"
        env["cuda"] = None
        return env
    props = torch.cuda.get_device_properties(0)
    env.update(device=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
               memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        env["driver"], env["max_sm_clock"], env["power_limit"] = (s.strip() for s in smi.stdout.splitlines()[0].split(","))
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired) as exc:
        env["driver"] = f"unknown ({type(exc).__name__})"
    return env


def target_patterns() -> dict[str, str]:
    """GPU target name -> device-name regex, read from the shipped targets/*.yaml."""
    import yaml

    patterns = {}
    for path in sorted((ROOT / "targets").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data.get("kind") == "gpu":
            patterns[data["name"]] = data["device"]["name"]
    return patterns


def target_facts(name: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load((ROOT / "targets" / f"{name}.yaml").read_text())
    return data


def planned_rows(plan: Plan, grid_min: int, align: int) -> dict[int, int]:
    """Rows a profile of `plan.model` plans at each candidate step (the profiler's own grid planner)."""
    from iee_deploy.models import build_model
    from profiler.layers import enumerate_layers, plan_rows, unique_signatures

    model = build_model(plan.model, plan.num_classes, plan.resolution).eval()
    signatures = unique_signatures(enumerate_layers(model, (1, 3, plan.resolution, plan.resolution))).values()
    return {step: len(plan_rows(signatures, step, grid_min, align)) for step in plan.steps}


# --- running stages ------------------------------------------------------------------------------------


class Log:
    """Appends to OUT/gpu_check.log and echoes to stdout (a remote run often shows only the output's tail)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def line(self, text: str) -> None:
        text = text.rstrip()
        if not text:
            return
        print(text, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")


class Check:
    """The stages of one check, with a shared deadline and a record rewritten after every stage."""

    def __init__(self, plan: Plan, out: Path, work: Path, budget_s: float, log: Log, record: Record) -> None:
        self.plan, self.out, self.work, self.log, self.record = plan, out, work, log, record
        self.started = time.perf_counter()
        self.deadline = self.started + budget_s
        site = f"{SITE}{os.pathsep}" if str(SITE) in sys.path else ""  # the carried wheels, once installed
        self.env = dict(os.environ, PYTHONPATH=site + str(ROOT), PYTHONUNBUFFERED="1")
        if plan.device == "cpu":  # the dry run: one intra-op thread per command on a small shared machine
            self.env["OMP_NUM_THREADS"] = "1"

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def cli(self, name: str, *args: str, allowed: tuple[int, ...] = (0,), reserve_s: float = 0.0) -> Stage:
        """Run `python -m iee_deploy ARGS` as stage `name` (output to WORK/name.log)."""
        return self.run(name, [sys.executable, "-m", "iee_deploy", *args], allowed, reserve_s)

    def run(self, name: str, cmd: Sequence[str], allowed: tuple[int, ...] = (0,), reserve_s: float = 0.0) -> Stage:
        shown = shlex.join(["python", *[os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd[1:]]])
        stage = Stage(name, shown)
        self.record.stages.append(stage)
        timeout = self.left() - reserve_s
        if timeout < 5:
            stage.note = "skipped: no time left in the budget"
            self.log.line(f"== {name}: {stage.note}")
            self.save()
            return stage
        self.log.line(f"== {name} (at most {timeout:.0f} s)\n$ {shown}")
        start = time.perf_counter()
        with open(self.work / f"{name}.log", "w") as output:
            try:
                done = subprocess.run(list(cmd), cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                      timeout=timeout)
                stage.returncode = done.returncode
            except subprocess.TimeoutExpired:
                stage.returncode, stage.note = 124, f"stopped at the budget ({timeout:.0f} s)"
        stage.seconds = round(time.perf_counter() - start, 1)
        tail = (self.work / f"{name}.log").read_text(errors="replace").strip().splitlines()[-12:]
        self.log.line("\n".join(tail))
        status = "ok" if stage.returncode in allowed else f"FAILED ({stage.returncode})"
        self.log.line(f"-- {name}: {status} in {stage.seconds:.1f} s {stage.note}")
        if stage.returncode not in allowed and not stage.note:
            stage.note = f"exit {stage.returncode}; see {name}.log in {DETAILS}"
        self.save()
        return stage

    def skip(self, name: str, why: str) -> None:
        self.record.stages.append(Stage(name, "", None, 0.0, f"skipped: {why}"))
        self.log.line(f"== {name}: skipped: {why}")
        self.save()

    def save(self) -> None:
        from iee_deploy.io import write_json, write_text

        self.record.seconds = round(time.perf_counter() - self.started, 1)
        write_json(self.out / "gpu.json", asdict(self.record))
        write_text(self.out / "gpu.md", render(self.record))


def lut_args(plan: Plan) -> list[str]:
    return ["--model", plan.model, "--num-classes", str(plan.num_classes), "--resolution", str(plan.resolution)]


def run_check(plan: Plan, out: Path, work: Path, budget_s: float, wheels: Path | None, target: str | None,
              command: str) -> Record:
    """Every stage in order; a stage whose input is missing is skipped with the reason."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / LOG_NAME)
    log.path.write_text("")
    installed = install_wheels(wheels, log) if wheels is not None else "no wheels asked for (--wheels)"
    log.line(installed)

    from benchmarks.common import git_commit

    record = Record(mode=plan.mode, date=utc_now(), command=command, commit=git_commit())
    check = Check(plan, out, work, budget_s, log, record)
    record.environment = {**environment(plan.mode), "wheels": installed}
    log.line("environment: " + json.dumps(record.environment))
    target = target or detect_target(plan, record.environment)
    facts = target_facts(target)
    batch = int(facts["batch"])
    precision = str(facts["precision"])
    record.environment.update(target=target, batch=batch, precision=precision)
    check.save()

    # tests: the GPU-marked tests on this machine's device (all skip without CUDA)
    xml = work / "tests.xml"
    tests = check.run("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                                f"--junitxml={xml}", str(ROOT / "tests" / "test_gpu.py")], allowed=(0, 5),
                      reserve_s=0.7 * (budget_s - 60))
    if xml.is_file():
        record.tests = {**junit_counts(xml.read_text()), "device": record.environment["device"]}
    record.tests["returncode"] = tests.returncode

    lut = profile_stage(check, plan, target, facts)
    if lut is None:
        check.skip("validate-lut", "no LUT")
        check.skip("prune", "no LUT")
    else:
        vl_json = work / "validate-lut.json"
        stage = check.cli("validate-lut", "validate-lut", "--lut", str(lut), *lut_args(plan), "--samples", str(plan.samples),
                          "--json", str(vl_json), reserve_s=0.25 * budget_s * (plan.mode == "gpu"))
        if stage.ok:
            vl = json.loads(vl_json.read_text())
            record.validate_lut = {key: vl[key] for key in ("mape_pct", "spearman", "mape_uncalibrated_pct",
                                                            "dense_measured_ms", "dense_predicted_ms", "statistic",
                                                            "batch", "precision", "backend", "device", "seconds")}
            record.validate_lut["samples"] = [{k: s[k] for k in ("level", "predicted_ms", "measured_ms", "error_pct")}
                                              for s in vl["samples"]]
        prune_and_time(check, plan, target, lut, batch)
    record.acceptance = acceptance(record)
    check.save()
    bundle(work, out)
    log.line(f"wrote {out}/gpu.md and gpu.json in {record.seconds:.0f} s")
    return record


def detect_target(plan: Plan, env: Mapping[str, Any]) -> str:
    if plan.mode == "dry-run":
        return "cpu"
    if env.get("cuda") is None:
        raise SystemExit("no CUDA GPU is visible to torch here: run with --dry-run on a CPU, or on the GPU machine")
    found = match_target(str(env["device"]), target_patterns())
    if found is None:
        raise SystemExit(f"no target in targets/*.yaml matches the GPU '{env['device']}': pass --target NAME")
    return found


def profile_stage(check: Check, plan: Plan, target: str, facts: Mapping[str, Any]) -> Path | None:
    """Probe the coarsest grid, choose the finest step that fits the profile budget, profile it."""
    record, work = check.record, check.work
    common = ["--target", target, *lut_args(plan), "--backend", "torch", *plan.profile_timing]
    probe_csv = work / f"probe-{target}-{plan.model}.csv"
    start = time.perf_counter()
    probe = check.cli("profile-probe", "profile", *common, "--step", str(plan.probe_step), "--out", str(probe_csv))
    if not probe.ok:
        return None
    probe_meta = json.loads(probe_csv.with_suffix(".json").read_text())
    grid_min, align = int(probe_meta["grid_min"]), int(probe_meta["grid_align"])
    rows = planned_rows(plan, grid_min, align)
    per_row = probe.seconds / max(1, probe_meta["rows_planned"])  # start-up and calibration included: an upper bound
    left = plan.profile_seconds - (time.perf_counter() - start)
    step = choose_step(rows, per_row, left)
    record.lut = {"target": target, "model": plan.model, "num_classes": plan.num_classes, "resolution": plan.resolution,
                  "probe": {"step": plan.probe_step, "rows": probe_meta["rows_planned"], "seconds": probe.seconds,
                            "seconds_per_row": round(per_row, 4)},
                  "rows_by_step": rows, "profile_budget_s": plan.profile_seconds, "step": step}
    name = f"{target}-{plan.model}"
    final = work / f"{name}.csv"
    if step == plan.probe_step:
        record.lut["note"] = "no finer grid fits the budget: the probe is the LUT"
        for suffix in (".csv", ".json"):
            shutil.copyfile(probe_csv.with_suffix(suffix), final.with_suffix(suffix))
    elif not check.cli("profile", "profile", *common, "--step", str(step), "--out", str(final)).ok:
        return None
    meta = json.loads(final.with_suffix(".json").read_text())
    record.lut.update({key: meta[key] for key in ("batch", "precision", "backend", "device", "statistic", "grid_step",
                                                  "grid_min", "grid_align", "warmup", "repeats", "network_repeats",
                                                  "rows_planned", "rows_done", "elapsed_s", "calibration", "versions")})
    for suffix in (".csv", ".json"):
        shutil.copyfile(final.with_suffix(suffix), check.out / f"{name}{suffix}")
    record.lut["files"] = [f"{name}.csv", f"{name}.json"]
    check.save()
    return final


def synthetic_imagefolder(root: Path, classes: int, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """train/<class>/*.jpg and val/<class>/*.jpg of random pixels, one folder per class of the LUT's model.

    The prune needs a few training steps and `validate` a labelled set with the model's class count
    (1000 for the shipped resnet50 LUT); latency does not depend on what the images show.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"c{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def prune_and_time(check: Check, plan: Plan, target: str, lut: Path, batch: int) -> None:
    """HALP's knapsack down to half the dense predicted latency, then both engines side by side, then validate."""
    record, work = check.record, check.work
    run = work / "pruned-run"
    epochs = 1
    images = synthetic_imagefolder(work / "images", plan.num_classes, plan.per_class)
    stage = check.cli("prune", "train", *lut_args(plan), "--dataset", "imagefolder", "--data-dir", str(images),
                      "--subset", str(plan.train_subset),
                      "--batch-size", str(plan.train_batch), "--epochs", str(epochs), "--method", "halp",
                      "--delta-t", str(plan.delta_t), "--update-end", "0.75", "--latency-ratio", str(plan.budget_ratio),
                      "--target", target,
                      "--lut", str(lut), "--device", plan.device, "--no-progress", "--out", str(run))
    if not stage.ok:
        check.skip("build-engine", "the prune stage failed")
        return
    info = json.loads((run / "run.json").read_text())
    record.prune = {key: info.get(key) for key in ("budget_ms", "predicted_latency_ms", "target", "kind")}
    summary = json.loads((run / "summary.json").read_text())
    record.prune["dense_predicted_ms"] = (summary.get("latency") or {}).get("dense_ms")
    record.prune["ratio"] = plan.budget_ratio
    engine = work / "engine"
    timing = list(plan.engine_timing)
    if not check.cli("build-engine", "build-engine", "--run", str(run), "--backend", plan.engine_backend,
                     "--batch", str(batch), *timing, "--out", str(engine)).ok:
        check.skip("validate", "no engine")
        return
    report = json.loads((engine / "engine.json").read_text())
    spec = report["spec"]
    record.engine = {"backend": report["backend"], "precision": spec["precision"], "batch": spec["batch"],
                     "device": record.environment["device"], "speedup": report["speedup"],
                     **{name: {"params": report[name]["params"], "median_ms": report[name]["timing"]["median_ms"],
                               "p90_ms": report[name]["timing"]["p90_ms"],
                               "images_per_s": report[name]["timing"]["images_per_s"]} for name in ("dense", "pruned")}}
    check.save()
    stage = check.cli("validate", "validate", "--engine", str(engine), "--budget-tolerance", str(BUDGET_TOLERANCE),
                      "--subset", str(plan.train_subset), "--max-accuracy-drop", "100", *timing, allowed=(0, 1))
    validation = engine / "validation.json"
    if stage.returncode in (0, 1) and validation.is_file():
        data = json.loads(validation.read_text())
        checks = {c["name"]: {k: c[k] for k in ("status", "measured", "limit")} for c in data["checks"]}
        record.budget_check = {"budget_ms": data["budget_ms"], "tolerance": BUDGET_TOLERANCE,
                               "predicted_ms": data["predicted_latency_ms"], "checks": checks,
                               "passed": data["passed"], "failed": data["failed"],
                               "backend": data["backend"], "precision": data["precision"], "batch": data["batch"],
                               "device": record.environment["device"]}
        budget = checks.get("latency-budget", {})
        if budget.get("measured") is not None and data["budget_ms"]:
            record.budget_check["measured_over_budget"] = budget["measured"] / data["budget_ms"]


def acceptance(record: Record) -> dict[str, Any]:
    """The issue's acceptance figures with their limit, goal and verdict."""
    vl, engine, budget = record.validate_lut, record.engine, record.budget_check
    rows = {
        "mape_pct": (vl.get("mape_pct"), False), "spearman": (vl.get("spearman"), True),
        "speedup": (engine.get("speedup"), True),
    }
    result: dict[str, Any] = {}
    for key, (value, higher) in rows.items():
        limit, goal = ACCEPTANCE[key]
        result[key] = {"value": value, "limit": limit, "goal": goal, "verdict": verdict(value, limit, goal, higher)}
    ratio = budget.get("measured_over_budget")
    result["latency_over_budget"] = {"value": ratio, "limit": 1 + BUDGET_TOLERANCE, "goal": 1.0,
                                     "verdict": verdict(ratio, 1 + BUDGET_TOLERANCE, 1.0, False)}
    return result


def bundle(work: Path, out: Path) -> None:
    """details.tar.gz: every stage's log and report from the work folder (no models or engines)."""
    with tarfile.open(out / DETAILS, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix in DETAIL_SUFFIXES and path.stat().st_size < 8 * 2**20:
                tar.add(path, arcname=str(path.relative_to(work)))


# --- the report ----------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(record: Record) -> str:
    """gpu.md: every figure names its device, backend and precision."""
    env = record.environment
    device = env.get("device", "?")
    lines = ["# GPU check: LUT, validate-lut, pruned engine and budget on one device", ""]
    if record.mode == "dry-run":
        lines += ["**Dry run on a CPU** (the `cpu` target, a tiny model and grid): a pipeline check of the script. "
                  "No figure here is a GPU figure.", ""]
    lines += [f"- Date (UTC): {record.date}; commit {record.commit}; {record.seconds:.0f} s in all",
              f"- Command: `{record.command}`",
              f"- Device: {device}; driver {env.get('driver') or '-'}; CUDA {env.get('cuda') or '-'}; "
              f"cuDNN {env.get('cudnn') or '-'}; compute capability {env.get('capability', '-')}",
              f"- Versions: python {env.get('python')}, torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
              f"ortools {env.get('ortools')}, numpy {env.get('numpy')}; host {env.get('cpu')} ({env.get('cores')} cores)",
              f"- Target `{env.get('target', '-')}`: batch {env.get('batch', '-')}, {env.get('precision', '-')}", ""]
    acc = record.acceptance
    if acc:
        eng, vl = record.engine, record.validate_lut
        lines += ["| figure | value | limit (goal) | verdict | device, backend, precision |", "|---|---|---|---|---|"]
        where_lut = f"{vl.get('device', device)}, {vl.get('backend', '-')}, {vl.get('precision', '-')}, batch {vl.get('batch', '-')}"
        where_engine = f"{device}, {eng.get('backend', '-')}, {eng.get('precision', '-')}, batch {eng.get('batch', '-')}"
        for key, label, where in (("mape_pct", "validate-lut MAPE %", where_lut),
                                  ("spearman", "validate-lut Spearman", where_lut),
                                  ("speedup", "measured speed-up, dense / pruned at 0.5 of predicted", where_engine),
                                  ("latency_over_budget", "measured / budget latency (LUT statistic)", where_engine)):
            a = acc.get(key, {})
            lines.append(f"| {label} | {_fmt(a.get('value'))} | {a.get('limit')} ({a.get('goal')}) | {a.get('verdict')} | {where} |")
        lines.append("")
    if record.engine:
        e = record.engine
        lines += [f"Engines ({e['backend']}, {e['precision']}, batch {e['batch']}, on {device}), timed side by side:", "",
                  "| model | parameters | median ms/batch | p90 ms/batch | images/s |", "|---|---|---|---|---|"]
        for name in ("dense", "pruned"):
            r = e[name]
            lines.append(f"| {name} | {r['params']:,} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['images_per_s']:.0f} |")
        lines.append("")
    if record.budget_check:
        b = record.budget_check
        lines += [f"Validate ({b['backend']}, {b['precision']}, batch {b['batch']}, on {device}): budget "
                  f"{_fmt(b['budget_ms'])} ms, LUT-predicted {_fmt(b['predicted_ms'])} ms; "
                  + ", ".join(f"{n} {c['status']} ({_fmt(c['measured'], 4)} vs {_fmt(c['limit'], 4)})"
                              for n, c in b["checks"].items()), ""]
    if record.lut:
        lut = record.lut
        lines += [f"LUT: {lut.get('model')} at {lut.get('resolution')} px, {lut.get('num_classes')} classes, "
                  f"batch {lut.get('batch', '-')}, {lut.get('precision', '-')}, {lut.get('backend', '-')} on "
                  f"{lut.get('device', '-')}, {lut.get('statistic', '-')} of {lut.get('repeats', '-')} runs; grid step "
                  f"{lut.get('grid_step', lut.get('step'))} from {lut.get('grid_min', '-')} in blocks of "
                  f"{lut.get('grid_align', '-')}, {lut.get('rows_done', '-')} rows in {_fmt(lut.get('elapsed_s'), 0)} s. "
                  f"Grid chosen from a probe at step {lut['probe']['step']} ({lut['probe']['rows']} rows in "
                  f"{lut['probe']['seconds']} s, {lut['probe']['seconds_per_row']} s per row) to fit "
                  f"{lut['profile_budget_s']:.0f} s; rows per step: {lut['rows_by_step']}.", ""]
    if record.tests:
        t = record.tests
        lines += [f"GPU tests (`pytest -m gpu tests/test_gpu.py`, on {t.get('device', device)}): {t.get('passed', '-')} "
                  f"passed, {t.get('failures', '-')} failed, {t.get('errors', '-')} errors, {t.get('skipped', '-')} skipped.", ""]
    lines += ["Stages (exact commands, from the repository root, with PYTHONPATH=.):", "",
              "| stage | exit | seconds | command | note |", "|---|---|---|---|---|"]
    for s in record.stages:
        lines.append(f"| {s.name} | {_fmt(s.returncode)} | {s.seconds:.1f} | `{s.command}` | {s.note} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Record:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check",
                        help="folder for gpu.md, gpu.json, the LUT, the log and details.tar.gz (at most 8 files); default $OUT")
    parser.add_argument("--work", default=None, help="folder for every stage's files (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="every stage on this CPU with a tiny model and grid")
    parser.add_argument("--wheels", default=None,
                        help="folder of carried wheels to install first (default: .whl on a GPU run, none in a dry run)")
    parser.add_argument("--target", default=None, help="target name (default: the GPU's, from targets/*.yaml; cpu in a dry run)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget of all stages (default 480; 240 dry run)")
    parser.add_argument("--profile-s", type=float, default=None, help="time for the probe and the profile (default: the mode's)")
    args = parser.parse_args(argv)
    plan = DRY_RUN if args.dry_run else GPU
    if args.profile_s is not None:
        plan = Plan(**{**asdict(plan), "profile_seconds": args.profile_s})
    wheels = Path(args.wheels) if args.wheels else (None if args.dry_run else ROOT / ".whl")
    if wheels is not None and not wheels.is_dir():
        raise SystemExit(f"no wheel folder '{wheels}': run tools/fetch_gpu_wheels.sh here and carry .whl")
    budget = args.budget_s or (240.0 if args.dry_run else 480.0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        command = shlex.join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)])
        return run_check(plan, Path(args.out), Path(args.work or tmp), budget, wheels, args.target, command)


if __name__ == "__main__":
    main()
