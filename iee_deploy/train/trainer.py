"""The one training loop of every sparsification method: `iee-deploy train`, a user of `Sparsifier`.

SGD with momentum and weight decay, a cosine learning-rate decay after an optional linear
warm-up, evaluation after every epoch (or every `eval_every` epochs and the last: a large
validation set costs its inference each time), a progress bar, and a run folder (`iee_deploy.runs.RunFolder`):
config.json, run.json and a first checkpoint at the start; metrics.jsonl (one record per structure
update and per evaluation) and curves.png; checkpoint.pt at every epoch end, every
`checkpoint_seconds` of training (5 minutes by default) and every `checkpoint_every` steps;
final_model.pt, summary.json and summary.md (plus the space's own files, e.g. channels.json of a
structured run) at the end. One process at a time writes a run folder (`RunFolder.lock`).

The loop knows nothing about any method or task: a `Sparsifier` calls the `SparsityMethod` hooks
around each step and the loop writes the records they return; the run's `Task` (`iee_deploy.tasks`:
classification or detection) gives the data, the loss of a batch and the validation figures. An
epoch's evaluation waits while the method is inside a structure update (`Sparsifier.in_update`,
e.g. between IEE's Prune and Grow), so every logged evaluation sees Theta_K at its budget; it runs
after the first step that ends the update, and its record says at which step.

Resuming: a checkpoint holds the model, optimizer, LR schedule, the sparsifier's state (masks, MRU
values, structure history, its random generator), all RNG states and the loop counters, as tensors
and plain types (read with `weights_only=True`); the data order is a function of (seed, epoch) and
restarts at the checkpoint's batch. With `workers = 0` a resumed run repeats the uninterrupted one
exactly (CPU, same machine). A folder whose run died before its first checkpoint holds no run and
is started afresh. Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and stops.

Under torchrun every rank runs this loop with DistributedDataParallel; rank 0 writes files.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from iee_deploy.data import DataBundle
from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError, brief
from iee_deploy.methods import SparsityMethod
from iee_deploy.models import first_non_finite
from iee_deploy.runs import RunFolder, RunInfo
from iee_deploy.seeding import rng_state, seed_everything, set_rng_state
from iee_deploy.sparse.state import layer_sparsity, overall_sparsity
from iee_deploy.sparse.tracking import UpdateRecord
from iee_deploy.sparsifier import Sparsifier, method_step
from iee_deploy.tasks import StepOutcome, Task, task_named
from iee_deploy.tasks.classification import sgd_step
from iee_deploy.train.config import TrainConfig
from iee_deploy.train.data import ResumableBatchSampler
from iee_deploy.train.summary import plot_curves, structure_stats, write_summary
from runtime.progress import progress as progress_bar
from runtime.progress import write as write_line

CHECKPOINT_SECONDS = 300.0
"""Default time between checkpoints besides epoch ends: a killed run loses at most this much training."""

StepCallback = Callable[[int, nn.Module, SparsityMethod], None]
"""Called after every finished step with (step, model, method); e.g. to inspect masks in tests."""


def cosine_lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@dataclass
class StepResult:
    loss: float
    correct: int
    records: list[UpdateRecord]


def train_step(net: nn.Module, method: SparsityMethod, optimizer: torch.optim.Optimizer, step: int,
               images: torch.Tensor, labels: torch.Tensor) -> StepResult:
    """One optimisation step of `method` at `step` with its hooks in their fixed order (tests, benchmarks);
    the trainer runs the same step inside its `Sparsifier`, which also keeps the run's records."""
    with method_step(method, optimizer, step) as records:
        loss, correct = sgd_step(net, optimizer, images, labels)
    return StepResult(loss, correct, records)


def check_finite_weights(model: nn.Module, source: str) -> None:
    """A model whose weights hold NaN or inf can only diverge: refuse it before training, naming the tensor."""
    name = first_non_finite(model)
    if name is not None:
        raise UserError(f"{source} holds NaN or inf values in '{name}'",
                        "start from a checkpoint saved before the run diverged, or from scratch", fields=("init_checkpoint",))


DECISIVE_SETTINGS = ("task", "model", "method", "dataset")
"""Settings that make a run another run altogether: a resume refusal names these first, so a message that
lists only the first few differences never hides them behind "and N more"."""


RELOCATABLE = ("data_dir", "lut", "target")
"""Settings a resume may give anew without retraining: where the data and the LUT lie, the target's name or path."""


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[tuple[str, str]]:
    """Each setting that differs between a run's config.json and a resume's: (field, "`method` static, not rigl")
    (the method's settings are nested under `sparsity` in the file but are options of their own); the
    `DECISIVE_SETTINGS` first, in that order, then the rest alphabetically."""
    def flat(config: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in config.items() if not isinstance(v, dict)}
        for value in config.values():
            if isinstance(value, dict):
                out.update(value)
        return out

    a, b = flat(stored), flat(wanted)
    rank = {k: i for i, k in enumerate(DECISIVE_SETTINGS)}
    fields = sorted(set(a) | set(b), key=lambda k: (rank.get(k, len(rank)), k))
    return [(k, f"`{k}` {a.get(k)!r}, not {b.get(k)!r}") for k in fields if a.get(k) != b.get(k)]


def nm_shortfall(nm: str, achieved: float) -> str | None:
    """A warning when layers that cannot hold the N:M pattern stay dense, so the run is less sparse than N:M says."""
    n, m = (int(v) for v in nm.split(":"))
    nominal = 1 - n / m
    if achieved >= nominal - 1e-4:
        return None
    return (f"warning: some layers cannot hold {nm} (their input width is not a multiple of {m}) and stay dense: "
            f"the network is {100 * achieved:.2f}% sparse, not {100 * nominal:.2f}%")


def subset_shortfall(asked: dict[str, int | None], held: dict[str, int], dataset: str) -> list[str]:
    """Warnings for subsets larger than their split: the run uses every image, fewer than asked for.

    `asked` and `held`: {"training": N, "validation": N} as requested and as the loaded subsets hold.
    """
    return [f"warning: {n} {split} images asked for, but {dataset} holds {held[split]}; using all {held[split]}"
            for split, n in asked.items() if n is not None and n > held[split]]


def check_loss(loss: float, step: int, total: int, lr: float) -> None:
    """A NaN or inf loss means the run diverged: stop it instead of training on, and reporting, garbage."""
    if not math.isfinite(loss):
        raise UserError(f"training diverged at step {step + 1} of {total}: the loss is {loss}",
                        f"train again into a new `out` with a lower `lr` (now {lr:g}), or check the starting weights "
                        "(this folder's `resume` repeats the same settings)", fields=("lr", "out", "resume"))


def files_a_run_would_replace(run: RunFolder) -> str | None:
    """A file in `run` (a folder without a checkpoint) that a new run would overwrite and that no run that died at
    its start left: a file written only when a run ends, another command's report (an engine folder), or a config.json
    that is not a run's (e.g. a model's)."""
    from iee_deploy.deploy.build import ENGINE_REPORT, VALIDATION_REPORT

    for name in (run.SUMMARY, run.SUMMARY_MD, run.FINAL_MODEL, run.CURVES, run.CHANNELS, ENGINE_REPORT, VALIDATION_REPORT):
        if (run / name).exists():
            return name
    config = run.read_config() if (run / run.CONFIG).exists() else {"model": None, "sparsity": None}
    return None if config is not None and {"model", "sparsity"} <= set(config) else run.CONFIG


def step_or_refuse(task: Task, net: nn.Module, optimizer: torch.optim.Optimizer, batch: Any, size: int) -> StepOutcome:
    """`task.step`, with BatchNorm's refusal of a batch holding one value per channel (one image whose feature
    map has shrunk to 1 x 1) as a one-line UserError naming `batch_size` instead of torch's ValueError."""
    try:
        return task.step(net, optimizer, batch)
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        raise UserError(f"a batch of {size} image(s) is too small for the model's BatchNorm layers ({brief(exc)})",
                        "raise `batch_size` to 2 or more", fields=("batch_size",)) from None


@dataclass
class Progress:
    """Loop counters, saved in every checkpoint (plain types only)."""

    step: int = 0  # the next step to run
    best_val_acc: float = 0.0  # the best of the task's score so far (top-1; a detector's mAP@0.5)
    val: dict[str, float] = field(default_factory=dict)  # the last validation figures, by record name
    epoch_loss: float = 0.0  # sums over the current epoch (this rank)
    epoch_correct: int = 0
    epoch_seen: int = 0
    seconds: float = 0.0
    pending: dict[str, Any] | None = None  # an ended epoch whose evaluation waits for the update to end
    epochs: list[dict[str, Any]] = field(default_factory=list)  # the evaluation records written so far


def progress_fields(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's loop counters as `Progress` takes them (a checkpoint of a classification run may hold its
    last figures as `val_loss` and `val_acc` instead of `val`)."""
    fields = dict(stored)
    legacy = {key: fields.pop(key) for key in ("val_loss", "val_acc") if key in fields}
    if "val" not in fields:
        fields["val"] = {key: value for key, value in legacy.items() if value is not None}
    return fields


@dataclass
class Loop:
    """What one training run holds while it trains."""

    model: nn.Module
    net: nn.Module
    sparsifier: Sparsifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    val: DataLoader
    dist: Distributed
    progress: Progress
    steps_per_epoch: int
    task: Task


class Trainer:
    """Train `config` into the run folder `out` (see the module docstring).

    `model` and `data` replace the ones `config` names (library use and tests); `on_step_end`
    is called after every step; `checkpoint_seconds` (0: off) adds time-based checkpoints.
    """

    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool = False, model: nn.Module | None = None,
                 data: DataBundle | None = None, progress_bar: bool = True, on_step_end: StepCallback | None = None,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        self.config = config
        self.run = RunFolder(out)
        self.resume = resume
        self.model = model
        self.data = data
        self.progress_bar = progress_bar
        self.on_step_end = on_step_end
        self.checkpoint_seconds = checkpoint_seconds
        self._stop = False
        self._stepped = False  # an optimizer step ran: a refusal after it leaves the run folder for inspection

    # --- public ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end (or from the last checkpoint with `resume`); return the summary."""
        if self.config.device == "cuda" and not torch.cuda.is_available():
            raise UserError("`device` cuda but no CUDA GPU is visible to torch", "use `device` cpu", fields=("device",))
        dist = Distributed.from_env(self.config.device)
        previous = self._install_stop_handlers()
        fresh = not self.resume and not self.run.path.exists()
        try:
            with self.run.lock() if dist.is_main else nullcontext():
                self._check_folder()
                return self._fit(dist)
        except UserError:
            if fresh and dist.is_main and not self._stepped:  # refused before it trained: nothing to keep
                shutil.rmtree(self.run.path, ignore_errors=True)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            dist.close()

    # --- run folder ------------------------------------------------------------------------
    def _check_folder(self) -> None:
        run = self.run
        if self.resume:
            if not run.has_checkpoint():
                other = files_a_run_would_replace(run)
                if other is not None:  # a fresh start there would be refused too: say where to start instead
                    raise UserError(f"nothing to resume in '{run}' (no {run.CHECKPOINT}), and it holds {other}, which a "
                                    "new run there would replace", "start the run in another `out` (without `resume`)",
                                    fields=("resume", "out"))
                raise UserError(f"nothing to resume in '{run}' (no {run.CHECKPOINT})", "run without `resume` to start it",
                                fields=("resume",))
            stored, wanted = run.read_config(strict=True), self.config.to_json()
            if stored is not None:  # a config.json without `task` is a classification run's
                stored = {"task": "classification", **stored}
            if stored != wanted:
                changed = config_differences(stored or {}, wanted)
                more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
                raise UserError(f"`resume` with different settings than the run in '{run}' ({'; '.join(text for _, text in changed[:3])}{more})",
                                "repeat the original settings with `resume`, or choose another `out`",
                                fields=("resume", "out", *(field for field, _ in changed[:3])))
        elif run.has_checkpoint():  # a folder without a checkpoint (a run that died at once) is started afresh
            raise UserError(f"'{run}' already holds a training run", "add `resume` to continue it, or choose another `out`",
                            fields=("resume", "out"))
        elif (other := files_a_run_would_replace(run)) is not None:
            raise UserError(f"'{run}' holds {other} but no training run: a run there would replace it",
                            "choose another `out`, or move that file away", fields=("out",))

    def _install_stop_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum: int, frame: FrameType | None) -> None:
            if self._stop:  # a second request: stop at once
                raise KeyboardInterrupt
            self._stop = True

        return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    # --- the loop --------------------------------------------------------------------------
    def _fit(self, dist: Distributed) -> dict[str, Any]:
        cfg = self.config
        seed_everything(cfg.seed)
        task = task_named(cfg.task)
        bundle = self.data or task.datasets(cfg)
        num_classes = cfg.num_classes or bundle.num_classes
        if dist.is_main:
            for shortfall in subset_shortfall({"training": cfg.subset, "validation": cfg.val_subset},
                                              {"training": len(bundle.train), "validation": len(bundle.val)}, cfg.dataset):
                write_line(shortfall)
        model = self.model or task.build_model(cfg.model, num_classes, bundle.resolution, cfg.init_checkpoint)
        check_finite_weights(model, f"checkpoint '{cfg.init_checkpoint}'" if cfg.init_checkpoint else "the model")
        task.check_model(model, num_classes, bundle.resolution)
        # channels-last: cuDNN's and oneDNN's fast convolutions (see device_data)
        model.to(dist.device).to(memory_format=torch.channels_last)
        sampler = ResumableBatchSampler(len(bundle.train), cfg.batch_size, cfg.seed, dist.rank, dist.world)
        loader = task.train_batches(bundle.train, sampler, dist.device, cfg)
        steps_per_epoch = len(sampler)
        total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(cosine_lr_factor, total=total, warmup=warmup))
        sparsifier = Sparsifier(model, optimizer, total, cfg.sparsity, seed=cfg.seed, resolution=bundle.resolution,
                                dist=dist)
        if cfg.sparsity.nm and dist.is_main:
            warning = nm_shortfall(cfg.sparsity.nm, overall_sparsity(sparsifier.method.state))
            if warning:
                write_line(warning)
        info = RunInfo(model=cfg.model, num_classes=num_classes, resolution=bundle.resolution, dataset=cfg.dataset,
                       data_dir=cfg.data_dir, method=cfg.sparsity.method, kind=cfg.sparsity.kind,
                       classes=list(bundle.classes) if bundle.classes else None, **sparsifier.method.run_facts())
        loop = Loop(model, DistributedDataParallel(model) if dist.world > 1 else model, sparsifier, optimizer, scheduler,
                    task.val_batches(bundle.val, cfg, dist.rank, dist.world), dist, Progress(), steps_per_epoch, task)
        if self.resume:
            self._load_checkpoint(loop)
        elif dist.is_main:
            self.run.write_config(cfg.to_json())
            self.run.write_info(info)
            self.run.start_metrics()
            self._save_checkpoint(loop)  # from here on the folder can be resumed
        model.train()  # a model handed in eval mode (Torch-Pruning leaves one so) would train on frozen BN statistics
        progress = loop.progress
        show = self.progress_bar and dist.is_main
        started = time.perf_counter() - progress.seconds
        last_checkpoint = time.perf_counter()
        epochs = math.ceil(total / steps_per_epoch)
        batches: Iterator[Any] | None = None
        bar: Any = None

        while progress.step < total:
            step = progress.step
            epoch, batch = divmod(step, steps_per_epoch)
            if batches is None:
                sampler.set_position(epoch, batch)
                batches = iter(loader)
                bar = progress_bar(total=min(steps_per_epoch, total - epoch * steps_per_epoch), initial=batch,
                                   desc=f"epoch {epoch + 1}/{epochs}", unit="step", enabled=show)
            batch = task.to_device(next(batches), dist.device)
            size = task.batch_len(batch)
            with sparsifier.step(size) as records:
                outcome = step_or_refuse(task, loop.net, optimizer, batch, size)
            self._stepped = True
            loss = outcome.loss
            check_loss(loss, step, total, cfg.lr)
            scheduler.step()
            progress.epoch_loss += loss * size
            progress.epoch_correct += outcome.correct or 0
            progress.epoch_seen += size
            progress.step = step + 1
            progress.seconds = time.perf_counter() - started
            if dist.is_main:
                for record in sparsifier.history[len(sparsifier.history) - len(records):]:
                    self.run.append({"type": "update", **record, "epoch": record["step"] / steps_per_epoch})
            if self.on_step_end is not None:
                self.on_step_end(step, model, sparsifier.method)
            assert bar is not None
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix_str(f"loss {loss:.3f} {sparsifier.method.stage_name(step)}")

            epoch_done = progress.step % steps_per_epoch == 0 or progress.step == total
            if epoch_done:
                bar.close()
                batches = None
                self._end_epoch(loop, epoch, validate=progress.step == total or (epoch + 1) % cfg.eval_every == 0)
            if progress.pending is not None and (not sparsifier.in_update or progress.step == total):
                self._evaluate(loop)
            due = (epoch_done or (cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0)
                   or (self.checkpoint_seconds and time.perf_counter() - last_checkpoint >= self.checkpoint_seconds))
            saved = dist.any(bool(due))
            if saved:
                self._save_checkpoint(loop)
                last_checkpoint = time.perf_counter()
            if dist.any(self._stop):
                if not saved:
                    self._save_checkpoint(loop)
                raise KeyboardInterrupt

        return self._finish(loop, info, total, bundle)

    def _end_epoch(self, loop: Loop, epoch: int, validate: bool) -> None:
        """Close the epoch's training statistics; where the epoch is one to `validate`, its evaluation (and epoch
        record) follows once no update is open."""
        progress, dist = loop.progress, loop.dist
        totals = [progress.epoch_loss, progress.epoch_correct, progress.epoch_seen]
        progress.epoch_loss, progress.epoch_correct, progress.epoch_seen = 0.0, 0, 0
        if not validate:  # every rank decides alike, so none waits on the sum below
            return
        loss, correct, seen = dist.sum_(torch.tensor(totals, dtype=torch.float64, device=dist.device)).tolist()
        progress.pending = {"type": "epoch", "epoch": epoch + 1, "train_loss": loss / max(seen, 1)}
        if loop.task.counts_correct:
            progress.pending["train_acc"] = correct / max(seen, 1)

    def _evaluate(self, loop: Loop) -> None:
        """Evaluate Theta_K, write the pending epoch record, print it and redraw curves.png."""
        progress, dist, sparsifier = loop.progress, loop.dist, loop.sparsifier
        assert progress.pending is not None
        for buffer in loop.model.buffers():  # BN statistics: every rank evaluates with rank 0's, which rank 0 saves
            dist.broadcast_(buffer)
        with sparsifier.evaluation():
            progress.val = loop.task.evaluate(loop.model, loop.val, dist)
        score = progress.val[loop.task.score]
        progress.best_val_acc = max(progress.best_val_acc, score) if math.isfinite(score) else progress.best_val_acc
        sparsity = overall_sparsity(sparsifier.method.state)
        record = {**progress.pending, "step": progress.step - 1, "lr": loop.optimizer.param_groups[0]["lr"],
                  **progress.val, "sparsity": sparsity, "train_flops": sparsifier.train_flops, "seconds": progress.seconds}
        progress.pending = None
        progress.epochs.append(record)
        if dist.is_main:
            self.run.append(record)
            plot_curves(progress.epochs, self.run, loop.task.score, loop.task.score_label)
            write_line(f"epoch {record['epoch']}: {loop.task.epoch_text(record)} | "
                       f"sparsity {100 * sparsity:.2f}% | {progress.seconds:.0f} s")

    # --- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self, loop: Loop) -> None:
        if not loop.dist.is_main:
            return
        self.run.save_checkpoint({
            "progress": asdict(loop.progress), "model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict(), "sparsifier": loop.sparsifier.state_dict(), "rng": rng_state(),
            "config": self.config.to_json(),
        })

    def _load_checkpoint(self, loop: Loop) -> None:
        ckpt = self.run.load_checkpoint(loop.dist.device)
        saved = ckpt.get("config")  # the settings the checkpoint was trained with (config.json may have been edited)
        changed = [text for field, text in config_differences({"task": "classification", **saved}, self.config.to_json())
                   if field not in RELOCATABLE] if isinstance(saved, dict) else []
        if changed:
            raise UserError(f"checkpoint '{self.run / self.run.CHECKPOINT}' was trained with other settings than "
                            f"config.json holds ({'; '.join(changed[:3])}): config.json was edited, or the checkpoint "
                            "is another run's", "restore the run's own files, or start the run again in a new `out`",
                            fields=("out",))
        try:
            loop.model.load_state_dict(ckpt["model"])
            loop.optimizer.load_state_dict(ckpt["optimizer"])
            loop.scheduler.load_state_dict(ckpt["scheduler"])
            loop.sparsifier.load_state_dict(ckpt["sparsifier"])
            loop.progress = Progress(**progress_fields(ckpt["progress"]))
            set_rng_state(ckpt["rng"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"checkpoint '{self.run / self.run.CHECKPOINT}' cannot be resumed "
                            f"({type(exc).__name__}: {brief(exc, 80)})",
                            "start the run again in a new `out`", fields=("out",)) from None
        if loop.dist.is_main:  # drop records written after the checkpoint; the resumed run writes them again
            self.run.keep_metrics_before(loop.progress.step)

    # --- the end ---------------------------------------------------------------------------
    def _finish(self, loop: Loop, info: RunInfo, total: int, bundle: DataBundle) -> dict[str, Any]:
        cfg, dist, progress, sparsifier = self.config, loop.dist, loop.progress, loop.sparsifier
        method = sparsifier.method
        zeta_p, zeta_d = sparsifier.sparse_flops, sparsifier.dense_flops
        samples = total * min(cfg.batch_size, len(bundle.train) // dist.world) * dist.world
        appendix = method.appendix_train_flops(zeta_p, zeta_d)
        facts = method.run_facts()
        summary: dict[str, Any] = {
            "method": cfg.sparsity.method, "kind": cfg.sparsity.kind, "settings": method.describe(),
            "model": cfg.model, "dataset": cfg.dataset, "resolution": bundle.resolution,
            "epochs": cfg.epochs, "steps": total, "steps_per_epoch": loop.steps_per_epoch,
            "global_batch": cfg.batch_size * dist.world, "task": cfg.task, "score": loop.task.score,
            "score_label": loop.task.score_label, **progress.val, f"best_{loop.task.score}": progress.best_val_acc,
            "sparsity": {"target": facts["sparsity"], "distribution": cfg.sparsity.distribution,
                         "nm": facts["nm"], "achieved": overall_sparsity(method.state),
                         "layers": layer_sparsity(method.state)},
            "flops": {"dense_forward": zeta_d, "sparse_forward": zeta_p, "train_total": sparsifier.train_flops,
                      "train_dense_equivalent": 3 * zeta_d * samples,
                      "train_relative": sparsifier.train_flops / (3 * zeta_d * samples),
                      "appendix_relative": None if appendix is None else appendix / (3 * zeta_d)},
            "structure": structure_stats(self.run.updates()) if dist.is_main else {},
            "seconds": progress.seconds,
            **method.summary(),
        }
        if dist.is_main:
            self.run.save_final_model(sparsifier.active_state_dict())
            for name, content in method.artifacts().items():
                self.run.write_json(name, content)
            write_summary(self.run, summary)
            info = replace(info, **facts)
            info.finished = True
            info.extra = {loop.task.score: progress.val.get(loop.task.score), "achieved_sparsity": summary["sparsity"]["achieved"],
                          "sparse_forward_flops": zeta_p}
            self.run.write_info(info)
        return summary
