"""Head to head at equal MEASURED latency: our latency knapsack (IEE, HALP) against Torch-Pruning, Model Optimizer,
a FLOPs-costed knapsack and a slimmer network.

    PYTHONPATH=. python -m benchmarks.head_to_head            # full mode (about 7 h on 2 idle cores: see the sizing)
    PYTHONPATH=. python -m benchmarks.head_to_head --plateau-only [--dense-epochs D]  # the dense plateau check alone
    PYTHONPATH=. python -m benchmarks.head_to_head --quick    # a pipeline check: tiny data, 1 seed, every arm and budget
    PYTHONPATH=. python -m benchmarks.head_to_head --tiny     # the test suite's check: one budget is enough

A deployment engineer with a trained model and a latency budget can prune it with Torch-Pruning,
train a slimmer network from scratch, or use this toolkit. Every arm here starts from the same
dense checkpoint (trained once per architecture) and gets the same fine-tuning (data, crop + flip,
SGD momentum 0.9, wd 5e-4, cosine, epochs, paired seeds), then its ONNX Runtime engine is timed on
the `cpu` target's settings (batch 1, one thread, fastest run) beside the dense engine and every
other arm's, in alternating rounds (`runtime.timing.measure`). Budgets are fractions of the dense
engine's measured latency.

Arms:
- `iee`, `halp`: ours (`iee-deploy train --method iee|halp --latency-ratio r` against the `cpu`
  LUT, whose channel grid is measured on this CPU: `profiler.blocking`);
- `halp-flops`: the same knapsack (HALP) against the FLOPs table of that LUT's grid
  (`profiler.flops_table`: MACs as the cost, the same channel multiples): what measuring buys.
  A knapsack arm's ratio r is aimed at the budget by bisection on the measured latency of the
  knapsack's one-shot structure (`knapsack_once`); HALP then prunes in steps while it trains, so its
  final engine can land off the budget: the table reports its re-timed latency as it is;
- `tp-mag`, `tp-mag-global`, `tp-taylor`, `tp-taylor-global`: Torch-Pruning's `MetaPruner` with
  `GroupMagnitudeImportance` (L2) or `GroupTaylorImportance`, `global_pruning` off / on, `ITERATIVE_STEPS`
  iterative steps and `round_to` = the target's measured channel multiple (8 on this CPU: the finest
  width the runtime computes fast, which is what round_to asks for); its pruning ratio is found by
  bisection on the MEASURED latency of its engine (within `MATCH` of the budget; the same timing code).
  Where no ratio at that multiple lands within `MATCH` (its widths step past the budget on a small
  network), the bisection runs again at half the multiple, down to 1 (`alignments`): the coarsest
  multiple that meets the budget, as a user held to the budget would choose; the same rule for every
  external arm and the slimmer network;
- `modelopt-fastnas`: NVIDIA Model Optimizer's `mtp.prune` (FastNAS) under a FLOPs constraint, with
  widths in multiples of the same channel multiple, its FLOPs fraction bisected like Torch-Pruning's
  (the same finer multiples where it cannot reach the budget);
- `slim`: the dense architecture with every channel group uniformly narrower (multiples of the same
  channel multiple, or the finer ones), its keep ratio found by the same bisection, trained from scratch
  for the dense run's epochs plus the fine-tuning epochs;
- `north-star`: HALP at the 0.5 budget fine-tuned for 10% of the dense model's training FLOPs.

Our knapsack arms' aim is calibrated on their final engines: seed 0 runs first (the pilot); when its final engine misses
the budget by more than MATCH, every seed runs at the ratio scaled by budget / measured (`calibrated_ratio`).
Then every arm alike gets one second aim where a seed's final engine, timed side by side, misses the budget by more
than MATCH: ours scale the ratio again on the seeds' mean, the others bisect theirs again (`second_aims`).
Our knapsack cells whose seeds' mean still misses on the report's timing get a third aim: the line through every
final engine the cell has had (`solvers.aim.next_aim`), since the final latency moves faster than the aim on a depthwise net.
Those still missing then run every seed under the library's measured budget (`--measure-budget`) at the budget itself:
each run re-aims its own last prune on engines it times here (`iee_deploy.structured.measured`).

Plateau checks: the dense model at 0.75 of its epochs, and HALP fine-tuned for 0.75 of the epochs,
each against the full length, paired by seed (every seed; the mean within 0.3 points: plateaued). Each
architecture trains for its own D (`Mode.dense_epochs_of`); `--plateau-only` runs just the dense check (probe another
D with `--dense-epochs D` and other `--runs` and `--results` folders: the records name their commands).

Resumable anywhere: every finished step (the LUT, the dense model, each bisection, each run) leaves a
small JSON record under benchmarks/results/head_to_head[_quick]_runs/<model>/, committed with the
results. A step with a record is not run again; a fresh clone resumes where the records end (the dense
model's weights are recorded too, `dense.pt`, and checked against the record's digest) and
rebuilds the report from the records alone. The report times every engine as its recorded structure
with re-drawn weights (`benchmarks.common.onnx_structure`); where the trained dense engine is at hand
it is timed beside its structure, as a check. That timing (`TIMING_PASSES` side-by-side passes) is a record too
(`timing.json`), reused while it timed the same engines, so a fresh clone's report reads as measured; `--retime`
times them again. Writes benchmarks/results/head_to_head[_quick].md, .json and .png (`--tiny`: only into --results).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from benchmarks.common import (
    PLATEAU_POINTS,
    RESULTS,
    ROOT,
    budget_folder,
    cifar10_subset,
    cpu_session,
    engine_top1,
    finished,
    folder_budget,
    format_difference,
    header,
    header_markdown,
    image_batches,
    markdown_table,
    onnx_from_structure,
    onnx_structure,
    paired_difference,
    plateaued,
    run_parallel,
    shown_command,
    single_thread_env,
    train_command,
    write_json,
    write_results,
)
from iee_deploy.graph import build_dependency_graph, prune_model
from iee_deploy.methods.schedule import update_window
from iee_deploy.runs import RunFolder
from iee_deploy.structured.costs import smallest_count, uniform_counts, unit_multiple
from profiler.flops_table import flops_table
from profiler.lut import read_meta
from runtime.export import export_onnx
from runtime.machine import machine_info, same_machine
from runtime.progress import progress
from runtime.timing import TimingConfig, lowest, measure, rounds_of
from solvers.aim import next_aim, within

if TYPE_CHECKING:
    from iee_deploy.structured.space import ChannelSpace

MATCH = 0.02
"""Every arm's measured latency must be within this fraction of the budget (re-timed side by side)."""
ITERATIVE_STEPS = 5
"""Torch-Pruning's iterative steps (its docs' recommended iterative pruning) from dense to the ratio."""
TP_ARMS = {"tp-mag": ("magnitude", False), "tp-mag-global": ("magnitude", True), "tp-taylor": ("taylor", False),
           "tp-taylor-global": ("taylor", True)}
MODELOPT = "modelopt-fastnas"
"""NVIDIA Model Optimizer's `mtp.prune` (FastNAS) under a FLOPs constraint, bisected on measured latency like Torch-Pruning."""
KNAPSACK_ARMS = {"iee": "latency", "halp": "latency", "halp-flops": "flops"}
"""Our arms and the cost their knapsack prunes against: the measured LUT, or the FLOPs table of its grid."""
NORTH_STAR = "north-star"
NORTH_STAR_BUDGET = 0.5
NORTH_STAR_COST = 0.10  # of the dense model's training FLOPs
HALP_UPDATE_END = 0.25  # HALP prunes in the first quarter of its fine-tuning (the paper's schedule)
FINETUNE_CHECK = "halp-0.75E"
"""HALP fine-tuned for 0.75 of the epochs, seed 0: within PLATEAU_POINTS of HALP at E, the fine-tuning has plateaued."""
OURS = (*KNAPSACK_ARMS, NORTH_STAR, FINETUNE_CHECK)
"""Arms trained by `iee-deploy train` (their engine is exported from the run folder)."""
DIVERGED = "diverged.txt"
"""Written into an external arm's run folder when its fine-tuning diverged (NaN loss): the row reports it."""


@dataclass(frozen=True)
class Mode:
    """How big the benchmark is (the full mode's sizing is in `markdown`)."""

    name: str
    train_per_class: int
    val_per_class: int
    dense_epochs: int
    epochs: int
    seeds: int
    delta_t: int  # steps between HALP's prunes (and IEE's descent's)
    match_seconds: float  # engine timing per bisection probe (s)
    report_seconds: float  # engine timing per arm in the side-by-side report timing (s)
    bisect_steps: int  # at most this many probes per bisection (it stops within MATCH / 2)
    batch_size: int = 64
    calibration_images: int = 64  # the fixed training images Taylor importance and the one-shot knapsack score on
    external_arms: tuple[str, ...] = (*TP_ARMS, MODELOPT)  # other tools' pruning, from the same checkpoint
    in_process: bool = False  # train in this process, one run at a time (a process start costs more than a tiny run)
    measured_budgets: bool = True  # cells still outside after their last aim run under the measured budget
    dense_epochs_by_model: tuple[tuple[str, int], ...] = ()  # an architecture's own D where `dense_epochs` is short
    test_per_class: int = 1000  # top-1 is measured on this many CIFAR-10 test images per class (1000: all of them)

    def dense_epochs_of(self, model: str) -> int:
        """D, the dense training epochs of `model`: long enough for its plateau check (`dense_epochs_by_model`, else
        `dense_epochs`)."""
        return dict(self.dense_epochs_by_model).get(model, self.dense_epochs)

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm of this mode at every budget (the north star comes on top, at its one budget)."""
        return (*KNAPSACK_ARMS, *self.external_arms, "slim")


QUICK = Mode("quick", train_per_class=20, val_per_class=5, dense_epochs=4, epochs=2, seeds=1, delta_t=1,
             match_seconds=0.05, report_seconds=0.1, bisect_steps=5, batch_size=32, calibration_images=32,
             test_per_class=20)
TINY = Mode("tiny", train_per_class=10, val_per_class=5, dense_epochs=4, epochs=2, seeds=1, delta_t=1,
            match_seconds=0.02, report_seconds=0.05, bisect_steps=2, batch_size=16, calibration_images=16, external_arms=("tp-mag",),
            test_per_class=10,
            in_process=True, measured_budgets=False)
"""The test's pipeline check: one Torch-Pruning variant, two probes per bisection (its matches are not the point), no
measured budgets (they would time every engine three more times; tests/test_measured_budget.py checks them)."""
FULL = Mode("full", train_per_class=200, val_per_class=100, dense_epochs=100, epochs=15, seeds=3, delta_t=10,
            match_seconds=0.5, report_seconds=3.0, bisect_steps=12, dense_epochs_by_model=(("resnet20", 300),))
"""Dense 100 epochs (mobilenet_v3_small: 0.75 D minus D -0.33 points over 3 seeds) and 300 for resnet20, which was
still climbing at 100 (0.75 D minus D -2.17 points), 150 and 200 (seed 0: 61.8%, 63.1%, 64.9%; its training accuracy
reaches 100% at about 0.8 of the schedule)."""


def result_name(mode: Mode) -> str:
    """The results files' name: head_to_head (full mode) or head_to_head_<mode>; the run records are in <name>_runs/."""
    return "head_to_head" if mode is FULL else f"head_to_head_{mode.name}"


def base_train(model: str, data: Path, epochs: float, seed: int, args: argparse.Namespace, lr: float) -> list[str]:
    return ["python", "-m", "iee_deploy", "train", "--model", model, "--dataset", "cifar10", "--data-dir",
            str(data.relative_to(ROOT)), "--epochs", f"{epochs:g}", "--batch-size", str(args.batch_size), "--lr",
            str(lr), "--seed", str(seed)]


def shown_path(path: Path) -> str:
    """`path` as the results file shows it: relative to the repository root when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def profile_lut(model: str, lut: Path, log: list[str], precision: str = "fp32") -> Path:
    """The cpu-target LUT of `model` at 32 px with the measured channel grid, measured into `lut` unless complete there
    (it lives with the run records: a resumed benchmark keeps the table its finished runs pruned against).
    `precision` int8 times every layer as its quantized graph."""
    cmd = ["python", "-m", "iee_deploy", "profile", "--target", "cpu", "--model", model, "--num-classes", "10",
           "--resolution", "32", *([] if precision == "fp32" else ["--precision", precision]), "--out", shown_path(lut)]
    log.append(shown_command(cmd))
    if not (lut.with_suffix(".json").is_file() and read_meta(lut).complete):
        lut.parent.mkdir(parents=True, exist_ok=True)
        resume = ["--resume"] if lut.exists() else []
        subprocess.run([sys.executable, *cmd[1:], *resume], env=single_thread_env(), cwd=ROOT, check=True)
    return lut


# --- engines -------------------------------------------------------------------------------------
def time_side_by_side(onnx: dict[str, Path], seconds: float, int8: Collection[str] = (),
                      desc: str | None = None, resolution: int = 32) -> dict[str, float]:
    """Fastest-run latency (ms) of every engine on the cpu target (`cpu_session`), timed for `seconds` each in
    alternating rounds (noise hits them alike), on one `resolution` x `resolution` image. The engines named in `int8`
    are QDQ graphs, checked to run as integer kernels. With `desc`, the rounds' progress is shown under that name (a
    report's timing takes minutes)."""
    config = TimingConfig(warmup_s=0.05, min_iterations=10, min_seconds=seconds, rounds=5, warmup=2)
    x = torch.zeros(1, 3, resolution, resolution).numpy()
    runners = {name: cpu_session(path, "int8" if name in int8 else "fp32", resolution).runner(x)
               for name, path in onnx.items()}
    with progress(total=rounds_of(config) * len(runners), desc=desc or "", unit="share", enabled=desc is not None) as bar:
        return {name: t.min_ms for name, t in measure(runners, 1, config, step_done=bar.update).items()}


EXPORTING = threading.Lock()
"""torch.onnx.export keeps global state: runs finishing together in `run_parallel`'s threads export one at a time."""


def exported(model: nn.Module, path: Path) -> Path:
    with EXPORTING:
        return export_onnx(model.eval().cpu(), path, 32)


# --- the external arms: Torch-Pruning and a slimmer network ---------------------------------------
def calibration_batch(data: Path, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `images` training images as training sees them (cropped, flipped, normalised), their augmentation
    drawn from seed `CALIBRATION_SEED`: Taylor importance's and FastNAS's data, the same batch in the bisection and
    in every run's worker whatever the process's random state (an unseeded draw gave each process its own batch,
    so a Taylor or FastNAS structure moved between the bisection and the runs)."""
    from iee_deploy.data import build_datasets

    bundle = build_datasets("cifar10", data, 32)
    with torch.random.fork_rng(devices=[]):  # the augmentation draws from the CPU generator only
        torch.manual_seed(CALIBRATION_SEED)
        pairs = [bundle.train[i] for i in range(min(images, len(bundle.train)))]
    return torch.stack([x for x, _ in pairs]), torch.tensor([int(y) for _, y in pairs])


def uses_batch(arm: str) -> bool:
    """Whether an external arm's structure depends on the calibration batch (Taylor importance, FastNAS), not on the
    dense weights and its ratio alone."""
    return arm == MODELOPT or TP_ARMS.get(arm, ("",))[0] == "taylor"


def tp_prune(model: nn.Module, ratio: float, importance: str, global_pruning: bool, round_to: int,
             batch: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """Torch-Pruning as its docs recommend: MetaPruner, group importance, iterative steps, round_to (in place)."""
    import torch_pruning as tp

    images, labels = batch
    imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else tp.importance.GroupTaylorImportance()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(model, images[:1], importance=imp, global_pruning=global_pruning,
                                  pruning_ratio=ratio, iterative_steps=ITERATIVE_STEPS, round_to=round_to,
                                  ignored_layers=classifier)
    for _ in range(ITERATIVE_STEPS):
        if importance == "taylor":
            model.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
        pruner.step()
    model.zero_grad()
    return model


def modelopt_prune(model: nn.Module, flops: float, round_to: int, batch: tuple[torch.Tensor, torch.Tensor],
                   search: Path | None = None) -> nn.Module | None:
    """Model Optimizer's FastNAS as its docs show it: `mtp.prune` to `flops` of the dense FLOPs, widths in multiples of
    `round_to`, subnets scored by top-1 on the calibration batch (which also re-estimates BN statistics).

    `search`: FastNAS's search checkpoint for this dense model, batch and `round_to`, shared by every call. FastNAS reloads only
    its sensitivity map and the dense score from it (they do not depend on the constraint), so each bisection probe
    and fine-tuning run after the first skips the pre-search pass over every channel choice (twenty minutes a call
    for mobilenet_v2 on a shared CPU); the result is the same. Each call works on a private copy, and the first to
    finish publishes its checkpoint by an atomic rename.

    None when no subnet of its search space is that small (FastNAS refuses the constraint)."""
    import os
    import tempfile

    import modelopt.torch.prune as mtp

    images, labels = batch

    def score(net: nn.Module) -> float:
        net.eval()
        with torch.no_grad():
            return float((net(images).argmax(1) == labels).float().mean())

    mode = [("fastnas", {"nn.Conv2d": {"*": {"channel_divisor": round_to}},
                         "nn.BatchNorm2d": {"*": {"feature_divisor": round_to}}})]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "search.pth"
        if search is not None and search.is_file():
            shutil.copyfile(search, local)
        try:
            pruned, _ = mtp.prune(model, mode=mode, constraints={"flops": f"{100 * flops:.3f}%"}, dummy_input=images[:1],
                                  config={"data_loader": [(images, labels)], "score_func": score,
                                          "checkpoint": str(local)})
        except ValueError as err:
            if "constraints can be satisfied" in str(err):
                return None
            raise
        except (IndexError, RuntimeError) as err:  # inside FastNAS itself (its pre-search slices channels)
            raise ToolFailure(f"Model Optimizer's FastNAS fails at channel_divisor {round_to}: "
                              f"{type(err).__name__}: {err}") from err
        finally:
            if search is not None and not search.is_file() and local.is_file():
                part = search.with_name(f"{search.name}.{os.getpid()}.part")
                shutil.copyfile(local, part)
                os.replace(part, search)
    return pruned


def slim_model(model: nn.Module, keep: float, align: int) -> nn.Module:
    """The dense architecture with every channel group at `keep` of its width (multiples of `align`), re-initialised."""
    graph = build_dependency_graph(model, torch.zeros(1, 3, 32, 32))
    groups = graph.prunable_groups
    per_unit = {g.id: max((r.channels_per_unit for r in g.owners), default=1) for g in groups}
    multiple = {g.id: unit_multiple(per_unit[g.id], align) for g in groups}
    smallest = {g.id: smallest_count(g.size, g.min_keep, multiple[g.id]) for g in groups}
    counts = uniform_counts({g.id: g.size for g in groups}, smallest, multiple, keep)
    slim = prune_model(model, graph, {g.id: torch.arange(counts[g.id]) for g in groups})
    for m in slim.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and m is not slim:
            reset()
    return slim


def external_model(arm: str, model_name: str, checkpoint: Path, ratio: float, round_to: int,
                   batch: tuple[torch.Tensor, torch.Tensor]) -> nn.Module | None:
    """The starting network of an external or slim arm at `ratio` (pruning ratio, FLOPs kept, or the slim keep ratio);
    None when the tool cannot reach `ratio`."""
    from iee_deploy.models import build_model

    model = build_model(model_name, 10, 32, checkpoint)
    if arm == "slim":
        return slim_model(model, ratio, round_to)
    if arm == MODELOPT:  # one FastNAS search checkpoint per dense model, calibration batch and divisor, beside the model
        return modelopt_prune(model, ratio, round_to, batch,
                              checkpoint.parent / f"fastnas-search-{len(batch[0])}-d{round_to}.pth")
    importance, global_pruning = TP_ARMS[arm]
    return tp_prune(model, ratio, importance, global_pruning, round_to, batch)


class ToolFailure(Exception):
    """An external tool failed inside its own code at a channel multiple (not a ratio it cannot reach): the arm's
    bisection records the failure and goes on at the other multiples."""


CALIBRATION_SEED = 0
"""The seed of the calibration batch's augmentation (`calibration_batch`); a run's spec names it, so a record made with
another batch is not reused."""
VERIFIED = 3
"""How many of a bisection's nearest probes are timed again, as the report times, before one is the match."""


def alignments(start: int) -> list[int]:
    """The channel multiples an external arm's bisection tries, coarsest first: `start`, then each half of it down to 1.

    A multiple of 8 is what the runtime computes fastest, but on a small network its widths step past a budget (resnet20's
    first stage has 16 channels: 8 or 16 at a multiple of 8); a finer multiple is the user's way to meet the budget."""
    out = [start]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def nearest_match(tried: list[dict[str, Any]]) -> dict[str, Any]:
    """Of an external arm's bisections at several channel multiples, the one whose probe is nearest its budget; those
    where the tool failed (a "failed" record) are left out, and if every one failed, the first failure is raised."""
    ran = [m for m in tried if "failed" not in m]
    if not ran:
        raise ToolFailure(tried[0]["failed"])
    return min(ran, key=lambda m: abs(m["probe_ms"] / m["budget_ms"] - 1))


def bisect_ratio(latency_of: Callable[[float], float], budget_ms: float, shrinks: bool, iterations: int) -> tuple[float, float]:
    """The ratio whose measured latency is closest to `budget_ms` (bisection; `shrinks`: a larger ratio is faster)."""
    low, high = 0.0, 1.0
    best = (math.inf, 0.0, 0.0)
    for _ in range(iterations):
        mid = (low + high) / 2
        ms = latency_of(mid)
        best = min(best, (abs(ms / budget_ms - 1), mid, ms))
        if best[0] <= MATCH / 2:
            break
        if (ms > budget_ms) == shrinks:
            low = mid
        else:
            high = mid
    return best[1], best[2]


def match_ratio(net_of: Callable[[float], nn.Module | None], dense_onnx: Path, budget_ms: float, dense_ms: float,
                shrinks: bool, record: Path, work: Path, mode: Mode) -> dict[str, float]:
    """Bisect the ratio of `net_of` so that its engine's measured latency matches `budget_ms`, and write the match to
    `record` (probes go into `work`).

    Each probe is timed beside the dense engine and scaled to `dense_ms`, so a change of machine load
    between probes does not move the match. A ratio the tool cannot reach (`net_of` gives None: too few
    FLOPs for its search space) counts as 0 ms, so the bisection moves towards larger networks.

    The bisection's nearest reading is the luckiest of several short readings of near-equal structures, so it
    reads the budget too closely (mobilenet_v3_small's probes by 2-5%): the `VERIFIED` nearest ratios are timed
    again as the report times them (`report_seconds`), and the nearest of those is the match, with that reading.
    """
    work.mkdir(parents=True, exist_ok=True)

    def latency_of(ratio: float, seconds: float) -> float:
        net = net_of(ratio)
        if net is None:
            return 0.0
        probe = exported(net, work / "probe.onnx")
        ms = time_side_by_side({"probe": probe, "dense": dense_onnx}, seconds)
        return ms["probe"] / ms["dense"] * dense_ms

    probes: dict[float, float] = {}

    def probed(ratio: float) -> float:
        probes[ratio] = latency_of(ratio, mode.match_seconds)
        return probes[ratio]

    _, first = bisect_ratio(probed, budget_ms, shrinks, mode.bisect_steps)
    reached = sorted((r for r, ms in probes.items() if ms > 0), key=lambda r: abs(probes[r] / budget_ms - 1))
    verified = {r: latency_of(r, mode.report_seconds) for r in reached[:VERIFIED]}
    ratio = min(verified, key=lambda r: abs(verified[r] / budget_ms - 1), default=max(probes, key=probes.get))
    out = {"ratio": ratio, "probe_ms": verified.get(ratio, probes[ratio]), "bisection_probe_ms": first,
           "budget_ms": budget_ms}
    write_json(record, out)
    return out


def knapsack_space(model_name: str, checkpoint: Path | None, table: Path) -> tuple[nn.Module, ChannelSpace]:
    """The dense model and our channel space over it, costed by `table` (a measured LUT or its FLOPs table)."""
    from iee_deploy.models import build_model
    from iee_deploy.structured.budget import open_latency_model
    from iee_deploy.structured.space import ChannelSpace, Start

    model = build_model(model_name, 10, 32, checkpoint)
    space = ChannelSpace(model, open_latency_model(str(table), "cpu", model), latency_ratio=1.0, start=Start.DENSE)
    return model, space


def smallest_ratio(model_name: str, checkpoint: Path | None, table: Path) -> float:
    """The smallest `latency_ratio` the knapsack accepts on `table` (every group at its smallest width), rounded up."""
    from iee_deploy.models import build_model
    from iee_deploy.structured.space import smallest_latency_ratio

    return math.ceil(smallest_latency_ratio(build_model(model_name, 10, 32, checkpoint), str(table), "cpu") * 1e6 + 1) / 1e6


def knapsack_once(model_name: str, checkpoint: Path, table: Path, floor: float, ratio: float,
                  batch: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """Our knapsack in one shot: Taylor importance on the calibration batch, prune to `ratio` (at least `floor`) of the
    table's dense cost.

    The structure HALP would keep if it pruned at once; what aims a knapsack arm's `latency_ratio` at a
    measured latency (HALP prunes in steps while it trains, so its final engine is re-timed and reported).
    """
    model, space = knapsack_space(model_name, checkpoint, table)
    images, labels = batch
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    space.accumulate_importance()
    space.prune_to(max(ratio, floor) * space.dense_ms, 0, 0)
    return space.pruned_model(model)


def finetune_worker(spec_path: Path) -> None:
    """`--worker spec.json`: build the external arm's network, train it as every arm trains, export its ONNX."""
    from iee_deploy.methods.base import SparsityConfig
    from iee_deploy.train.config import TrainConfig
    from iee_deploy.train.trainer import Trainer

    torch.set_num_threads(1)
    spec = json.loads(spec_path.read_text())
    data = ROOT / spec["data"]
    net = external_model(spec["arm"], spec["model"], ROOT / spec["checkpoint"], spec["ratio"], spec["round_to"],
                         calibration_batch(data, spec["calibration_images"]))
    if net is None:
        raise SystemExit(f"{spec['arm']} cannot reach ratio {spec['ratio']} on {spec['model']}")
    config = TrainConfig(model=spec["model"], dataset="cifar10", data_dir=str(data), epochs=spec["epochs"],
                         batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"],
                         sparsity=SparsityConfig(method="static", sparsity=0.0))
    out = Path(spec["out"])
    resume = (out / RunFolder.CHECKPOINT).is_file()  # an interrupted run goes on from its checkpoint
    if not resume:  # one stopped before its first checkpoint starts over
        shutil.rmtree(out, ignore_errors=True)
    Trainer(config, out, resume=resume, model=net, progress_bar=False).fit()
    exported(net, out / "engine.onnx")


def run_external(spec: dict[str, Any], mode: Mode) -> str:
    """Train (or reuse) one external arm's run through a worker process (or in this one); return its command."""
    out = ROOT / spec["out"]
    cmd = ["python", "-m", "benchmarks.head_to_head", "--worker", str(out) + ".spec.json"]
    if not ((finished(out) and (out / "engine.onnx").is_file()) or (out / DIVERGED).is_file()):
        out.mkdir(parents=True, exist_ok=True)
        Path(cmd[-1]).write_text(json.dumps(spec))
        if mode.in_process:
            finetune_worker(Path(cmd[-1]))
            return shown_command(cmd)
        with open(str(out) + ".log", "a") as log:
            done = subprocess.run([sys.executable, *cmd[1:]], env=single_thread_env(), cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            last = Path(str(out) + ".log").read_text().strip().splitlines()[-1]
            if "training diverged" not in last:
                raise SystemExit(f"run failed ({done.returncode}): {shown_command(cmd)}\nsee {out}.log")
            (out / DIVERGED).write_text(last + "\n")  # a result of the arm at these settings: reported, never retried
    return shown_command(cmd)


def train(cmd: list[str], out: Path, mode: Mode) -> str:
    """Run (or reuse) the `python -m iee_deploy train ... --out out` command `cmd` (`train_command`)."""
    return train_command(cmd, out, mode.in_process)


# --- records: what a fresh clone resumes from and rebuilds the report from -------------------------
def summary_of(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


def diverged(out: Path) -> str | None:
    """The error line of a run whose training diverged (its loss became NaN), else None."""
    return (out / DIVERGED).read_text().strip() if (out / DIVERGED).is_file() else None


def our_engine(out: Path) -> Path:
    """The ONNX of our run's physically pruned model (exported once into the run folder)."""
    from iee_deploy.deploy.run_models import load_run_models

    onnx = out / "engine.onnx"
    if not onnx.is_file():
        exported(load_run_models(out).pruned, onnx)
    return onnx


def external_engine(out: Path) -> Path:
    """The ONNX an external arm's worker exported into its run folder."""
    return out / "engine.onnx"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's weights (names, shapes and values): which dense model the records were pruned from."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@cache
def test_images(data: Path) -> list[tuple[Any, Any]]:
    """The test images of the CIFAR-10 tree `data`, in batches, read once per process."""
    return image_batches(data, "val", None, size=200)


def run_record(out: Path, engine: Callable[[], Path], how: Any, test: Path) -> dict[str, Any]:
    """The committed record of the finished run in `out`: what its row needs and its `engine`'s structure (the
    engine is made only for a run that did not diverge).

    `how` is the command (or worker spec) that made it: a record is reused only by the same `how`. "test_top1" is its
    engine's top-1 on the test images of `test` (the benchmark's measure of accuracy); "val_acc", the trainer's on
    its validation images (a part of them, which the training curves follow)."""
    failed = diverged(out)
    if failed:
        return {"how": how, "diverged": failed}
    s, onnx = summary_of(out), engine()
    return {"how": how, "diverged": None, "val_acc": s["val_acc"], "test_top1": engine_top1(onnx, test_images(test)),
            "test_images": sum(len(y) for _, y in test_images(test)), "epochs": s["epochs"], "flops": s["flops"],
            "engine": onnx_structure(onnx)}


def read_record(path: Path, how: Any) -> dict[str, Any] | None:
    """The record at `path` if there is one; it must come from `how` (else one line: it holds other settings)."""
    if not path.is_file():
        return None
    record = dict(json.loads(path.read_text()))
    if record["how"] != how:
        raise SystemExit(f"{shown_path(path)} records a run with other "
                         f"settings than this benchmark's ({record['how']!r}, now {how!r}): delete it to redo that "
                         "run, or pass another --results")
    return record


def run_of(path: Path, how: Any) -> dict[str, Any] | None:
    """The run record at `path` if there is one (`read_record`); it must hold the run's top-1 on the test images
    (else one line: it was recorded before this benchmark measured it)."""
    record = read_record(path, how)
    if record is not None and not record.get("diverged") and "test_top1" not in record:
        raise SystemExit(f"{shown_path(path)} records a run without its top-1 on the test images (recorded before "
                         "the benchmark measured it): delete it to redo that run, or pass another --results")
    return record


def recorded(path: Path, how: Any, start: Callable[[], object], out: Path, engine: Callable[[], Path],
             test: Path) -> dict[str, Any]:
    """The record at `path`, made first (run `start`, then record `out`, its `engine` and its top-1 on the test
    images of `test`) when there is none."""
    record = run_of(path, how)
    if record is None:
        start()
        record = run_record(out, engine, how, test)
        write_json(path, record)
    return record


def twin(record: dict[str, Any], path: Path) -> Path:
    """The recorded engine's structure with re-drawn weights, at `path`: what the report times."""
    return onnx_from_structure(record["engine"], path)


def structure_digest(structure: Any) -> str:
    """SHA-256 of an engine's recorded structure: which engine a timing record timed."""
    import hashlib

    return hashlib.sha256(json.dumps(structure, sort_keys=True).encode()).hexdigest()


TIMING_PASSES = 3
"""Side-by-side timings a report's latencies combine, each engine at its lowest reading (`runtime.timing.lowest`). One
run on a shared machine can be off as a whole: mobilenet_v3_small's dense engine once timed 6% slower than 47 minutes
before while every pruned engine timed within 1% of its earlier time (a neighbour's load on the shared cache slows
the largest engine most)."""


def timing_record(path: Path, engines: dict[str, tuple[str, Callable[[], Path]]], seconds: float, passes: int,
                  retime: bool, desc: str, resolution: int = 32) -> dict[str, Any]:
    """The side-by-side timing of `engines` (name -> (digest of what it is, its ONNX file made on demand)) in
    at least `passes` passes, kept as a record at `path` so that the report rebuilds anywhere as it was measured.
    The record holds the passes alone; the returned one adds each engine's `lowest` reading as "ms", derived on every read so
    that a record never carries a combination made by another rule.

    The record's passes are reused while they timed every one of these engines as it is now (they may hold more: the
    trained dense engine lives in the run folders, which a fresh clone lacks); the missing passes are timed, each
    written as it finishes, where the record's passes ran on this machine (`same_machine`: a record is never completed
    on another CPU). A new or changed engine, or `retime`, times every pass again (a pass always times every
    engine in one side-by-side run: a partial re-timing would mix two runs' noise). Each pass keeps its `header` and
    its `machine_info` (CPU identity, platform), so that a report can say where its latencies were measured."""
    how = {name: digest for name, (digest, _) in engines.items()}
    done: list[dict[str, Any]] = []
    machine: dict[str, str] | None = None  # where any pass still to time is timed (read once, when needed)
    if path.is_file() and not retime:
        record = dict(json.loads(path.read_text()))
        if how.items() <= record["how"].items():
            if len(record["passes"]) >= passes:
                return {**record, "ms": lowest([p["ms"] for p in record["passes"]])}
            machine = machine_info()
            if all(same_machine(p["meta"].get("machine_info", {}), machine) for p in record["passes"]):
                done = record["passes"]  # the new passes time these engines: `how` names what every pass timed
    onnx = {name: make() for name, (_, make) in engines.items()}
    machine = machine or machine_info()
    while len(done) < passes:  # each pass's header says when it was timed, and the load at its start
        meta = {**header(1, "onnxruntime"), "machine_info": machine}
        ms = time_side_by_side(onnx, seconds, desc=f"{desc}, pass {len(done) + 1} of {passes}", resolution=resolution)
        done.append({"meta": meta, "ms": ms})
        write_json(path, {"how": how, "seconds": seconds, "passes": done})
    return {"how": how, "seconds": seconds, "passes": done, "ms": lowest([p["ms"] for p in done])}


# --- one architecture ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One of our knapsack arms at one budget: `spec` = (arm, method, cost table, budget, epochs), its folder under the
    records and runs, and the `latency_ratio` its one-shot structure aims at the budget with."""

    spec: tuple[str, str, str, float, float]
    folder: Path
    aimed: float

    @property
    def arm(self) -> str:
        return self.spec[0]

    @property
    def budget(self) -> float:
        return self.spec[3]


def calibrated_ratio(aimed: float, measured: float, budget: float, floor: float) -> float | None:
    """The `latency_ratio` to run a knapsack cell at, from its pilot's final engine at `measured` x dense when aimed at
    `aimed`: None when the pilot is within MATCH of `budget`, else `aimed` x `budget` / `measured` (at least `floor`,
    the smallest ratio the knapsack accepts; at most 1).

    HALP and IEE prune in steps while they train, so their final structure is not the one-shot one the aim was
    bisected on, and it misses by about the same factor for every seed (resnet20: IEE at 0.7 landed at 0.76 x dense
    for each seed): one proportional correction from seed 0 aims every seed's run."""
    if within(measured, budget, MATCH):
        return None
    return min(1.0, max(floor, aimed * budget / measured))


def architecture(model: str, mode: Mode, args: argparse.Namespace, data: Path, commands: list[str],
                 background: Executor) -> dict[str, Any]:
    """Every arm of one architecture: trained, matched, timed side by side; its rows.

    Every finished step leaves a small JSON record under the results folder (`<results>/<name>_runs/<model>/`):
    the LUT, the dense model (its weights' digest, its engine's structure, its accuracy, and its weights,
    `dense.pt`, which every unfinished arm starts from), each bisection, and each run (accuracy, FLOPs,
    its engine's structure). A step with a record is not run again, so a
    fresh clone resumes where the records end and rebuilds the whole report from them alone: the engines
    are re-timed as their structures with re-drawn weights (the dense engine is timed both ways, as a check).
    Run folders (checkpoints, logs) stay under --runs.
    """
    from iee_deploy.models import build_model

    root = Path(args.runs) / mode.name / model
    rec = Path(args.results) / f"{result_name(mode)}_runs" / model
    dense_epochs = args.dense_epochs or mode.dense_epochs_of(model)
    test = cifar10_subset(mode.train_per_class, mode.test_per_class)  # every run's top-1: its engine on these test images
    dense_out = root / "dense"
    checkpoint = dense_out / "final_model.pt"
    dense_cmd = [*base_train(model, data, dense_epochs, 0, args, args.lr), "--method", "static", "--sparsity", "0",
                 "--out", str(dense_out), "--no-progress"]
    dense_onnx = root / "dense.onnx"

    def dense_record() -> dict[str, Any]:
        """The dense model's record, and its checkpoint in place for the arms: trained when there is no record;
        otherwise restored from the recorded weights (`dense.pt`, checked against the record's digest)."""
        how = shown_command(dense_cmd)
        record = run_of(rec / "dense.json", how)
        if record is not None and dense_onnx.is_file() and checkpoint.is_file():
            return record
        if record is not None and (rec / "dense.pt").is_file() and not checkpoint.is_file():
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rec / "dense.pt", checkpoint)
        elif record is None or not checkpoint.is_file():
            train(dense_cmd, dense_out, mode)
        net = build_model(model, 10, 32, checkpoint)
        digest = weights_digest(net)
        if record is not None and record["weights_sha256"] != digest:
            raise SystemExit(f"{dense_out} is not the dense model the records under {rec} were pruned from (weights "
                             "differ): delete those records to start over, or restore that run folder")
        exported(net, dense_onnx)
        if record is None:
            record = {**run_record(dense_out, lambda: dense_onnx, how, test), "weights_sha256": digest,
                      "bisection_dense_ms": time_side_by_side({"dense": dense_onnx}, mode.report_seconds)["dense"]}
            rec.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, rec / "dense.pt")  # every arm starts from it: a fresh clone needs it whole
            write_json(rec / "dense.json", record)
        return record

    def plateau_pair(seed: int) -> list[tuple[float, list[str], Path, Path]]:
        """The dense plateau check's runs of `seed`, as (epochs, command, run folder, record): 0.75 D, and D itself
        for seeds after 0 (seed 0's D is the dense model)."""
        suffix = "" if seed == 0 else f"-seed{seed}"
        pair = [(0.75 * dense_epochs, root / f"dense-0.75D{suffix}", rec / f"dense-0.75D{suffix}.json")]
        if seed:
            pair.append((float(dense_epochs), root / f"dense{suffix}", rec / f"dense{suffix}.json"))
        return [(epochs, [*base_train(model, data, epochs, seed, args, args.lr), "--method", "static", "--sparsity", "0",
                          "--out", str(out), "--no-progress"], out, path) for epochs, out, path in pair]

    plateau_steps = [step for seed in range(mode.seeds) for step in plateau_pair(seed)]

    def plateau_run(step: tuple[float, list[str], Path, Path]) -> dict[str, Any]:
        """One run of the dense plateau check (a `plateau_pair` step): its record, trained first when there is none."""
        _, cmd, out, path = step
        return recorded(path, shown_command(cmd), partial(train, cmd, out, mode), out, partial(our_engine, out), test)

    def plateau_check(dense: dict[str, Any], plateau_records: list[dict[str, Any]]) -> dict[str, Any]:
        """The dense plateau check from its records (`dense`: seed 0's D): 0.75 D minus D, paired by seed."""
        shorts = [r for (epochs, *_), r in zip(plateau_steps, plateau_records) if epochs < dense_epochs]
        fulls = [dense] + [r for (epochs, *_), r in zip(plateau_steps, plateau_records) if epochs == dense_epochs]
        difference = paired_difference([r["test_top1"] for r in shorts], [r["test_top1"] for r in fulls])
        return {"difference": difference, "plateaued": plateaued(difference),
                "commands": [r["how"] for r in plateau_records]}

    if args.plateau_only:  # D and 0.75 D for every seed, `args.jobs` at a time (in-process: one at a time)
        jobs = 1 if mode.in_process else args.jobs
        steps: list[Callable[[], dict[str, Any]]] = [dense_record, *(partial(plateau_run, step) for step in plateau_steps)]
        dense, *plateau_records = run_parallel(lambda step: step(), steps, jobs,
                                               f"{model}: dense plateau check (D = {dense_epochs})")
        return {"model": model, "dense_epochs": dense_epochs, "dense_plateau": plateau_check(dense, plateau_records)}
    lut = profile_lut(model, rec / "lut.csv", commands)
    meta = read_meta(lut)
    round_to = meta.grid_align
    commands += [shown_command(dense_cmd), *(shown_command(cmd) for _, cmd, _, _ in plateau_steps)]
    flops = rec / "flops.csv"
    commands.append(f"PYTHONPATH=. python -c 'from profiler.flops_table import flops_table; flops_table(\"{shown_path(lut)}\", "
                    f"\"{shown_path(flops)}\")'")
    if not flops.with_suffix(".json").is_file():
        flops_table(lut, flops)
    tables = {"latency": lut, "flops": flops}
    # the dense plateau check (every seed: 0.75 D and D) needs no checkpoint: it trains on the second core while the
    # bisections run on the first
    # (in-process runs share this process's random state with the bisections: then it runs after them)

    def plateau_runs() -> list[dict[str, Any]]:
        return [plateau_run(step) for step in plateau_steps]

    plateau = None if mode.in_process else background.submit(plateau_runs)
    floors = {cost: smallest_ratio(model, None, table) for cost, table in tables.items()}
    budgets = [float(b) for b in args.budgets.split(",")]
    matches: dict[tuple[str, float], dict[str, Any]] = {}
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []  # the calibration batch, read when a bisection first needs it

    def match(arm_folder: str, budget: float, net_of: Callable[..., nn.Module | None], shrinks: bool) -> dict[str, Any]:
        record = rec / budget_folder(budget) / arm_folder / "match.json"
        if record.is_file():
            return dict(json.loads(record.read_text()))
        dense = dense_record()
        batch[:] = batch or [calibration_batch(data, mode.calibration_images)]
        try:
            return match_ratio(partial(net_of, batch=batch[0]), dense_onnx, budget * dense["bisection_dense_ms"],
                               dense["bisection_dense_ms"], shrinks, record, root / budget_folder(budget) / arm_folder,
                               mode)
        except ToolFailure as err:  # recorded, so a resumed run does not fail again
            failed = {"failed": str(err), "budget_ms": budget * dense["bisection_dense_ms"]}
            write_json(record, failed)
            return failed

    def aligned(folder: Path, align: int) -> Path:
        """`folder`, or its `align<n>/` subfolder for a multiple finer than the target's (records and runs alike)."""
        return folder if align == round_to else folder / f"align{align}"

    def aligned_match(arm: str, arm_folder: Path, budget: float, start: int) -> dict[str, Any]:
        """An external arm's match (`match`) at the channel multiple `start`, then at each finer one (`alignments`)
        until its probe lands within MATCH of the budget; the nearest of those tried, with its multiple as
        "round_to". Each bisection is a record of its own (`align<n>/match.json` below the arm's folder); a multiple
        where the tool itself fails is recorded as such, named in the report, and left out (`nearest_match`)."""
        tried = []
        for align in alignments(start):
            found = match(str(aligned(arm_folder, align)), budget,
                          partial(external_model, arm, model, checkpoint, round_to=align), arm in TP_ARMS)
            tried.append({**found, "round_to": align})
            if "failed" not in found and within(found["probe_ms"], found["budget_ms"], MATCH):
                break
        return nearest_match(tried)

    Run = tuple[str, float, int, Path, Callable[[], dict[str, Any]]]
    runs: list[Run] = []

    def knapsack_run(arm: str, method: str, cost: str, budget: float, epochs: float, seed: int, folder: Path,
                     ratio: float, measured: bool = False) -> Run:
        window = ["--update-end", "0.5", "--descent", "0.5"] if method == "iee" else ["--update-end", f"{HALP_UPDATE_END:g}"]
        window += ["--measure-budget"] if measured else []
        out = root / folder / f"seed{seed}"
        cmd = [*base_train(model, data, epochs, seed, args, args.finetune_lr), "--method", method, "--target", "cpu",
               "--lut", shown_path(tables[cost]), "--latency-ratio", f"{ratio:.6f}",
               *window, "--delta-t", str(mode.delta_t), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]
        path = rec / folder / f"seed{seed}.json"
        return (arm, budget, seed, path, partial(recorded, path, shown_command(cmd), partial(train, cmd, out, mode), out,
                                                 partial(our_engine, out), test))

    def external_run(arm: str, budget: float, seed: int, folder: Path, ratio: float, align: int) -> Run:
        """An external arm's (Torch-Pruning, Model Optimizer, slim) run at `ratio` and channel multiple `align`, in
        `folder` (its `align<n>/` subfolder for a finer multiple than the target's) under the records and runs: its
        network at that ratio, trained as every arm trains, by a worker process."""
        folder = aligned(folder, align)
        out = root / folder / f"seed{seed}"
        epochs = dense_epochs + mode.epochs if arm == "slim" else mode.epochs
        spec = {"arm": arm, "model": model, "data": str(data.relative_to(ROOT)), "checkpoint": str(checkpoint),
                "ratio": ratio, "round_to": align, "epochs": epochs, "batch_size": args.batch_size,
                "lr": args.lr if arm == "slim" else args.finetune_lr, "seed": seed, "out": str(out),
                "calibration_images": mode.calibration_images,
                **({"calibration_seed": CALIBRATION_SEED} if uses_batch(arm) else {})}
        path = rec / folder / f"seed{seed}.json"
        return (arm, budget, seed, path, partial(recorded, path, spec, partial(run_external, spec, mode), out,
                                                 partial(external_engine, out), test))

    cells: list[Cell] = []
    calibrations: dict[tuple[str, float], dict[str, Any]] = {}

    def settle(todo: list[Cell], alongside: list[Run], desc: str) -> tuple[list[Run], list[dict[str, Any]]]:
        """Our knapsack cells' runs with `alongside`: every cell's pilot (seed 0 at the aimed ratio) runs first, beside
        `alongside`; a pilot whose final engine misses the budget by more than MATCH sets its cell's calibrated ratio
        (`calibrated_ratio`), at which every seed runs again (`calibrated/`); otherwise the other seeds run at the aim."""
        pilots = [knapsack_run(*c.spec, seed=0, folder=c.folder, ratio=c.aimed) for c in todo]
        done = run_all(pilots + alongside, f"{model}: {desc}")
        rest: list[Run] = []
        for cell, pilot_record in zip(todo, done):
            cal = calibration(cell, pilot_record)
            calibrations[(cell.arm, cell.budget)] = {**cal, "pilot_command": pilot_record["how"]}
            if cal["calibrated"]:
                rest += [knapsack_run(*cell.spec, seed=s, folder=cell.folder / "calibrated", ratio=cal["ratio"])
                         for s in range(mode.seeds)]
            else:
                rest += [knapsack_run(*cell.spec, seed=s, folder=cell.folder, ratio=cell.aimed) for s in range(1, mode.seeds)]
        later = run_all(rest, f"{model}: {desc}, the other seeds")
        kept = [(r, rec_) for c, r, rec_ in zip(todo, pilots, done) if not calibrations[(c.arm, c.budget)]["calibrated"]]
        final = [*kept, *zip(rest, later)]
        final.sort(key=lambda pair: pair[0][2])  # by seed, as the rows are read
        return [r for r, _ in final] + alongside, [x for _, x in final] + done[len(todo):]

    def calibration(cell: Cell, pilot: dict[str, Any]) -> dict[str, Any]:
        """The cell's calibration record: its pilot's final engine timed beside the dense one, and the ratio to run at."""
        path = rec / cell.folder / "calibration.json"
        if path.is_file():
            return dict(json.loads(path.read_text()))
        if pilot["diverged"]:
            out: dict[str, Any] = {"aimed_ratio": cell.aimed, "pilot_ratio": None, "ratio": cell.aimed, "calibrated": False}
        else:
            twins = root / cell.folder / "pilot"
            ms = time_side_by_side({"pilot": twin(pilot, twins / "pilot.onnx"),
                                    "dense": twin(dense_record(), twins / "dense.onnx")}, mode.match_seconds)
            measured = ms["pilot"] / ms["dense"]
            ratio = calibrated_ratio(cell.aimed, measured, cell.budget, floors[cell.spec[2]])
            out = {"aimed_ratio": cell.aimed, "pilot_ratio": measured, "ratio": ratio or cell.aimed,
                   "calibrated": ratio is not None}
        write_json(path, out)
        return out

    for budget in budgets:
        folder = Path(budget_folder(budget))
        for cost, table in tables.items():  # aim our knapsack's ratio with its one-shot structure, per cost table
            aimed = match(f"knapsack-{cost}", budget, partial(knapsack_once, model, checkpoint, table, floors[cost]), False)
            for arm in (a for a, c in KNAPSACK_ARMS.items() if c == cost):
                matches[(arm, budget)] = {**aimed, "ratio": max(aimed["ratio"], floors[cost])}
        for arm in (*mode.external_arms, "slim"):
            matches[(arm, budget)] = aligned_match(arm, Path(arm), budget, round_to)
        cells += [Cell((arm, arm.split("-")[0], KNAPSACK_ARMS[arm], budget, mode.epochs), folder / arm,
                       matches[(arm, budget)]["ratio"]) for arm in KNAPSACK_ARMS]
        runs.extend(external_run(arm, budget, seed, folder / arm, matches[(arm, budget)]["ratio"],
                                 int(matches[(arm, budget)]["round_to"]))
                    for seed in range(mode.seeds) for arm in mode.external_arms + ("slim",))
    jobs = 1 if mode.in_process else args.jobs

    def run_all(todo: list[Run], desc: str) -> list[dict[str, Any]]:
        if not all(path.is_file() for *_, path, _ in todo):
            dense_record()  # a run to do starts from the dense checkpoint: trained (or checked) first, once
        return run_parallel(lambda r: r[4](), todo, jobs, desc)

    runs, records = settle(cells, runs, "runs")
    # the fine-tuning plateau check: HALP at the north star's budget (else the first) for 0.75 E epochs, every seed, at
    # the ratio HALP's rows ran at
    check_budget = NORTH_STAR_BUDGET if NORTH_STAR_BUDGET in budgets else budgets[0]
    halp_cal = calibrations[("halp", check_budget)]
    check_folder = Path(budget_folder(check_budget)) / FINETUNE_CHECK / ("calibrated" if halp_cal["calibrated"] else "")
    checks = [knapsack_run(FINETUNE_CHECK, "halp", "latency", check_budget, 0.75 * mode.epochs, s, check_folder,
                           halp_cal["ratio"]) for s in range(mode.seeds)]
    # the north star: HALP at the 0.5 budget with 10% of the dense model's training FLOPs
    halp_rel = statistics.fmean(r["flops"]["train_relative"] for (a, b, *_), r in zip(runs, records)
                                if a == "halp" and b == NORTH_STAR_BUDGET) if NORTH_STAR_BUDGET in budgets else None
    star_epochs, star_skipped = north_star_epochs(mode, dense_epochs, args.batch_size, halp_rel) if halp_rel else (0.0, None)
    if halp_rel and not star_skipped:
        star = Cell((NORTH_STAR, "halp", "latency", NORTH_STAR_BUDGET, star_epochs),
                    Path(budget_folder(NORTH_STAR_BUDGET)) / NORTH_STAR, matches[("halp", NORTH_STAR_BUDGET)]["ratio"])
        matches[(NORTH_STAR, NORTH_STAR_BUDGET)] = matches[("halp", NORTH_STAR_BUDGET)]
        star_runs, star_records = settle([star], checks, "north star and fine-tuning plateau check")
        check_records = star_records[-len(checks):]
        runs += star_runs[:-len(checks)]
        records += star_records[:-len(checks)]
    else:
        check_records = run_all(checks, f"{model}: fine-tuning plateau check")
    plateau_records = plateau_runs() if plateau is None else plateau.result()
    dense = run_of(rec / "dense.json", shown_command(dense_cmd)) or dense_record()
    twins = root / "twins"
    knapsack_cells = {(c.arm, c.budget): c for c in cells + ([star] if halp_rel and not star_skipped else [])}

    def same_start(arm: str, start: tuple[float, int], other: tuple[float, int]) -> bool:
        """Whether an external arm starts fine-tuning from the same structure at the two (ratio, channel multiple)
        pairs (its parameter shapes)."""
        batch[:] = batch or [calibration_batch(data, mode.calibration_images)]
        nets = [external_model(arm, model, checkpoint, r, align, batch[0]) for r, align in (start, other)]
        shapes = [None if n is None else [tuple(p.shape) for p in n.parameters()] for n in nets]
        return shapes[0] == shapes[1]

    def second_aims(timing_now: Callable[[], dict[str, float]], done: list[Run],
                    names: list[str]) -> dict[tuple[str, float], dict[str, Any]]:
        """Every arm alike gets a second aim at a budget where a seed's final engine, timed side by side, missed it
        by more than MATCH: our knapsack arms scale their ratio by budget / measured (`calibrated_ratio`, on the
        seeds' mean), the external arms bisect theirs again on engines timed now (at their channel multiple, then
        the finer ones while it misses: `aligned_match`). A cell runs every seed again at
        the second aim (`second-aim/`), unless the seeds' mean is already within MATCH, or an external arm's new
        bisection gives the start it had, or a probe no nearer the budget than its engines' mean (a tool that cannot
        reach the budget). The decision is a record (`second_aim.json`), so that later timings do not change which
        runs the report holds."""
        out = {}
        for arm, budget in dict.fromkeys((a, b) for a, b, *_ in done):
            index = [i for i, (a, b, *_) in enumerate(done) if (a, b) == (arm, budget)]
            folder = Path(budget_folder(budget)) / arm
            path = rec / folder / "second_aim.json"
            if path.is_file():
                decision = dict(json.loads(path.read_text()))
            else:
                ms = timing_now()
                ratios = [ms[names[i]] / ms["dense"] for i in index if names[i] in ms]
                if not ratios:  # every seed diverged: no engine to aim with
                    continue
                measured = statistics.fmean(ratios)
                taken: dict[str, int] = {}  # an external arm's new aim: its channel multiple
                if match_level(ratios, budget) == "every seed":  # met: recorded too, so it stays met
                    aimed, ratio, probe = None, None, None
                elif (arm, budget) in knapsack_cells:
                    aimed = calibrations[(arm, budget)]["ratio"]
                    ratio = calibrated_ratio(aimed, measured, budget, floors[knapsack_cells[(arm, budget)].spec[2]])
                    probe = None
                else:
                    aimed, align = matches[(arm, budget)]["ratio"], int(matches[(arm, budget)]["round_to"])
                    again = aligned_match(arm, Path(arm) / "second-aim", budget, align)
                    probe = again["probe_ms"] / again["budget_ms"] * budget
                    nearer = abs(probe / budget - 1) < abs(measured / budget - 1)
                    new = (again["ratio"], int(again["round_to"]))
                    ratio = again["ratio"] if nearer and not same_start(arm, (aimed, align), new) else None
                    taken = {"round_to": new[1]} if ratio is not None else {}
                decision = {"seed_ratios": ratios, "measured": measured, "aimed_ratio": aimed, "ratio": ratio,
                            "probe_ratio": probe, **taken}
                write_json(path, decision)
            if decision["ratio"] is None:
                continue
            cell = knapsack_cells.get((arm, budget))
            again_runs = [knapsack_run(*cell.spec, seed=done[i][2], folder=cell.folder / "second-aim",
                                       ratio=decision["ratio"]) if cell is not None else
                          external_run(arm, budget, done[i][2], folder / "second-aim", decision["ratio"],
                                       decision["round_to"]) for i in index]
            out[(arm, budget)] = {**decision, "runs": list(zip(index, again_runs))}
        return out

    def timed(keyed: list[tuple[str, dict[str, Any]]], passes: int, retime: bool) -> dict[str, Any]:
        """The side-by-side timing record of the dense engine and the runs' engines (`keyed`: engine name, record)."""
        engines: dict[str, tuple[str, Callable[[], Path]]] = {
            "dense": (structure_digest(dense["engine"]), partial(twin, dense, twins / "dense.onnx"))}
        if dense_onnx.is_file():  # the check that a structure with re-drawn weights times as the trained engine
            engines["dense-trained"] = (dense["weights_sha256"], lambda: dense_onnx)
        for key, r in keyed:
            if not r["diverged"]:
                engines[key] = (structure_digest(r["engine"]), partial(twin, r, twins / f"{key.replace('|', '-')}.onnx"))
        return timing_record(rec / "timing.json", engines, mode.report_seconds, passes, retime,
                             f"{model}: timing every engine side by side")

    def timing_name(run: Run, suffix: str = "") -> str:
        """A run's engine's name in the side-by-side timing: arm|budget|seed, then "|2" or "|3" for a later
        aim, "|m" for a measured budget."""
        return f"{run[0]}|{run[1]}|{run[2]}{suffix}"

    Decide = Callable[[tuple[str, float], Cell, list[int], list[float]], dict[str, Any]]

    def cell_decisions(name: str, timing_now: Callable[[], dict[str, float]], done: list[Run], names: list[str],
                       decide: Decide) -> Iterator[tuple[tuple[str, float], Cell, list[int], dict[str, Any]]]:
        """Each of our knapsack cells with its rows' indices in `done` and its decision: the record `name` in its
        folder when there is one, else `decide(cell key, cell, indices, its engines' ratios to dense on `timing_now()`)`,
        kept as that record (only then is the timing taken); a cell with no engine in that timing is left out."""
        for key, cell in knapsack_cells.items():
            index = [i for i, (a, b, *_) in enumerate(done) if (a, b) == key]
            path = rec / cell.folder / name
            if path.is_file():
                yield key, cell, index, dict(json.loads(path.read_text()))
                continue
            ms = timing_now()
            ratios = [ms[names[i]] / ms["dense"] for i in index if names[i] in ms]
            if ratios:
                decision = decide(key, cell, index, ratios)
                write_json(path, decision)
                yield key, cell, index, decision

    def third_aims(timing_now: Callable[[], dict[str, float]], done: list[Run],
                   names: list[str]) -> dict[tuple[str, float], dict[str, Any]]:
        """Our knapsack cells whose seeds' mean still misses the budget by more than MATCH on the report's timing
        (`TIMING_PASSES` passes) get a third aim: the line through every final engine the cell has had
        (`solvers.aim.next_aim`: the pilot, the first and the second aim's seeds), and every seed runs again at it
        (`third-aim/`). The external arms need none: their second bisection, on engines timed then, already ended at
        the structure nearest the budget or one they had. Every timed cell's decision is a record (`third_aim.json`),
        a met one too; the returned ones include those with no new aim (ratio None, no runs)."""
        def seeds_mean(names_: list[str]) -> float | None:
            ms = timing_now()
            found = [ms[k] / ms["dense"] for k in names_ if k in ms]
            return statistics.fmean(found) if found else None

        def decide(key: tuple[str, float], cell: Cell, index: list[int], ratios: list[float]) -> dict[str, Any]:
            base = [timing_name(done[i]) for i in index]
            cal, second = calibrations[key], seconds.get(key)
            points = [(cal["aimed_ratio"], cal["pilot_ratio"])] if cal["calibrated"] and cal["pilot_ratio"] else []
            points += [(ratio, m) for ratio, m in ((cal["ratio"], seeds_mean(base)),
                                                   (second["ratio"] if second else None,
                                                    seeds_mean([k + "|2" for k in base])))
                       if ratio is not None and m is not None]
            ratio = None if match_level(ratios, key[1]) != "no" else next_aim(points, key[1], floors[cell.spec[2]])
            return {"seed_ratios": ratios, "measured": statistics.fmean(ratios), "points": points, "ratio": ratio}

        out = {}
        for key, cell, index, decision in cell_decisions("third_aim.json", timing_now, done, names, decide):
            again = [] if decision["ratio"] is None else [
                knapsack_run(*cell.spec, seed=done[i][2], folder=cell.folder / "third-aim", ratio=decision["ratio"])
                for i in index]
            out[key] = {**decision, "runs": list(zip(index, again))}
        return out

    def measured_aims(timing_now: Callable[[], dict[str, float]], done: list[Run],
                      names: list[str]) -> dict[tuple[str, float], dict[str, Any]]:
        """Our knapsack cells whose seeds' mean still misses the budget by more than MATCH on the report's timing after
        their last aim run every seed once more under the library's measured budget (`--measure-budget`), at the
        budget itself: each run re-aims its own last prune on engines it times beside the dense one
        (`iee_deploy.structured.measured`). Every timed cell's decision is a record (`measured_aim.json`); the
        returned ones include those with no new run (measured False)."""
        def decide(key: tuple[str, float], cell: Cell, index: list[int], ratios: list[float]) -> dict[str, Any]:
            return {"seed_ratios": ratios, "measured": statistics.fmean(ratios),
                    "measure_budget": match_level(ratios, key[1]) == "no"}

        out = {}
        for key, cell, index, decision in cell_decisions("measured_aim.json", timing_now, done, names, decide):
            again = [knapsack_run(*cell.spec, seed=done[i][2], folder=cell.folder / "measured", ratio=key[1],
                                  measured=True) for i in index] if decision["measure_budget"] else []
            out[key] = {**decision, "runs": list(zip(index, again))}
        return out

    def aim_again(cells_: dict[tuple[str, float], dict[str, Any]], suffix: str, desc: str) -> list[tuple[str, Any]]:
        """Runs the cells' new aims in place of their rows' runs; the new runs' (timing name, record)."""
        pairs = [x for cell in cells_.values() for x in cell["runs"]]
        for (i, run), record in zip(pairs, run_all([run for _, run in pairs], f"{model}: {desc}")):
            runs[i], records[i], keys[i] = run, record, timing_name(run, suffix)
        return [(keys[i], records[i]) for i, _ in pairs]

    def when_needed(keyed: list[tuple[str, dict[str, Any]]], passes: int) -> Callable[[], dict[str, float]]:
        """The side-by-side timing of `keyed` (`timed`), taken when a decision first needs it: a decision already
        recorded needs none, so a resumed run does not time every engine again for the decisions it has."""
        return cache(lambda: dict(timed(keyed, passes, False)["ms"]))

    keys = [timing_name(run) for run in runs]
    first = list(zip(keys, records))
    # the second aims are decided once, on one side-by-side pass (each decision is a record); the report takes more
    seconds = second_aims(when_needed(first, 1), runs, keys)
    second_keyed = aim_again(seconds, "|2", "second aims")
    # the report's timing keeps every engine a decision was taken on, so that a rebuild reuses it for each decision
    decided = third_aims(when_needed(first + second_keyed, TIMING_PASSES), runs, keys)
    thirds = {cell: d for cell, d in decided.items() if d["ratio"] is not None}
    third_keyed = aim_again(thirds, "|3", "third aims")
    checked = measured_aims(when_needed(first + second_keyed + third_keyed, TIMING_PASSES), runs, keys) \
        if mode.measured_budgets else {}
    remeasured = {cell: d for cell, d in checked.items() if d["measure_budget"]}
    timing = timed(first + second_keyed + third_keyed + aim_again(remeasured, "|m", "measured budgets"), TIMING_PASSES,
                   args.retime)
    timed_ms = timing["ms"]
    dense_train_flops = dense["flops"]["train_total"]
    rows = []
    for (arm, budget, seed, *_), key, r in zip(runs, keys, records):
        ms = timed_ms.get(key, math.nan)
        second, third, remeasure = seconds.get((arm, budget)), thirds.get((arm, budget)), remeasured.get((arm, budget))
        train_flops = math.nan if r["diverged"] else r["flops"]["train_total"]
        rows.append({"model": model, "arm": arm, "budget": budget, "seed": seed,
                     "command": r["how"] if arm in OURS else shown_command(["python", "-m", "benchmarks.head_to_head",
                                                                             "--worker", r["how"]["out"] + ".spec.json"]),
                     "diverged": r["diverged"], "top1": math.nan if r["diverged"] else r["test_top1"],
                     "val_acc": math.nan if r["diverged"] else r["val_acc"],
                     "epochs": math.nan if r["diverged"] else r["epochs"], "measured_ms": ms,
                     "budget_ms": budget * timed_ms["dense"], "ratio": ms / timed_ms["dense"],
                     "train_flops": train_flops, "train_flops_vs_dense_training": train_flops / dense_train_flops,
                     "round_to": None if arm in OURS else (second or matches[(arm, budget)])["round_to"],
                     "second_aim": second is not None, "third_aim": third is not None,
                     "measured_aim": remeasure is not None,
                     "aimed_ratio": budget if remeasure else
                     (third or second or calibrations.get((arm, budget), matches[(arm, budget)]))["ratio"],
                     "aimed_probe_ratio": second["probe_ratio"] if second and second["probe_ratio"] is not None
                     else matches[(arm, budget)]["probe_ms"] / matches[(arm, budget)]["budget_ms"] * budget,
                     "pilot_ratio": calibrations[(arm, budget)]["pilot_ratio"]
                     if calibrations.get((arm, budget), {}).get("calibrated") else None})
    halp = sorted((r for r in rows if (r["arm"], r["budget"]) == ("halp", check_budget)), key=lambda r: r["seed"])
    finetune = paired_difference([r["test_top1"] for r in check_records], [r["top1"] for r in halp])
    return {"model": model, "dense_top1": dense["test_top1"], "dense_ms": timed_ms["dense"],
            "trained_vs_structure_ms": timed_ms["dense-trained"] / timed_ms["dense"] if "dense-trained" in timed_ms
            else None,
            "timed": {"seconds": timing["seconds"],
                      "passes": [{"date": p["meta"]["date"], "commit": p["meta"]["commit"],
                                  "load_average": p["meta"]["load_average"], "dense_ms": p["ms"]["dense"]}
                                 for p in timing["passes"]]},
            "dense_train_flops": dense_train_flops, "dense_epochs": dense_epochs, "round_to": round_to,
            "grid": {"align": meta.grid_align, "block": meta.grid_block, "step": meta.grid_step},
            "smallest_ratio": floors, "records": shown_path(rec),
            "dense_command": dense["how"],
            "dense_plateau": plateau_check(dense, plateau_records),
            "finetune_plateau": {"budget": check_budget, "difference": finetune, "plateaued": plateaued(finetune),
                                 "commands": [r["how"] for r in check_records]},
            "calibrations": [{"arm": arm, "budget": budget, **cal} for (arm, budget), cal in calibrations.items()],
            "second_aims": [{"arm": arm, "budget": budget, **{k: v for k, v in cell.items() if k != "runs"}}
                            for (arm, budget), cell in seconds.items()],
            "third_aims": [{"arm": arm, "budget": budget, **{k: v for k, v in cell.items() if k != "runs"}}
                           for (arm, budget), cell in decided.items()
                           if cell["ratio"] is not None or match_level(cell["seed_ratios"], budget) == "no"],
            "measured_aims": [{"arm": arm, "budget": budget, **{k: v for k, v in cell.items() if k != "runs"}}
                              for (arm, budget), cell in remeasured.items()],
            "north_star_skipped": star_skipped, "tool_failures": recorded_failures(rec, round_to), "rows": rows}


def recorded_failures(rec: Path, round_to: int) -> list[dict[str, Any]]:
    """Every bisection under an architecture's records where the external tool failed inside its own code (a "failed"
    match record, `r<budget>/<arm>/[second-aim/][align<n>/]match.json`): arm, budget, channel multiple (`round_to`,
    the target's, where there is no `align<n>/` folder) and error."""
    out = []
    for path in sorted(rec.glob("r*/*/**/match.json")):
        record = json.loads(path.read_text())
        if "failed" in record:
            parts = path.relative_to(rec).parts
            align = int(parts[-2].removeprefix("align")) if parts[-2].startswith("align") else round_to
            out.append({"arm": parts[1], "budget": folder_budget(parts[0]), "round_to": align, "error": record["failed"]})
    return out


def failure_lines(architectures: list[dict[str, Any]]) -> list[str]:
    """One line per architecture and tool failure (the same error at one channel multiple), with the budgets it hit
    (a cell's first and second aims may both meet it: each budget is named once, largest first)."""
    lines = []
    for a in architectures:
        seen: dict[str, set[float]] = {}
        for f in a.get("tool_failures", []):
            seen.setdefault(f["error"], set()).add(f["budget"])
        lines += [f"- {a['model']}: {error} (bisecting for {', '.join(f'{b:g}' for b in sorted(budgets, reverse=True))} x "
                  "dense); that multiple is left out and the cell keeps the nearest of those the tool ran at."
                  for error, budgets in seen.items()]
    return lines


def match_level(ratios: list[float], budget: float) -> str:
    """How an arm's engines (one measured / dense ratio per seed) meet `budget`: "every seed" within MATCH of it,
    the seeds' "mean" within it (HALP and IEE prune while they train, so one aim gives each seed its own
    structure), or "no"."""
    if all(within(r, budget, MATCH) for r in ratios):
        return "every seed"
    return "mean" if within(statistics.fmean(ratios), budget, MATCH) else "no"


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (model, budget, arm), with the paired difference to IEE."""
    table = []
    keys = sorted({(r["model"], r["budget"], r["arm"]) for r in rows}, key=lambda k: (k[0], -k[1], k[2]))
    for model, budget, arm in keys:
        rs = {r["seed"]: r for r in rows if (r["model"], r["budget"], r["arm"]) == (model, budget, arm)}
        iee = {r["seed"]: r for r in rows if (r["model"], r["budget"], r["arm"]) == (model, budget, "iee")}
        flops = {r["seed"]: r for r in rows if (r["model"], r["budget"], r["arm"]) == (model, budget, "halp-flops")}
        both = sorted(set(rs) & set(flops))
        seeds = sorted(set(rs) & set(iee))
        accs = [r["top1"] for r in rs.values()]
        table.append({"model": model, "budget": budget, "arm": arm, "seeds": len(rs),
                      "top1": statistics.fmean(accs), "top1_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                      "measured_ms": statistics.fmean(r["measured_ms"] for r in rs.values()),
                      "ratio": statistics.fmean(r["ratio"] for r in rs.values()),
                      "ratio_range": [min(r["ratio"] for r in rs.values()), max(r["ratio"] for r in rs.values())],
                      "match": match_level([r["ratio"] for r in rs.values()], budget),
                      "round_to": next(iter(rs.values()))["round_to"],
                      "second_aim": any(r["second_aim"] for r in rs.values()),
                      "third_aim": any(r["third_aim"] for r in rs.values()),
                      "measured_aim": any(r["measured_aim"] for r in rs.values()),
                      "train_flops_vs_dense_training": statistics.fmean(r["train_flops_vs_dense_training"]
                                                                        for r in rs.values()),
                      "vs_iee": None if arm == "iee" or not seeds else paired_difference(
                          [rs[s]["top1"] for s in seeds], [iee[s]["top1"] for s in seeds]),
                      "lut_minus_flops": paired_difference([rs[s]["top1"] for s in both], [flops[s]["top1"] for s in both])
                      if arm == "halp" and both else None})
    return table


def probe_drift(rows: list[dict[str, Any]], model: str) -> tuple[float, float, float] | None:
    """Median, smallest and largest ratio of an engine re-timed in the report to its bisection probe, over the arms
    whose structure is a function of the dense weights and the ratio alone (slim, Torch-Pruning by magnitude), so
    that the two timed the same structure. 1 means the report's timing repeats the bisection's; None when `model`
    has no such row. (Taylor importance and FastNAS also depend on the calibration batch.)"""
    drift = sorted(r["ratio"] / r["aimed_probe_ratio"] for r in rows
                   if r["model"] == model and r["arm"] not in OURS and not uses_batch(r["arm"])
                   and math.isfinite(r["ratio"]))
    return (statistics.median(drift), drift[0], drift[-1]) if drift else None


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = record["architectures"]
    fig, axes = plt.subplots(1, len(archs), figsize=(6.5 * len(archs), 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        for i, arm in enumerate((*FULL.arms, NORTH_STAR)):
            picked = sorted((t for t in record["table"] if t["model"] == arch["model"] and t["arm"] == arm),
                            key=lambda t: t["ratio"])
            if picked:
                err = [100 * t["top1_std"] for t in picked]
                ax.errorbar([t["ratio"] for t in picked], [100 * t["top1"] for t in picked], yerr=err, marker="o",
                            capsize=3, color=f"C{i}", label=arm)
        ax.scatter([1.0], [100 * arch["dense_top1"]], color="k", marker="*", s=90, label="dense", zorder=3)
        ax.set(xlabel="measured latency / dense (ONNX Runtime, side by side)", ylabel="top-1 (%)", title=arch["model"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def epoch_steps(mode: Mode, batch_size: int) -> int:
    """Steps in one epoch of the mode's training images, as the trainer's sampler counts them (whole batches)."""
    return max(1, 10 * mode.train_per_class // batch_size)


def north_star_epochs(mode: Mode, dense_epochs: int, batch_size: int, halp_relative: float) -> tuple[float, str | None]:
    """The north star's fine-tuning epochs: NORTH_STAR_COST of the dense training FLOPs at HALP's measured cost per
    epoch (`halp_relative`: a HALP run's training FLOPs over a dense run's of as many epochs), floored to 0.01 so
    never above the cost; and why it is not run, where those steps (counted as the trainer counts them) hold no
    prune step in HALP's window (a short mode's few steps), else None."""
    epochs = math.floor(100 * NORTH_STAR_COST * dense_epochs / halp_relative) / 100
    steps = max(1, math.ceil(epochs * epoch_steps(mode, batch_size)))
    if update_window(steps, HALP_UPDATE_END) // mode.delta_t:
        return epochs, None
    return epochs, (f"not run: {100 * NORTH_STAR_COST:g}% of the dense training FLOPs is {steps} steps of HALP here, "
                    f"and the first {HALP_UPDATE_END:g} of them hold no prune step of dT = {mode.delta_t}")


def answer(table: list[dict[str, Any]], dense_acc: dict[str, float]) -> list[str]:
    """The plain-words answer: the most accurate arm at each budget and by how much (with its latency match), the
    measured LUT against FLOPs as the knapsack's cost, and the north star."""
    lines = []

    def at(t: dict[str, Any]) -> str:
        match = {"every seed": "every seed within", "mean": "the seeds' mean within", "no": "**outside**"}[t["match"]]
        return f"{t['ratio']:.3f} x dense measured, {match} {100 * MATCH:g}% of the budget"

    for model in dense_acc:
        for budget in sorted({t["budget"] for t in table if t["model"] == model}, reverse=True):
            arms = [t for t in table if t["model"] == model and t["budget"] == budget and t["arm"] != NORTH_STAR
                    and math.isfinite(t["top1"])]  # an arm whose fine-tuning diverged is named in the table
            meets = [t for t in arms if t["ratio"] <= budget * (1 + MATCH)]  # slower than the budget: no answer
            pool = meets or arms
            best = max(pool, key=lambda t: t["top1"])
            second = max((t for t in pool if t is not best), key=lambda t: t["top1"], default=None)
            gap = "" if second is None else f", {100 * (best['top1'] - second['top1']):.2f} points above {second['arm']}"
            missed = sorted(t["arm"] for t in arms if t not in meets)
            lines.append(f"- {model} at {budget:g} x dense: "
                         + ("most accurate of the arms that meet the budget" if meets else "no arm meets the budget; "
                            "most accurate") + f" is **{best['arm']}** ({100 * best['top1']:.2f}% at {at(best)}{gap})"
                         + (f"; slower than the budget: {', '.join(missed)}" if meets and missed else "") + ".")
            by_arm = {t["arm"]: t for t in arms}
            if {"halp", "halp-flops"} <= set(by_arm):
                lut, flops = by_arm["halp"], by_arm["halp-flops"]
                lines.append(f"  LUT vs FLOPs as HALP's cost: {100 * lut['top1']:.2f}% ({at(lut)}) vs "
                             f"{100 * flops['top1']:.2f}% ({at(flops)}); LUT minus FLOPs, paired: "
                             f"{format_difference(lut['lut_minus_flops'])} points.")
    for model in dense_acc:
        cells = [t for t in table if t["model"] == model]
        levels = [t["match"] for t in cells]
        lines.append(f"- {model}: {levels.count('every seed')} of {len(cells)} cells have every seed's engine within "
                     f"{100 * MATCH:g}% of the budget, {levels.count('mean')} more the seeds' mean.")
    stars = [t for t in table if t["arm"] == NORTH_STAR]
    for t in stars:
        lost = 100 * (dense_acc[t["model"]] - t["top1"])
        met = 1 / t["ratio"] >= 2 and lost <= 0.5 and t["train_flops_vs_dense_training"] <= NORTH_STAR_COST
        lines.append(f"- North star ({t['model']}, HALP): {1 / t['ratio']:.2f}x measured, {lost:+.2f} points lost, "
                     f"{100 * t['train_flops_vs_dense_training']:.1f}% of the dense training FLOPs: "
                     + ("**met**" if met else "**not met** (needs >= 2x, <= 0.5 points, <= 10%)") + ".")
    return lines


STEP_SECONDS = {"resnet20": 0.23, "mobilenet_v3_small": 0.58}
"""One SGD step of 64 images at 32 px on one thread (s), two runs at a time on this 2-core machine, measured by the
dense runs: resnet20 7 s per epoch of 31 steps; mobilenet_v3_small (its small-input form, a 4x4 map at the end) 1802 s
for 3,100 steps beside its 0.75 D run. The depthwise architecture was MobileNet-V2 first: its small-input form costs
2.1 s a step here and had not plateaued after 100 epochs (0.75 D 54.0% against D 57.9%); timm's MobileNetV3 at 32 px
ends at 1x1 and stayed near 35% top-1."""
PRUNED_STEP = 0.42
"""A pruned arm's step as a fraction of the dense one's: about its FLOPs at budgets 0.7, 0.5, 0.35 (0.6, 0.4, 0.25)."""


def sizing() -> list[str]:
    """The full mode's size and its time estimate (dense-step equivalents x measured step times, two runs at a time)."""
    steps = epoch_steps(FULL, FULL.batch_size)
    finetune = len(FULL.arms) - 1

    def dense_steps(model: str) -> float:
        """Dense-step equivalents of one architecture."""
        d = FULL.dense_epochs_of(model)
        dense = 1.75 * FULL.seeds * d * steps  # D and 0.75 D for every seed (seed 0's D: the dense model)
        arms = 3 * FULL.seeds * (finetune * FULL.epochs + d + FULL.epochs) * steps * PRUNED_STEP
        extra = (0.75 * FULL.epochs + FULL.seeds * 0.1 * d / PRUNED_STEP) * steps * PRUNED_STEP
        return dense + arms + extra

    per_model = {m: dense_steps(m) for m in STEP_SECONDS}
    hours = {m: per_model[m] * step / 3600 for m, step in STEP_SECONDS.items()}
    epochs = ", ".join(f"{m} {FULL.dense_epochs_of(m)}" for m in STEP_SECONDS)
    return [f"{10 * FULL.train_per_class:,} training images, top-1 on {10 * FULL.test_per_class:,} test images "
            f"(the training curves follow the first {10 * FULL.val_per_class:,} of them), batch "
            f"{FULL.batch_size} ({steps} steps per epoch); dense D epochs ({epochs}; the plateau check adds "
            f"0.75 D for every seed and D for the seeds after 0), fine-tuning {FULL.epochs} epochs, "
            f"slim D + {FULL.epochs} from scratch; "
            f"{FULL.seeds} seeds x 3 budgets x {len(FULL.arms)} arms + {FULL.seeds} north-star runs + one fine-tuning "
            f"plateau run per architecture, two runs at a time, one thread each; bisections of up to "
            f"{FULL.bisect_steps} probes per arm and budget.",
            "Estimate: " + ", ".join(f"{m} {n:,.0f}" for m, n in per_model.items())
            + f" dense-step equivalents (pruned steps at {PRUNED_STEP} of a dense one); a step " + ", ".join(f"{m} {step} s" for m, step in STEP_SECONDS.items())
            + " with two runs at a time"
            + f": {' + '.join(f'{h:.1f}' for h in hours.values())} core-hours, so about {sum(hours.values()) / 2:.1f} h on "
            "2 idle cores, plus the bisections (about 300 probes per architecture, seconds each, and Model "
            "Optimizer's search) and the LUT profiles; a cell's second or third aim runs its seeds once more (at most the "
            "fine-tuning again). On a machine shared with other jobs, several times that. "
            "Resumable: run the same command again."]


def drift_lines(record: dict[str, Any]) -> list[str]:
    """When each architecture's engines were timed, how the passes agree, and how that timing compares with the
    bisections'."""
    lines = []
    for a in record["architectures"]:
        t = a["timed"]
        line = (f"- {a['model']}: engines timed side by side in {len(t['passes'])} passes ({t['seconds']:g} s per "
                f"engine over 5 rounds each; dense ms, date, commit, load average: "
                + "; ".join(f"{p['dense_ms']:.3f} on {p['date']}, {p['commit']}, {', '.join(map(str, p['load_average']))}"
                            for p in t["passes"])
                + "); each engine's latency is its lowest reading over the passes (other jobs only add time, the dense "
                  "engine's most)")
        drift = probe_drift(record["rows"], a["model"])
        if drift is not None:
            line += (f"; slim's and magnitude Torch-Pruning's engines re-timed / their bisection probes (the same "
                     f"structures): median {drift[0]:.3f} "
                     f"(range {drift[1]:.3f}-{drift[2]:.3f})")
        lines.append(line + ".")
    return lines


def arm_label(t: dict[str, Any], round_to: int) -> str:
    """A table row's arm, with its last aim ('measured', '3rd aim', '2nd aim') and a channel multiple finer than the
    architecture's `round_to` (an external arm that could not meet the budget at it)."""
    notes = ["measured" if t["measured_aim"] else "3rd aim" if t["third_aim"] else "2nd aim" if t["second_aim"] else ""]
    notes += [f"round_to {t['round_to']}"] if t["round_to"] not in (None, round_to) else []
    shown = ", ".join(n for n in notes if n)
    return t["arm"] + (f" ({shown})" if shown else "")


def markdown(record: dict[str, Any], png: str) -> str:
    m, args, quick = record["mode_settings"], record["args"], record["mode"] != "full"
    round_to = {a["model"]: a["round_to"] for a in record["architectures"]}
    diff = lambda d: "-" if d is None else format_difference(d)  # noqa: E731
    dense_epochs = ", ".join(f"{a['model']} {a['dense_epochs']}" for a in record["architectures"])
    table = markdown_table(
        ["model", "budget", "arm", "seeds", "measured / dense (seeds)", "speed-up", f"within {100 * MATCH:g}%",
         "top-1 (mean +- std)", "top-1 - IEE (paired, 95% CI)", "train FLOPs / dense training"],
        [[t["model"], f"{t['budget']:g}", arm_label(t, round_to[t["model"]]), t["seeds"],
          f"{t['ratio']:.3f} ({t['ratio_range'][0]:.3f}-{t['ratio_range'][1]:.3f})", f"{1 / t['ratio']:.2f}x", t["match"],
          f"{100 * t['top1']:.2f} +- {100 * t['top1_std']:.2f}" if math.isfinite(t["top1"]) else
          "diverged (NaN loss)",
          diff(t["vs_iee"]), f"{t['train_flops_vs_dense_training']:.3f}"] for t in record["table"]])
    archs = [f"- {a['model']}: dense top-1 {100 * a['dense_top1']:.2f}% after {a['dense_epochs']} epochs, "
             f"{a['dense_ms']:.3f} ms measured, training {a['dense_train_flops']:.3g} FLOPs; grid align {a['grid']['align']} "
             f"below one block of {a['grid']['block']} (measured), external arms' round_to {a['round_to']} (finer where "
             "marked); plateau check "
             f"(0.75 D minus D, paired by seed, mean within {PLATEAU_POINTS:g} points): "
             f"{format_difference(a['dense_plateau']['difference'])} points, "
             + ("plateaued" if a["dense_plateau"]["plateaued"] else "**NOT plateaued**")
             + f"; fine-tuning plateau check (HALP at {a['finetune_plateau']['budget']:g} x dense, 0.75 E minus E, paired): "
             f"{format_difference(a['finetune_plateau']['difference'])} points, "
             + ("plateaued" if a["finetune_plateau"]["plateaued"] else "**NOT plateaued**")
             + f"; smallest ratio our knapsack accepts: {a['smallest_ratio']['latency']:.3f} of the LUT's dense latency, "
             f"{a['smallest_ratio']['flops']:.3f} of the dense MACs; calibrated knapsack cells (pilot's final engine x dense: "
             "aimed ratio -> ratio run): " + (", ".join(
                 f"{c['arm']} at {c['budget']:g} ({c['pilot_ratio']:.3f}: {c['aimed_ratio']:.3f} -> {c['ratio']:.3f})"
                 for c in a["calibrations"] if c["calibrated"]) or "none")
             + "; second aims (the seeds' mean x dense: first aim -> second aim): " + (", ".join(
                 f"{c['arm']} at {c['budget']:g} ({c['measured']:.3f}: {c['aimed_ratio']:.3f} -> {c['ratio']:.3f})"
                 for c in a["second_aims"]) or "none")
             + "; third aims (the seeds' mean x dense on the report's timing: the secant over the cell's final engines, "
             "ratio -> mean x dense): " + (", ".join(
                 f"{c['arm']} at {c['budget']:g} ({c['measured']:.3f}: " + ", ".join(
                     f"{r:.3f} -> {m:.3f}" for r, m in sorted(c["points"]))
                 + (f"; aim {c['ratio']:.3f})" if c["ratio"] is not None else "; no new aim: the step repeats a "
                    "ratio already run, the engines do not follow the aim)")
                 for c in a["third_aims"]) or "none")
             + "; measured budgets (the seeds' mean x dense after the last aim): " + (", ".join(
                 f"{c['arm']} at {c['budget']:g} ({c['measured']:.3f})" for c in a["measured_aims"]) or "none")
             for a in record["architectures"]]
    lines = [
        f"# Head to head at equal measured latency ({record['mode']} mode)", "",
        *header_markdown(record["meta"], record["mode"] + (" (a pipeline check; not the benchmark)" if quick else "")),
        "",
        "**Data caveat.** CIFAR-10 JPEG copy (`cifar10-jpeg.tar.gz`); compare arms side by side, never with published "
        "CIFAR-10 numbers.", "",
        f"Setup: {10 * m['train_per_class']:,} training images at 32 px; every top-1 is the arm's engine (ONNX Runtime) on "
        f"{10 * m['test_per_class']:,} CIFAR-10 test images"
        + (" (the whole test split)" if m["test_per_class"] == 1000 else "")
        + f", which no run trains or chooses on (the training curves follow the first {10 * m['val_per_class']:,}); "
        f"dense model D epochs ({dense_epochs}; seed 0), every arm fine-tuned {m['epochs']} epochs from it (slim: "
        f"D + {m['epochs']} epochs from scratch); batch {args['batch_size']}, SGD with a cosine schedule, "
        f"peak lr {args['lr']} from scratch (dense, slim) and {args['finetune_lr']}, a tenth of it, for every pruned "
        f"arm's fine-tuning from the trained model; seeds "
        f"0..{m['seeds'] - 1}, paired. Training steps are matched: every pruned arm's {m['epochs']} epochs continue "
        f"the dense model's D, and slim trains for the same D + {m['epochs']} from "
        f"scratch (the north-star arm for {NORTH_STAR_COST:.0%} of the dense training FLOPs), so no arm wins by getting "
        "more SGD steps; the plateau checks below are a second guard. Engines: ONNX Runtime, batch 1, one thread, "
        "fastest run, every engine timed in one side-by-side run in alternating rounds beside the dense one.", "",
        *archs, *failure_lines(record["architectures"]), "",
        f"Records: every finished step is a JSON record under `{record['architectures'][0]['records'].rsplit('/', 1)[0]}/` "
        "(LUT, dense model, bisections, runs with their engines' structures); the report is rebuilt from them and the "
        "engines are timed as their structures with re-drawn weights. "
        + "; ".join(f"{a['model']}: trained dense engine / its structure {a['trained_vs_structure_ms']:.3f}"
                    for a in record["architectures"] if a["trained_vs_structure_ms"] is not None)
        + ("." if any(a["trained_vs_structure_ms"] is not None for a in record["architectures"]) else ""), "",
        *drift_lines(record), "",
        "## The answer", "", *answer(record["table"], {a["model"]: a["dense_top1"] for a in record["architectures"]}),
        *(f"- North star ({a['model']}, HALP): {a['north_star_skipped']}." for a in record["architectures"]
          if a.get("north_star_skipped")), "",
        *table, "",
        f"![top-1 vs measured latency]({png})", "",
        "How each arm meets the budget: Torch-Pruning, Model Optimizer and slim bisect their ratio on the measured "
        "latency of the network they start fine-tuning from (pruning does not change during their fine-tuning), with "
        "widths in multiples of the target's channel multiple; where no ratio at that multiple lands within "
        f"{100 * MATCH:g}% of the budget, they bisect again at half of it, down to 1, and keep the first that lands "
        "within (else the nearest; marked 'round_to n'). Our "
        "knapsack arms (iee, halp, halp-flops, north-star) bisect their `--latency-ratio` on the measured latency of "
        "the knapsack's one-shot structure; HALP and IEE then prune in steps while they train, so their final structure "
        "differs from the one-shot one. Seed 0 runs first at that aim (the pilot); when the pilot's final engine, timed "
        f"beside the dense one, misses the budget by more than {100 * MATCH:g}%, the ratio is scaled by budget / measured "
        "and every seed runs at it (the pilot is then not a row). Then every arm alike gets a second aim where a seed's "
        f"final engine, timed side by side, misses the budget by more than {100 * MATCH:g}%: our knapsack arms scale "
        "their ratio by budget / the seeds' mean, the others bisect theirs again; every seed runs again at it, unless "
        "the seeds' mean is already within, or an external arm's new bisection gives the structure it had or a probe "
        "no nearer the budget (marked '2nd aim'; "
        "those rows replace the first aim's). Our knapsack cells whose seeds' mean still misses on the report's "
        "timing get a third aim (marked '3rd aim'; its rows replace the earlier ones): the straight line through the "
        "two nearest aims whose final engines bracket the budget (else a step on from the outermost aim), since "
        "the final structure's latency can move several times as far as the aim; the external arms' second bisection "
        "already ended at the structure nearest the budget. Our knapsack cells whose seeds' mean still misses after "
        "that run every seed once more with the library's measured budget (`--measure-budget`, marked 'measured'; its "
        "rows replace the earlier ones): at the budget itself, each run times its candidate structures beside the "
        "dense one where it first reaches the budget and re-aims its knapsack until they measure within "
        f"{100 * MATCH:g}%. The 'within' column is the final engines' measured latency, re-timed "
        "side by side, against the budget: every seed's engine within it, only the seeds' mean (HALP and IEE prune "
        "while they train, so each seed has its own structure), or no.", "",
        "Commands (from the repository root):", "", *[f"    {c}" for c in record["commands"]],
        *[f"    {r['command']}" for r in record["rows"] if r["seed"] == 0],
        *[f"    {c['pilot_command']}" for a in record["architectures"] for c in a["calibrations"] if c["calibrated"]],
        *[f"    {c}" for a in record["architectures"] for c in a["finetune_plateau"]["commands"]], "",
        "## Sizing of the full mode", "", *sizing(), "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 seed: a pipeline check (minutes)")
    parser.add_argument("--tiny", action="store_true", help="the test suite's pipeline check: --quick with one "
                        "Torch-Pruning variant, 1 epoch and two probes per bisection")
    parser.add_argument("--models", default=None, help="comma-separated zoo models (default: resnet20,mobilenet_v3_small; "
                        "quick: resnet20)")
    parser.add_argument("--budgets", default="0.7,0.5,0.35", help="fractions of the dense engine's measured latency")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: 64; tiny: 16)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate of the runs from scratch "
                        "(the dense model and the slimmer network)")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="peak SGD learning rate of every pruned arm's "
                        "fine-tuning from the trained model (the same for all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", default="runs/bench_head_to_head")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    parser.add_argument("--retime", action="store_true", help="time every engine again side by side (default: the "
                        "recorded timing is reused while it timed the same engines)")
    parser.add_argument("--plateau-only", action="store_true", help="run only the dense model and its plateau check "
                        "(D and 0.75 D for every seed), print the check and stop")
    parser.add_argument("--dense-epochs", type=int, default=None, help="D, the dense training epochs of every "
                        "architecture (default: the mode's, per architecture)")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        finetune_worker(args.worker)
        return
    if args.dense_epochs is not None and args.dense_epochs < 1:
        parser.error(f"--dense-epochs must be a positive number of epochs, not {args.dense_epochs}")
    mode = TINY if args.tiny else QUICK if args.quick else FULL
    args.batch_size = args.batch_size or mode.batch_size
    models = (args.models or ("resnet20" if mode is not FULL else "resnet20,mobilenet_v3_small")).split(",")
    meta = header(1, "torchvision", "onnxruntime", "torch-pruning", "nvidia-modelopt")
    data = cifar10_subset(mode.train_per_class, mode.val_per_class)
    commands: list[str] = []
    with ThreadPoolExecutor(max_workers=1) as background:
        archs = [architecture(model, mode, args, data, commands, background) for model in models]
    if args.plateau_only:
        for a in archs:
            check = a["dense_plateau"]
            print(f"{a['model']}: D = {a['dense_epochs']} epochs; 0.75 D minus D, paired by seed: "
                  f"{format_difference(check['difference'])} points: "
                  + ("plateaued" if check["plateaued"] else f"not plateaued (the mean beyond {PLATEAU_POINTS:g})"))
        return
    rows = [r for a in archs for r in a.pop("rows")]
    record = {"meta": meta, "mode": mode.name, "mode_settings": asdict(mode), "args": {k: str(v) if isinstance(v, Path)
              else v for k, v in vars(args).items()}, "architectures": archs, "commands": commands,
              "table": aggregate(rows), "rows": rows}
    name = result_name(mode)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    plot(record, results / f"{name}.png")
    text = markdown(record, f"{name}.png")
    write_results(name, record, text, results)


if __name__ == "__main__":
    main()
