"""The GPU paper check: the paper's CIFAR-10 WideResNet-22-2 protocol, static vs RigL vs IEE, on one GPU.

The paper's setting (Table 3, 90% sparsity): WRN-22-2, CIFAR-10, ERK, batch 128, SGD lr 0.1, momentum
0.9, weight decay 5e-4, H = J = Q = 150, RigL dT = 100, structure updates ending at 3/4 of training;
its claim at 250 epochs: IEE 93.6 > RigL 92.9 > static 91.6 (dense 94.6). One call of the device
tool cannot run 250 epochs, so this script runs the longest schedule that fits its time budget:

1. data: the CIFAR-10 JPEG copies (`--data`: the .tar.gz, or a folder of train/ and test/) unpacked once;
2. throughput, side by side in this process on the decoded images held on the GPU
   (`iee_deploy.train.device_data`): images/s of dense, static, RigL and IEE training steps (the real
   `train_step` with each method's hooks; channels-last, bf16 autocast), each step timed with CUDA
   events, so IEE's sparse steps can be compared with static's outside explore and update steps;
3. sizing: the epoch time of the three concurrent runs, from those rates, sizes the epochs to the
   budget; H = J = Q = 150 (and RigL dT = 100) stay if at least 15 IEE updates fit, otherwise both
   take the library's short-run rule (`--hjq auto`, `--delta-t auto`);
4. training: static, RigL and IEE as three concurrent `python -m iee_deploy train` processes on the
   same GPU, with the same seed, so the same initial weights, data order and augmentation (crops and
   flips are a function of (seed, epoch, image)); a run still going at the budget is stopped with
   SIGTERM (the trainer checkpoints) and reported as far as it got;
5. results: accuracy per epoch, final top-1, grown-weight survival, IoU of Theta_K between updates,
   training FLOPs, images/s (alone and concurrent) beside the paper's Table 3 row, in
   `gpu_paper.md` / `gpu_paper.json` under `--out` (with `gpu_paper.log` and `details.tar.gz`).

`--dry-run` runs every stage on this CPU at tiny size (a few images, one short epoch): the
pipeline check in the suite (tests/test_gpu_paper.py). Its numbers are not GPU numbers.

    python -m benchmarks.gpu_paper --data .gpu-data/cifar10-jpeg.tar.gz --out $OUT   # on the GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gpu_check import Header, utc_now

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE3 = {"dense": 94.6, "static": 91.6, "rigl": 92.9, "iee": 93.6}
"""Table 3, WRN-22-2 on CIFAR-10 at 90% sparsity, 250 epochs: top-1 %."""
PAPER_EPOCHS = 250
MIN_IEE_UPDATES = 15  # keep the paper's H = J = Q = 150 only if this many IEE updates fit
PAPER_HJQ = (150, 150, 150)
PAPER_DELTA_T = 100
UPDATE_END = 0.75
ARMS = ("static", "rigl", "iee")  # trained concurrently; dense is timed for images/s only
SAFETY = 1.15  # epoch-time margin for evaluation, start-up and contention


@dataclass(frozen=True)
class Protocol:
    """The paper's hyper-parameters and this mode's sizes."""

    mode: str
    device: str
    resolution: int = 32
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    sparsity: float = 0.9
    distribution: str = "erk"
    seed: int = 0
    subset: int | None = None  # training images (None: all 50,000)
    budget_s: float = 480.0  # the whole script
    train_share: float = 0.75  # of what is left after the throughput phase, for the concurrent runs
    probe_steps: int = 120  # timed steps per arm in the throughput phase
    probe_warmup: int = 20
    probe_hjq: tuple[int, int, int] = (30, 30, 30)  # IEE stages inside the throughput phase
    max_epochs: int = PAPER_EPOCHS


GPU = Protocol(mode="gpu", device="cuda")
DRY_RUN = Protocol(mode="dry-run", device="cpu", resolution=16, batch=8, subset=40, budget_s=240.0, probe_steps=12,
                   probe_warmup=2, probe_hjq=(3, 3, 3), max_epochs=2)


@dataclass
class Record(Header):
    """gpu_paper.json: protocol, throughput, schedule and the runs' results beside the paper's."""

    protocol: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=lambda: {"epochs": PAPER_EPOCHS, "top1": PAPER_TABLE3})
    seconds: float = 0.0


# --- pure helpers (exact tests in tests/test_gpu_paper.py) ---------------------------------------------


def concurrent_epoch_s(rates: Mapping[str, float], images: int, arms: Sequence[str] = ARMS) -> float:
    """Seconds of one epoch of `arms` sharing one GPU: the sum of their epoch times alone (the GPU is the bottleneck)."""
    return sum(images / rates[arm] for arm in arms)


def size_schedule(epoch_s: float, train_s: float, steps_per_epoch: int, max_epochs: int = PAPER_EPOCHS) -> dict[str, Any]:
    """Whole epochs that fit `train_s` (at least 1, at most `max_epochs`), and whether the paper's IEE period keeps >= 15 updates.

    Returns epochs, steps, the update window and the IEE updates at H = J = Q = 150, and the
    `--hjq` / `--delta-t` options: the paper's when they fit, else the library's short-run rule (auto).
    """
    epochs = min(max_epochs, max(1, math.floor(train_s / (epoch_s * SAFETY))))
    steps = epochs * steps_per_epoch
    window = math.floor(UPDATE_END * steps + 1e-9)
    updates = window // sum(PAPER_HJQ)
    paper = updates >= MIN_IEE_UPDATES
    return {"epochs": epochs, "steps": steps, "update_window": window, "paper_period_updates": updates,
            "paper_period": paper, "hjq": ",".join(map(str, PAPER_HJQ)) if paper else "auto",
            "delta_t": str(PAPER_DELTA_T) if paper else "auto",
            "rule": (f"{updates} >= {MIN_IEE_UPDATES} IEE updates of 450 steps fit the {window}-step update window: "
                     "the paper's H = J = Q = 150 and RigL dT = 100") if paper else
                    (f"only {updates} < {MIN_IEE_UPDATES} IEE updates of 450 steps fit the {window}-step update window: "
                     "the library's short-run rule (--hjq auto, --delta-t auto)")}


def step_classes(costs: Sequence[str], updates: Sequence[bool]) -> list[str]:
    """'update' (a structure change at the step), 'explore' (a dense step cost) or 'sparse', per step."""
    return ["update" if u else "sparse" if c == "sparse" else "explore" for c, u in zip(costs, updates)]


def epoch_accuracies(metrics: Sequence[Mapping[str, Any]]) -> list[float]:
    """Validation top-1 (%) after each epoch, from a run's metrics.jsonl records."""
    return [100 * r["val_acc"] for r in metrics if r.get("type") == "epoch"]


# --- stages --------------------------------------------------------------------------------------------


def prepare_data(source: Path, work: Path) -> Path:
    """The folder holding train/ and test/: `source` itself, or `source` (.tar.gz) unpacked into `work`."""
    if source.is_dir():
        return source
    target = work / "data"
    if not (target / "done").is_file():
        with tarfile.open(source) as tar:
            tar.extractall(target, filter="data")
        (target / "done").write_text("")
    for candidate in (target, *sorted(p for p in target.iterdir() if p.is_dir())):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise SystemExit(f"'{source}' holds no train/ and test/ folders")


def arm_config(arm: str, p: Protocol, hjq: tuple[int, int, int] | None, delta_t: int | None) -> Any:
    from iee_deploy.methods import SparsityConfig

    if arm == "dense":
        return SparsityConfig(method="static", sparsity=0.0, distribution=p.distribution)
    return SparsityConfig(method=arm, sparsity=p.sparsity, distribution=p.distribution,
                          hjq=hjq if arm == "iee" else None, delta_t=delta_t if arm == "rigl" else None,
                          update_end=UPDATE_END)


def measure_throughput(p: Protocol, data_dir: Path, log: Any) -> dict[str, Any]:
    """Images/s of dense, static, RigL and IEE steps on the decoded images held on the device, side by side."""
    import torch

    from iee_deploy.data import build_datasets
    from iee_deploy.distributed import Distributed
    from iee_deploy.methods import TrainContext, build_method
    from iee_deploy.models import build_model
    from iee_deploy.train import train_step
    from iee_deploy.train.data import ResumableBatchSampler
    from iee_deploy.train.device_data import DeviceImages, DeviceTrainLoader

    device = torch.device(p.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the dry run: one thread per process on a small shared machine
    start = time.perf_counter()
    bundle = build_datasets("cifar10", data_dir, p.resolution, p.subset)
    data = DeviceImages.from_dataset(bundle.train, device)
    assert data is not None, "CIFAR-10 at 32 px is held in memory"
    decode_s = time.perf_counter() - start
    log(f"decoded {len(data)} training images in {decode_s:.1f} s onto {device}")
    steps = p.probe_warmup + p.probe_steps
    results: dict[str, Any] = {"decode_s": round(decode_s, 1), "train_images": len(data), "batch": p.batch,
                               "timed_steps": p.probe_steps, "warmup_steps": p.probe_warmup, "probe_hjq": p.probe_hjq,
                               "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                               "memory_format": "channels_last", "arms": {}}
    for arm in ("dense", "static", "rigl", "iee"):
        torch.manual_seed(p.seed)
        model = build_model("wrn22_2", bundle.num_classes, p.resolution).to(device).to(memory_format=torch.channels_last)
        # RigL updates every 30 steps here so that update steps fall inside the timed window
        method = build_method(arm_config(arm, p, p.probe_hjq, max(3, p.probe_steps // 4)), model,
                              Distributed(device=device), p.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        method.setup(TrainContext(steps, optimizer))
        sampler = ResumableBatchSampler(len(data), p.batch, p.seed)
        loader = DeviceTrainLoader(data, sampler, p.seed)
        clock = StepClock(device)
        costs, updates = [], []
        step = 0
        epoch = 0
        while step < steps:
            sampler.set_position(epoch, 0)
            for images, labels in loader:
                if step == steps:
                    break
                clock.mark()
                costs.append(method.step_cost(step).value)
                result = train_step(model, method, optimizer, step, images, labels)
                updates.append(bool(result.records))
                step += 1
            epoch += 1
        clock.mark()
        durations = clock.durations_s()[p.probe_warmup:]
        classes = step_classes(costs, updates)[p.probe_warmup:]
        by_class = {c: [d for d, k in zip(durations, classes) if k == c] for c in ("sparse", "explore", "update")}
        results["arms"][arm] = {
            "images_per_s": p.batch * len(durations) / sum(durations),
            "median_step_ms": 1e3 * statistics.median(durations),
            **{f"median_{c}_step_ms": (1e3 * statistics.median(v) if v else None) for c, v in by_class.items()},
            **{f"{c}_steps": len(v) for c, v in by_class.items()},
        }
        log(f"{arm}: {results['arms'][arm]['images_per_s']:.0f} images/s, median step "
            f"{results['arms'][arm]['median_step_ms']:.2f} ms")
        del model, method, optimizer
    a = results["arms"]
    if a["iee"]["median_sparse_step_ms"] and a["static"]["median_sparse_step_ms"]:
        results["iee_sparse_step_vs_static"] = a["iee"]["median_sparse_step_ms"] / a["static"]["median_sparse_step_ms"]
    results["steps_per_epoch"] = len(ResumableBatchSampler(len(data), p.batch))
    return results


class StepClock:
    """Step boundaries: CUDA events on a GPU (no host synchronisation until the end), the host clock on a CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []
        self._torch = torch

    def mark(self) -> None:
        if self.cuda:
            event = self._torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def durations_s(self) -> list[float]:
        if self.cuda:
            self._torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def train_command(arm: str, p: Protocol, data_dir: Path, schedule: Mapping[str, Any], out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "iee_deploy", "train", "--model", "wrn22_2", "--dataset", "cifar10",
           "--data-dir", str(data_dir), "--resolution", str(p.resolution), "--method", arm,
           "--sparsity", str(p.sparsity), "--distribution", p.distribution, "--batch-size", str(p.batch),
           "--lr", str(p.lr), "--momentum", str(p.momentum), "--weight-decay", str(p.weight_decay),
           "--epochs", str(schedule["epochs"]), "--update-end", str(UPDATE_END), "--seed", str(p.seed),
           "--device", p.device, "--no-progress", "--out", str(out)]
    if p.subset is not None:
        cmd += ["--subset", str(p.subset)]
    if arm == "iee":
        cmd += ["--hjq", schedule["hjq"]]
    if arm == "rigl":
        cmd += ["--delta-t", schedule["delta_t"]]
    return cmd


def run_concurrently(commands: Mapping[str, list[str]], work: Path, deadline: float, log: Any,
                     threads: int | None = None) -> dict[str, Any]:
    """Start every command at once; SIGTERM any still running at `deadline` (it checkpoints and stops).

    `threads`: intra-op CPU threads per process (the CPU dry run: 1), else torch's default.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
               PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with contextlib.ExitStack() as logs:
        procs = {}
        for arm, cmd in commands.items():
            log(f"$ {shown(cmd)}")
            output = logs.enter_context(open(work / f"{arm}.log", "w"))
            procs[arm] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        return _wait(procs, deadline, log)


def _wait(procs: dict[str, subprocess.Popen[bytes]], deadline: float, log: Any) -> dict[str, Any]:
    status: dict[str, Any] = {}
    while procs:
        for arm, proc in list(procs.items()):
            if proc.poll() is not None:
                status[arm] = {"returncode": proc.returncode, "stopped_at_budget": False}
                log(f"{arm}: finished ({proc.returncode})")
                del procs[arm]
        if procs and time.time() > deadline:
            for arm, proc in procs.items():
                log(f"{arm}: stopped at the budget (SIGTERM: it checkpoints and exits)")
                proc.send_signal(signal.SIGTERM)
            for arm, proc in procs.items():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                status[arm] = {"returncode": proc.returncode, "stopped_at_budget": True}
            procs = {}
        time.sleep(0.5)
    return status


def shown(cmd: Sequence[str]) -> str:
    return shlex.join(["python", *[os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd[1:]]])


def read_run(out: Path, batch: int) -> dict[str, Any]:
    """What a run folder says: accuracy per epoch, final top-1, survival, IoU, FLOPs, H/J/Q or dT, images/s."""
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    epochs = [r for r in metrics if r.get("type") == "epoch"]
    run: dict[str, Any] = {"epoch_top1": epoch_accuracies(metrics), "finished": (out / "summary.json").is_file()}
    if epochs:
        last = epochs[-1]
        run.update(top1=100 * last["val_acc"], steps=last["step"] + 1, seconds=last["seconds"],
                   images_per_s_concurrent=batch * (last["step"] + 1) / last["seconds"], train_flops=last["train_flops"])
    if run["finished"]:
        s = json.loads((out / "summary.json").read_text())
        st = s["structure"]
        run.update(top1=100 * s["val_acc"], best_top1=100 * s["best_val_acc"], settings=s["settings"],
                   sparsity=s["sparsity"]["achieved"], train_flops=s["flops"]["train_total"],
                   train_flops_relative=s["flops"]["train_relative"], survival=st["mean_survival"],
                   iou_after_prune=st["iou_after_prune"], iou_after_grow=st["iou_after_grow"],
                   prunes=st["prunes"], grows=st["grows"])
    return run


def render(r: Record) -> str:
    env, sched, thr = r.environment, r.schedule, r.throughput
    device = env.get("device", "?")
    lines = ["# The paper's CIFAR-10 WRN-22-2 protocol on one GPU: static vs RigL vs IEE", ""]
    if r.mode == "dry-run":
        lines += ["**Dry run on a CPU at tiny size**: a pipeline check of the script. No figure here is a GPU "
                  "figure or a CIFAR-10 result.", ""]
    pr = r.protocol
    lines += [f"- Date (UTC): {r.date}; commit {r.commit}; {r.seconds:.0f} s in all; command `{r.command}`",
              f"- Device: {device}; driver {env.get('driver') or '-'}; CUDA {env.get('cuda') or '-'}; cuDNN "
              f"{env.get('cudnn') or '-'}; torch {env.get('torch')}; python {env.get('python')}",
              f"- Protocol: WRN-22-2, CIFAR-10 (JPEG copies: fine side by side, not comparable with published "
              f"numbers), {pr['sparsity']:.0%} {pr['distribution'].upper()}, batch {pr['batch']}, lr {pr['lr']}, momentum "
              f"{pr['momentum']}, weight decay {pr['weight_decay']}, updates end at {UPDATE_END}, seed {pr['seed']} "
              f"for every run (same initial weights, data order and augmentation)", ""]
    if thr:
        lines += [f"Throughput alone, one after another in one process ({device}, {thr['precision']}, "
                  f"{thr['memory_format']}, batch {thr['batch']}, {thr['timed_steps']} timed steps after "
                  f"{thr['warmup_steps']}; images decoded once in {thr['decode_s']} s and held on the device):", "",
                  "| arm | images/s | median step ms | median sparse step ms | explore steps | update steps |",
                  "|---|---|---|---|---|---|"]
        for arm, a in thr["arms"].items():
            sparse = a["median_sparse_step_ms"]
            lines.append(f"| {arm} | {a['images_per_s']:.0f} | {a['median_step_ms']:.2f} | "
                         f"{'-' if sparse is None else f'{sparse:.2f}'} | {a['explore_steps']} | {a['update_steps']} |")
        ratio = thr.get("iee_sparse_step_vs_static")
        lines += ["", f"IEE's sparse step / static's step (medians, outside explore and update steps): "
                      f"{'-' if ratio is None else f'{ratio:.3f}x'} (acceptance <= 1.15x).", ""]
    if sched:
        lines += [f"Schedule: {sched['epochs']} epoch(s) = {sched['steps']} steps of batch {pr['batch']} "
                  f"(sized from a concurrent epoch time of {sched['epoch_s']:.1f} s to {sched['train_s']:.0f} s); "
                  f"{sched['rule']}.", ""]
    if r.runs:
        lines += [f"Results after {sched.get('epochs', '?')} epoch(s) vs the paper's Table 3 at {PAPER_EPOCHS} epochs "
                  f"(top-1 %, {device}, {thr.get('precision', '-')}):", "",
                  "| arm | top-1 % (this run) | paper 250 ep | best | survival | IoU after prune (mean) | "
                  "train FLOPs (x dense) | images/s concurrent (with evaluation) | per-epoch top-1 |", "|---|---|---|---|---|---|---|---|---|"]
        lines.append(f"| dense | - | {PAPER_TABLE3['dense']} | - | - | - | 1 | - | - |")
        for arm in ARMS:
            run = r.runs.get(arm, {})
            iou = run.get("iou_after_prune") or []
            lines.append(
                f"| {arm} | {_num(run.get('top1'))} | {PAPER_TABLE3[arm]} | {_num(run.get('best_top1'))} | "
                f"{_num(None if run.get('survival') is None else 100 * run['survival'])} | "
                f"{_num(100 * statistics.fmean(iou) if iou else None)} | {_num(run.get('train_flops_relative'), 3)} | "
                f"{_num(run.get('images_per_s_concurrent'), 0)} | {', '.join(f'{a:.1f}' for a in run.get('epoch_top1', []))} |")
        order = [a for a in ARMS if r.runs.get(a, {}).get("top1") is not None]
        if len(order) == len(ARMS):
            t = {a: r.runs[a]["top1"] for a in ARMS}
            held = t["iee"] > t["rigl"] > t["static"]
            lines += ["", f"IEE > RigL > static {'held' if held else 'did not hold'} at this schedule: IEE - RigL "
                          f"{t['iee'] - t['rigl']:+.2f} points, RigL - static {t['rigl'] - t['static']:+.2f} points "
                          f"(one seed: no confidence interval)."]
        lines.append("")
    lines += ["Commands (from the repository root):", ""] + [f"    {c}" for c in sched.get("commands", [])]
    return "\n".join(lines) + "\n"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> Record:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 JPEG copies: the .tar.gz or a folder with train/ and test/ "
                                                     "(default: .gpu-data/cifar10-jpeg.tar.gz, else ../shared/data/...)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-paper", help="results folder (default $OUT)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="every stage on this CPU at tiny size")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget of the whole script (default 480)")
    parser.add_argument("--wheels", default=None, help="folder of carried wheels to install first (the GPU machine: .whl)")
    args = parser.parse_args(argv)
    p = DRY_RUN if args.dry_run else GPU
    if args.budget_s is not None:
        p = Protocol(**{**asdict(p), "budget_s": args.budget_s})
    candidates = [Path(args.data)] if args.data else [ROOT / ".gpu-data" / "cifar10-jpeg.tar.gz",
                                                      ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise SystemExit(f"no CIFAR-10 data at {', '.join(map(str, candidates))}: pass --data "
                         "(copy ../shared/data/cifar10-jpeg.tar.gz into .gpu-data/ and carry it)")
    command = shlex.join(["python", "-m", "benchmarks.gpu_paper", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="gpu-paper-") as tmp:
        return run(p, source, Path(args.out), Path(args.work or tmp), command, Path(args.wheels) if args.wheels else None)


def run(p: Protocol, source: Path, out: Path, work: Path, command: str, wheels: Path | None = None) -> Record:
    from benchmarks.common import git_commit
    from benchmarks.gpu_check import SITE, Log, environment, install_wheels
    from iee_deploy.io import write_json, write_text

    started = time.time()
    deadline = started + p.budget_s
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu_paper.log"
    log_path.write_text("")
    log = Log(log_path).line
    if wheels is not None:
        log(install_wheels(wheels, Log(log_path)))  # the carried wheels, for this process and the training runs
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))

    record = Record(mode=p.mode, date=utc_now(), command=command, commit=git_commit(), protocol=asdict(p),
                    environment=environment(p.mode))

    def save() -> None:
        record.seconds = round(time.time() - started, 1)
        write_json(out / "gpu_paper.json", asdict(record))
        write_text(out / "gpu_paper.md", render(record))

    log("environment: " + json.dumps(record.environment))
    data_dir = prepare_data(source, work)
    record.throughput = measure_throughput(p, data_dir, log)
    save()
    left = deadline - time.time()
    train_s = p.train_share * left
    images = record.throughput["steps_per_epoch"] * p.batch
    rates = {arm: a["images_per_s"] for arm, a in record.throughput["arms"].items()}
    epoch_s = concurrent_epoch_s(rates, images)
    record.schedule = {**size_schedule(epoch_s, train_s, record.throughput["steps_per_epoch"], p.max_epochs),
                       "epoch_s": epoch_s, "train_s": train_s}
    log(f"schedule: {json.dumps(record.schedule)}")
    commands = {arm: train_command(arm, p, data_dir, record.schedule, work / arm) for arm in ARMS}
    record.schedule["commands"] = [shown(c) for c in commands.values()]
    save()
    status = run_concurrently(commands, work, deadline - 30, log, threads=1 if p.device == "cpu" else None)
    for arm in ARMS:
        record.runs[arm] = {**read_run(work / arm, p.batch), **status.get(arm, {})}
    save()
    with tarfile.open(out / "details.tar.gz", "w:gz") as tar:
        for path in sorted(work.glob("*/*")) + sorted(work.glob("*.log")):
            if path.suffix in (".json", ".jsonl", ".md", ".log") and path.is_file():
                tar.add(path, arcname=str(path.relative_to(work)))
    log(f"wrote {out}/gpu_paper.md and gpu_paper.json in {record.seconds:.0f} s")
    return record


if __name__ == "__main__":
    main()
