"""Random corruptions of every file kind the tool reads: the reader either accepts the file (the damage left
it valid) or raises one `UserError` line; never another exception, never a traceback.

Kinds: a LUT's CSV and JSON, a target YAML, a run folder's run.json, config.json, channels.json,
final_model.pt and checkpoint.pt, and an engine folder's engine.json. Corruptions: empty, truncated at a
random byte, random bytes flipped, random binary of the same length, and (for JSON) valid JSON of another
shape or with a field of another type. The library readers run on many seeded corruptions each; the real
command line runs on the three that are always invalid (empty, half, garbage) and must print one line.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from deploy_runs import make_structured_run
from synthetic_lut import write_synthetic_lut

from iee_deploy.cli import main
from iee_deploy.deploy.build import read_engine_report
from iee_deploy.deploy.run_models import load_run_models
from iee_deploy.errors import UserError
from iee_deploy.models import build_model
from iee_deploy.runs import RunFolder
from profiler.lut import load_lut
from profiler.targets import load_target, targets_dir

SEEDS = 4


def corruptions(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    """Seeded corruptions of `data` (name, bytes); JSON files also get valid JSON of the wrong shape."""
    rng = random.Random(seed)
    cut = rng.randrange(0, max(1, len(data)))
    flipped = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if flipped:
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
    out = [("empty", b""), ("truncated", data[:cut]), ("flipped", bytes(flipped)),
           ("garbage", bytes(rng.randrange(256) for _ in range(max(16, len(data) % 4096))))]
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return out
    out += [("json-list", b"[1, 2, 3]"), ("json-number", b"42"), ("json-null", b"null")]
    if isinstance(obj, dict) and obj:
        key = rng.choice(sorted(obj))
        for name, value in (("text", "x"), ("negative", -1), ("list", [None]), ("null", None), ("nested", {"a": 1})):
            out.append((f"field-{key}-{name}", json.dumps({**obj, key: value}).encode()))
    return out


def expect_one_line_or_accept(read: Callable[[], object], label: str) -> None:
    try:
        read()
    except UserError as err:
        assert "\n" not in str(err), f"{label}: {err}"
    except Exception as exc:  # the defect this test exists for
        pytest.fail(f"{label}: {type(exc).__name__} escaped: {exc}")


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("originals")
    lut = write_synthetic_lut(root / "lut.csv", "resnet20", build_model("resnet20", 10, 8), 10, 8)
    run = make_structured_run(root / "run", keep=0.5, dense_start=True)
    folder = RunFolder(root / "resume")
    folder.path.mkdir()
    folder.write_config({"model": "resnet20"})
    import torch

    torch.save({"progress": {}, "model": {}}, folder / folder.CHECKPOINT)
    engine = root / "engine"
    engine.mkdir()
    (engine / "engine.json").write_text(json.dumps({
        "run_dir": str(run), "model": "resnet20", "kind": "structured", "backend": "onnxruntime",
        "spec": {"batch": 1, "resolution": 32, "precision": "fp32", "threads": 1, "sparse_weights": False,
                 "device": "cpu"}, "speedup": 1.5, "statistic": "min"}))
    shutil.copy(targets_dir() / "cpu.yaml", root / "target.yaml")
    return {"lut": lut, "run": run, "resume": folder.path, "engine": engine, "target": root / "target.yaml"}


def _readers(o: dict[str, Path], work: Path) -> list[tuple[str, Path, Callable[[], object]]]:
    """(label, file to corrupt inside `work`, reader) for every file kind."""
    lut = work / "lut.csv"
    run, resume, engine = work / "run", work / "resume", work / "engine"
    return [
        ("lut-csv", lut, lambda: load_lut(lut)),
        ("lut-json", lut.with_suffix(".json"), lambda: load_lut(lut)),
        ("target-yaml", work / "target.yaml", lambda: load_target(work / "target.yaml")),
        ("run.json", run / "run.json", lambda: load_run_models(run)),
        ("channels.json", run / "channels.json", lambda: load_run_models(run)),
        ("final_model.pt", run / "final_model.pt", lambda: load_run_models(run)),
        ("config.json", resume / "config.json", lambda: RunFolder(resume).read_config(strict=True)),
        ("checkpoint.pt", resume / "checkpoint.pt", lambda: RunFolder(resume).load_checkpoint()),
        ("engine.json", engine / "engine.json", lambda: read_engine_report(engine)),
    ]


def _fresh(originals: dict[str, Path], work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    for name in ("lut.csv", "lut.json", "target.yaml"):
        shutil.copy(originals["lut"].parent / name, work / name)
    for name in ("run", "resume", "engine"):
        shutil.copytree(originals[name], work / name)


KINDS = [label for label, _, _ in _readers({}, Path("/"))]


@pytest.mark.parametrize("kind", KINDS)
def test_every_random_corruption_is_accepted_or_one_line(originals, tmp_path, kind):
    work = tmp_path / "work"
    _fresh(originals, work)
    label, path, read = next(r for r in _readers(originals, work) if r[0] == kind)
    data = path.read_bytes()
    for seed in range(SEEDS):
        for name, corrupted in corruptions(data, seed):
            path.write_bytes(corrupted)
            expect_one_line_or_accept(read, f"{label} {name} (seed {seed})")
    path.write_bytes(data)


CLI = {  # file kind -> the command that reads it first ({work} is the corrupted copy)
    "lut-csv": ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{work}/lut.csv"],
    "lut-json": ["train", "--resolution", "8", "--latency-ratio", "0.5", "--lut", "{work}/lut.csv"],
    "target-yaml": ["profile", "--target", "{work}/target.yaml", "--out", "{work}/new.csv"],
    "run.json": ["build-engine", "--run", "{work}/run", "--out", "{work}/e"],
    "channels.json": ["build-engine", "--run", "{work}/run", "--out", "{work}/e"],
    "final_model.pt": ["build-engine", "--run", "{work}/run", "--out", "{work}/e"],
    "config.json": ["train", "--resume", "--out", "{work}/resume"],
    "checkpoint.pt": ["train", "--resume", "--out", "{work}/resume", "--model", "resnet20"],
    "engine.json": ["validate", "--engine", "{work}/engine"],
}


@pytest.mark.parametrize("how", ["empty", "half", "garbage"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_command_line_prints_one_line_for_a_damaged_file(originals, tmp_path, kind, how):
    work = tmp_path / "work"
    _fresh(originals, work)
    path = next(p for label, p, _ in _readers(originals, work) if label == kind)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "half": data[: len(data) // 2], "garbage": bytes(range(256)) * 3}[how])
    argv = [a.replace("{work}", str(work)) for a in CLI[kind]]
    result = CliRunner().invoke(main, argv, prog_name="iee-deploy")
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{type(escaped).__name__}: {escaped}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
