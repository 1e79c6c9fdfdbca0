"""Helpers shared by the benchmark scripts: the machine/versions/date header every results file
starts with, a markdown table writer, a median timer, and writing the .md/.json/.png record.

Run the benchmarks as modules from the repository root (`PYTHONPATH=. python -m benchmarks.X`)
so that `benchmarks.common` and the top-level packages import the same way everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from iee_deploy.deploy import render
from iee_deploy.io import atomic_write, write_json, write_text
from iee_deploy.runs import RunFolder
from runtime.machine import cpu_identity, cpu_name
from runtime.progress import progress

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"  # ignored by git: unpacked data, LUTs
SHARED = Path(os.environ.get("IEE_SHARED", ROOT.parent / "shared"))
"""The read-only shared folder (data archives) beside the clone; IEE_SHARED points elsewhere (e.g. from a worktree)."""

def add_run_options(parser: argparse.ArgumentParser, quick_help: str, runs: str) -> None:
    """The options every CIFAR-10 training benchmark shares: mode, model, optimizer, parallelism, run folders."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--model", default="resnet20", help="zoo model (a CIFAR ResNet or wrn22_2)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time (each uses 1 torch thread)")
    parser.add_argument("--runs", default=runs, help="parent folder of the run folders")


def cifar10_subset(train_per_class: int, val_per_class: int) -> Path:
    """An ImageFolder tree of the first images of every class of the shared CIFAR-10 JPEG copy, under CACHE.

    The archive (`SHARED`/data/cifar10-jpeg.tar.gz) is unpacked once; the subset is a tree of hard
    links, so every method and seed sees the same class-balanced images.
    """
    subset = CACHE / f"cifar10-jpeg-{train_per_class}-{val_per_class}"
    if subset.is_dir():  # made once (here, or carried to a GPU machine without the archive)
        return subset
    archive = SHARED / "data" / "cifar10-jpeg.tar.gz"
    full = CACHE / "cifar10-jpeg"
    if not (full / "test").is_dir():
        if not archive.is_file():
            raise SystemExit(f"{archive} is missing: the benchmark needs the shared CIFAR-10 JPEG archive (IEE_SHARED)")
        tmp = CACHE / "cifar10-jpeg.unpacking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"unpacking {archive} into {CACHE}", file=sys.stderr, flush=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(full, ignore_errors=True)
        (tmp / "cifar10-jpeg").rename(full)
        tmp.rmdir()
    tmp = subset.with_name(subset.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, n in (("train", train_per_class), ("test", val_per_class)):
        for cls in sorted(p for p in (full / split).iterdir() if p.is_dir()):
            (tmp / split / cls.name).mkdir(parents=True)
            for image in sorted(cls.iterdir())[:n]:
                os.link(image, tmp / split / cls.name / image.name)
    tmp.rename(subset)
    return subset


def fashion_mnist_root(shared: Path = SHARED) -> Path:
    """A data root holding Fashion-MNIST's raw files, copied once under CACHE (never written into `shared`)."""
    source = shared / "data" / "FashionMNIST" / "raw"
    root = CACHE / "fashion-mnist"
    raw = root / "FashionMNIST" / "raw"
    if not raw.is_dir():
        if not source.is_dir():
            raise SystemExit(f"{source} is missing: the benchmark needs the shared Fashion-MNIST files (IEE_SHARED)")
        tmp = root / "raw.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        raw.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(raw)
    return root


def image_batches(data: Path, split: str, count: int | None, size: int = 50) -> list[tuple[Any, Any]]:
    """The first `count` (all: None) images of `split` ("train", else the validation images) of the CIFAR-10 tree
    `data` as training normalises them, in batches of `size`: (images, labels) numpy arrays."""
    import numpy as np
    import torch

    from iee_deploy.data import build_datasets

    bundle = build_datasets("cifar10", data, 32)
    dataset = bundle.train if split == "train" else bundle.val
    n = len(dataset) if count is None else min(count, len(dataset))
    out = []
    for start in range(0, n, size):
        pairs = [dataset[i] for i in range(start, min(n, start + size))]
        out.append((torch.stack([x for x, _ in pairs]).numpy(), np.array([int(y) for _, y in pairs])))
    return out


def engine_top1(onnx: Path, batches: Sequence[tuple[Any, Any]]) -> float:
    """Top-1 of the ONNX engine `onnx` (ONNX Runtime on the CPU, fp32) over `batches` (`image_batches`)."""
    session = cpu_session(onnx)
    correct = total = 0
    for x, y in batches:
        correct += int((session.infer_batch(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def cpu_session(onnx: Path, precision: str = "fp32", resolution: int = 32) -> Any:
    """The `cpu` target's ONNX Runtime session of the ONNX file `onnx`: batch 1, one thread (int8: the integer kernels
    checked). What every benchmark times an engine with."""
    from runtime.backends import BuildSpec, ModelSource, get_backend

    spec = BuildSpec(batch=1, resolution=resolution, precision=precision, threads=1, device="cpu", warmup=1)
    return get_backend("onnxruntime").session(ModelSource(onnx.stem, onnx=onnx.read_bytes()), spec)


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of `packages` (absent ones left out), plus Python's."""
    found = {"python": platform.python_version()}
    for pkg in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[pkg] = metadata.version(pkg)
    return found


def git_commit() -> str:
    """The checked-out commit (with '+dirty' when the tree has uncommitted changes), else $IEE_COMMIT, else 'unknown'.

    IEE_COMMIT is for copies of the tree without .git (the GPU machine's): the caller names the commit it sent.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("IEE_COMMIT", "unknown")
    return head + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that started this process, as one would type it from the repository root."""
    module = sys.modules["__main__"].__spec__
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    return "PYTHONPATH=. " + shlex.join(head + sys.argv[1:])


def header(threads: int, *packages: str, device: str = "cpu") -> dict[str, Any]:
    """What every results file states: date, machine (with the GPU where `device` is cuda), load, versions, commit, command."""
    gpu = ""
    if device == "cuda":
        import torch

        gpu = f", GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    identity = cpu_identity()
    cpu = f"{cpu_name()} ({identity})" if identity else cpu_name()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{cpu}, {os.cpu_count()} cores (shared with other jobs), {platform.platform()}{gpu}",
            "torch_threads": threads, "load_average": [round(x, 2) for x in os.getloadavg()],
            "versions": versions("torch", "numpy", *packages), "commit": git_commit(), "command": command_line()}


def header_markdown(meta: dict[str, Any], mode: str) -> list[str]:
    """The header lines of a results file (`mode`: which mode of the script produced it)."""
    return [f"- Mode: **{mode}**",
            f"- Command: `{meta['command']}`",
            f"- Date (UTC): {meta['date']}; commit {meta['commit']}",
            f"- Machine: {meta['machine']}; torch threads per process: {meta['torch_threads']}",
            f"- Load average (1, 5, 15 min) at the start: {', '.join(map(str, meta['load_average']))}",
            f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table's lines (cells already formatted, or str() of them): `iee_deploy.deploy.render.markdown_table`."""
    return render.markdown_table(headers, [[str(c) for c in row] for row in rows]).splitlines()


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` in ms over `repeats` calls after one warm-up call."""
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def alternating_median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time in ms of each of `fns` over `repeats` rounds, the functions taking turns in every
    round (so that a change of machine load falls on all of them), after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


class TimeLimit(Exception):
    """A step ran past its limit (a benchmark reports it as not handled, with the limit)."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeLimit after `seconds` of wall time (SIGALRM: interrupts Python code between bytecodes)."""
    def expire(signum: int, frame: Any) -> None:
        raise TimeLimit(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


PLATEAU_POINTS = 0.3
"""The issue's plateau bar: a baseline trained for 0.75 E epochs within this many top-1 points of it at E."""


def plateaued(difference: dict[str, float]) -> bool:
    """Whether a paired difference (0.75 E minus E, accuracies as fractions) has its mean within PLATEAU_POINTS."""
    return abs(100 * difference["mean"]) <= PLATEAU_POINTS


def budget_folder(budget: float) -> str:
    """The run and record folder of a latency budget given as a fraction of the dense latency: 0.35 -> "r35"."""
    return f"r{round(100 * budget)}"


def folder_budget(name: str) -> float:
    """The budget a `budget_folder` name stands for: "r35" -> 0.35 (the inverse, for records read back)."""
    if not re.fullmatch(r"r\d+", name):
        raise ValueError(f"{name!r} is not a budget folder (r<percent>, e.g. r35)")
    return int(name[1:]) / 100


def setting_suffix(device: str, **lengths: tuple[int | None, int]) -> str:
    """The suffix of a benchmark's run folders and results file for a setting other than its default.

    `-<key><value>` for every length (key=(value, default)) given a value other than its default, in
    order, then `-<device>` off the CPU; "" for the default setting. Runs of different lengths or
    devices so never share a folder or a table.
    """
    changed = "".join(f"-{key}{value}" for key, (value, default) in lengths.items() if value not in (None, default))
    return changed + ("" if device == "cpu" else f"-{device}")


def finished(out: Path) -> bool:
    """Whether the run folder `out` holds a finished run (its summary is written last)."""
    return (out / RunFolder.SUMMARY).is_file()


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of the per-seed differences a_i - b_i and its two-sided 95% Student-t confidence interval.

    `a` and `b` are paired by position (the same seed: initial weights, masks, data order). With
    one pair the interval is undefined (nan).
    """
    from scipy import stats

    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need the same positive length; got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def format_difference(d: dict[str, float], scale: float = 100.0) -> str:
    """'+1.23 [-0.40, +2.86] (n=5)' in points (`scale` 100 for accuracies given as fractions)."""
    if d["n"] < 2:
        return f"{scale * d['mean']:+.2f} (n=1, no interval)"
    return f"{scale * d['mean']:+.2f} [{scale * d['low']:+.2f}, {scale * d['high']:+.2f}] (n={d['n']:.0f})"


def measured_sizing(rows: Sequence[dict[str, Any]], jobs: int, val_images: int) -> str:
    """What a results file says of its own size: training minutes taken, and the resolution of its accuracies.

    `rows` are the runs (each with "seconds" and "val_acc"); the binomial standard error of a top-1
    on `val_images` images is taken at the mean accuracy the runs reached.
    """
    accuracy = statistics.fmean(r["val_acc"] for r in rows)
    stderr = math.sqrt(accuracy * (1 - accuracy) / val_images)
    return (f"This file's runs took {sum(r['seconds'] for r in rows) / 60 / jobs:.0f} min of training ({jobs} at a "
            f"time). {val_images:,} validation images give one top-1 a binomial standard error of {100 * stderr:.1f} "
            f"points at the mean reached here ({100 * accuracy:.1f}%); what the seeds resolve is shown by the paired "
            "95% intervals in the tables.")


def write_results(name: str, record: dict[str, Any], markdown: str, folder: Path = RESULTS) -> None:
    """<folder>/<name>.json and <name>.md (by default in benchmarks/results), written atomically."""
    write_json(folder / f"{name}.json", record)
    write_text(folder / f"{name}.md", markdown)
    print(f"wrote {folder / (name + '.md')} and {name}.json")


def single_thread_env() -> dict[str, str]:
    """Environment for a training subprocess: one intra-op thread (runs go two at a time on 2 cores).

    The repository goes first on PYTHONPATH; entries already there stay (the GPU machine's carried wheels).
    """
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def shown_command(cmd: Sequence[str]) -> str:
    """The command line as a user re-runs it from the repository root (written into results files)."""
    return "OMP_NUM_THREADS=1 PYTHONPATH=. " + shlex.join(cmd)


STATED_FIELDS = {
    "--model": "model", "--dataset": "dataset", "--data-dir": "data_dir", "--subset": "subset",
    "--val-subset": "val_subset", "--checkpoint": "init_checkpoint", "--epochs": "epochs", "--batch-size": "batch_size",
    "--lr": "lr", "--seed": "seed", "--device": "device", "--method": "sparsity.method",
    "--sparsity": "sparsity.sparsity", "--distribution": "sparsity.distribution", "--hjq": "sparsity.hjq",
    "--delta-t": "sparsity.delta_t", "--update-end": "sparsity.update_end", "--descent": "sparsity.descent",
    "--latency-ratio": "sparsity.latency_ratio", "--lut": "sparsity.lut", "--grow-init": "sparsity.grow_init",
    "--grow-criterion": "sparsity.grow_criterion", "--omega-decay": "sparsity.omega_decay",
}
"""`iee-deploy train` options as the benchmarks pass them, and the config.json field each one sets."""


def _states(text: str, stored: Any) -> bool:
    """Whether the option value `text` is what config.json stores as `stored` ('auto' is stored as null)."""
    if stored is None:
        return text == "auto"
    if isinstance(stored, list):  # --hjq H,J,Q
        return text == ",".join(map(str, stored))
    if isinstance(stored, (int, float)):
        try:
            return float(text) == float(stored)
        except ValueError:
            return False
    return text == str(stored)


def stale_settings(cmd: Sequence[str], stored: dict[str, Any]) -> list[str]:
    """The options of the train command `cmd` that the run whose config.json is `stored` did not have.

    Every option `cmd` states from STATED_FIELDS (and `--no-freeze`) is compared with the field it
    sets; an option left to its default is not. A benchmark whose settings changed would otherwise
    report a finished run of the old settings as if it were the new command's.
    """
    changed = []
    for flag, text in zip(cmd, cmd[1:]):
        if flag in STATED_FIELDS:
            value: Any = stored
            for key in STATED_FIELDS[flag].split("."):
                value = value.get(key) if isinstance(value, dict) else None
            if not _states(text, value):
                changed.append(f"{flag} {text} (the run has {json.dumps(value)})")
    freeze = stored.get("sparsity", {}).get("freeze")
    if ("--no-freeze" in cmd) == (freeze is not False):
        changed.append(f"{'--no-freeze' if '--no-freeze' in cmd else 'freeze'} (the run has freeze {json.dumps(freeze)})")
    return changed


def train_run(cmd: list[str], out: Path) -> str:
    """Run the `python -m iee_deploy train ... --out out` command `cmd` unless `out` finished already.

    A finished run is reused only if its config.json has every setting `cmd` states (`stale_settings`);
    otherwise this stops with one line. A run with a checkpoint resumes (`--resume`, which refuses
    other settings itself); one that started without reaching a checkpoint starts over. Output goes
    to `out`.log beside the folder. Returns `shown_command(cmd)`.
    """
    shown = shown_command(cmd)
    if finished(out):
        changed = stale_settings(cmd, RunFolder(out).read_config() or {})  # unreadable: every stated option differs
        if changed:
            raise SystemExit(f"{out} holds a finished run with other settings than this benchmark's: "
                             f"{'; '.join(changed)}: move it away, or pass another --runs")
        return shown
    if (out / "checkpoint.pt").is_file():
        cmd = [*cmd, "--resume"]
    elif out.exists():  # started but not one epoch finished: nothing to keep
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f"{out.name}.log"
    with open(log_path, "a") as log:
        done = subprocess.run([sys.executable, *cmd[1:]], env=single_thread_env(), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"run failed ({done.returncode}): {shown}\nsee {log_path}")
    return shown


def train_command(cmd: list[str], out: Path, in_process: bool) -> str:
    """Run (or reuse) the `python -m iee_deploy train ... --out out` command `cmd`: `train_run`, or, `in_process`,
    through the CLI in this process (a process start costs more than a tiny run). Returns `shown_command(cmd)`."""
    if not in_process:
        return train_run(cmd, out)
    if not finished(out):
        from iee_deploy.cli import main as cli

        shutil.rmtree(out, ignore_errors=True)
        code = cli.main(args=cmd[3:], prog_name="iee-deploy", standalone_mode=False)
        if code or not finished(out):
            raise SystemExit(f"run failed ({code}): {shown_command(cmd)}")
    return shown_command(cmd)


T = TypeVar("T")
R = TypeVar("R")


def run_parallel(fn: Callable[[T], R], items: Sequence[T], jobs: int, desc: str) -> list[R]:
    """`fn` over `items`, `jobs` at a time, results in input order, with a progress bar."""
    with ThreadPoolExecutor(max_workers=jobs) as pool, progress(total=len(items), desc=desc, unit="run") as bar:
        results = []
        for future in [pool.submit(fn, item) for item in items]:
            results.append(future.result())
            bar.update(1)
    return results


STRUCTURE_KEEP = 64
"""Float initializers of at most this many values stay in an engine's structure (shape-like constants, scales)."""


def onnx_structure(onnx: Path) -> str:
    """The ONNX file `onnx` with its float weights left out: gzip, then base64 (a few KB), for a JSON record.

    What a results file keeps of an engine so that a fresh clone can re-time it: ONNX Runtime's CPU
    kernels take as long whatever values the weights hold, so the structure with re-drawn weights
    (`onnx_from_structure`) times as the engine does. Integer initializers (shapes, indices) and small
    float ones are kept whole.
    """
    import base64
    import gzip

    import onnx as onnx_lib

    proto = onnx_lib.load(str(onnx))
    for init in proto.graph.initializer:
        if init.data_type == onnx_lib.TensorProto.FLOAT and math.prod(init.dims) > STRUCTURE_KEEP:
            init.ClearField("raw_data")
            init.ClearField("float_data")
    return base64.b64encode(gzip.compress(proto.SerializeToString(), mtime=0)).decode("ascii")


def onnx_from_structure(text: str, path: Path, seed: int = 0) -> Path:
    """Write the engine whose structure `onnx_structure` gave as `text` to `path`, its left-out weights drawn from
    N(0, 0.05^2) (seeded): the same graph, shapes and kernels as the engine."""
    import base64
    import gzip

    import numpy as np
    import onnx as onnx_lib
    from onnx import numpy_helper

    proto = onnx_lib.load_from_string(gzip.decompress(base64.b64decode(text)))
    rng = np.random.default_rng(seed)
    for i, init in enumerate(proto.graph.initializer):
        if init.data_type == onnx_lib.TensorProto.FLOAT and not init.raw_data and not init.float_data and init.dims:
            values = (0.05 * rng.standard_normal(tuple(init.dims))).astype(np.float32)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, init.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: f.write(proto.SerializeToString()), "wb")
