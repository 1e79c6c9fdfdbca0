"""The one training loop of every sparsification method.

SGD with momentum and weight decay, a cosine learning-rate decay after an optional linear
warm-up, evaluation after every epoch, a progress bar, and a run folder (`iee_deploy.runs`):
config.json and run.json at the start; metrics.jsonl (one record per structure update and per
epoch); checkpoint.pt at every epoch end (and every `checkpoint_every` steps); final_model.pt,
pruned_model.pt, summary.json and summary.md (plus the space's own files, e.g. channels.json of
a structured run) at the end.

The loop knows nothing about any method: it calls the `SparsityMethod` hooks (see
`iee_deploy.methods.base`) around each step and writes the `UpdateRecord`s they return.

Resuming: a checkpoint holds the model, optimizer, LR schedule, the method's state (masks, MRU
values, structure history, its random generator), all RNG states and the loop counters; the
data order is a function of (seed, epoch) and restarts at the checkpoint's batch. With
`workers = 0` a resumed run repeats the uninterrupted one exactly (CPU, same machine). Ctrl-C or
SIGTERM finishes the current step, writes a checkpoint and stops.

Under torchrun every rank runs this loop with DistributedDataParallel; rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from iee_deploy.data import DataBundle, build_datasets
from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError
from iee_deploy.flops import forward_flops, layer_costs, train_step_flops
from iee_deploy.io import append_jsonl, save_torch, write_json, write_text
from iee_deploy.methods import SparsityMethod, TrainContext, build_method
from iee_deploy.models import build_model
from iee_deploy.runs import FINAL_MODEL, PRUNED_MODEL, RunInfo, write_run_info
from iee_deploy.seeding import rng_state, seed_everything, set_rng_state
from iee_deploy.sparse.state import layer_sparsity, overall_sparsity
from iee_deploy.sparse.tracking import UpdateRecord
from iee_deploy.train.config import TrainConfig
from iee_deploy.train.data import ResumableBatchSampler, train_loader, val_loader
from iee_deploy.train.gpu_data import device_train_loader
from iee_deploy.train.summary import read_metrics, structure_stats, write_summary

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"

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
    """One optimisation step with the method's hooks in their fixed order."""
    records = method.on_step_start(step)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):  # bf16 on CUDA (see gpu_data)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    records += method.after_backward(step)
    method.before_optimizer_step(step)
    optimizer.step()
    method.after_optimizer_step(step)
    return StepResult(float(loss.detach()), int((logits.argmax(1) == labels).sum()), records)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, dist: Distributed) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) over the validation set, summed over all ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=dist.device)
    for images, labels in loader:
        images, labels = images.to(dist.device), labels.to(dist.device)
        logits = model(images)
        totals += torch.tensor([float(F.cross_entropy(logits, labels, reduction="sum")),
                                int((logits.argmax(1) == labels).sum()), len(labels)], device=dist.device,
                               dtype=torch.float64)
    model.train(was_training)
    loss, correct, seen = dist.sum_(totals).tolist()
    return loss / max(seen, 1), correct / max(seen, 1)


@dataclass
class Progress:
    """Loop counters, saved in every checkpoint."""

    step: int = 0  # the next step to run
    train_flops: float = 0.0
    best_val_acc: float = 0.0
    val_loss: float | None = None
    val_acc: float | None = None
    epoch_loss: float = 0.0  # sums over the current epoch (this rank)
    epoch_correct: int = 0
    epoch_seen: int = 0
    seconds: float = 0.0


class Trainer:
    """Train `config` into the run folder `out` (see the module docstring).

    `model` and `data` replace the ones `config` names (library use and tests); `on_step_end`
    is called after every step.
    """

    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool = False, model: nn.Module | None = None,
                 data: DataBundle | None = None, progress_bar: bool = True, on_step_end: StepCallback | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.resume = resume
        self.model = model
        self.data = data
        self.progress_bar = progress_bar
        self.on_step_end = on_step_end
        self._stop = False

    # --- public ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end (or from the last checkpoint with `resume`); return the summary."""
        if self.config.device == "cuda" and not torch.cuda.is_available():
            raise UserError("`device` cuda but no CUDA GPU is visible to torch", "use `device` cpu", fields=("device",))
        self._check_folder()
        dist = Distributed.from_env(self.config.device)
        previous = self._install_stop_handlers()
        try:
            return self._fit(dist)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            dist.close()

    # --- run folder ------------------------------------------------------------------------
    def _check_folder(self) -> None:
        ckpt, config_file = self.out / CHECKPOINT, self.out / CONFIG
        if self.resume:
            if not ckpt.is_file():
                raise UserError(f"nothing to resume in '{self.out}' (no {CHECKPOINT})", "run without `resume` to start it",
                                fields=("resume",))
            stored = json.loads(config_file.read_text()) if config_file.is_file() else None
            if stored != self.config.to_json():
                changed = sorted(k for k in self.config.to_json() if stored is None or stored.get(k) != self.config.to_json()[k])
                raise UserError(f"`resume` with different settings than the run in '{self.out}' ({', '.join(changed)})",
                                "repeat the original settings with `resume`, or choose another `out`", fields=("resume", "out"))
        elif ckpt.is_file() or (self.out / "run.json").is_file():
            raise UserError(f"'{self.out}' already holds a training run", "add `resume` to continue it, or choose another `out`",
                            fields=("resume", "out"))

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
        bundle = self.data or build_datasets(cfg.dataset, cfg.data_dir, cfg.resolution, cfg.subset)
        num_classes = cfg.num_classes or bundle.num_classes
        model = self.model or build_model(cfg.model, num_classes, bundle.resolution, cfg.init_checkpoint)
        model.to(dist.device)
        if dist.device.type == "cuda":  # cuDNN's fast convolutions work in channels-last (see gpu_data)
            model.to(memory_format=torch.channels_last)
        method = build_method(cfg.sparsity, model, dist, cfg.seed)
        costs = layer_costs(model, bundle.resolution)
        zeta_d = forward_flops(costs)

        sampler = ResumableBatchSampler(len(bundle.train), cfg.batch_size, cfg.seed, dist.rank, dist.world)
        # On CUDA: in-memory images held and augmented on the device (see gpu_data)
        loader: Iterable[tuple[torch.Tensor, torch.Tensor]] = device_train_loader(
            bundle.train, sampler, dist.device, cfg.seed) or train_loader(bundle.train, sampler, cfg.workers, cfg.seed)
        val = val_loader(bundle.val, max(cfg.batch_size, 256), cfg.workers, dist.rank, dist.world)
        steps_per_epoch = len(sampler)
        total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(cosine_lr_factor, total=total, warmup=warmup))
        method.setup(TrainContext(total, optimizer))

        progress = Progress()
        info = RunInfo(model=cfg.model, num_classes=num_classes, resolution=bundle.resolution, dataset=cfg.dataset,
                       data_dir=cfg.data_dir, method=cfg.sparsity.method, kind=cfg.sparsity.kind, **method.run_facts())
        if self.resume:
            progress = self._load_checkpoint(model, optimizer, scheduler, method, dist)
        elif dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG, cfg.to_json())
            write_run_info(self.out, info)
            write_text(self.out / METRICS, "")
        net: nn.Module = DistributedDataParallel(model) if dist.world > 1 else model
        show = self.progress_bar and dist.is_main
        zeta_p = forward_flops(costs, method.state.active_weights())
        started = time.perf_counter() - progress.seconds
        epochs = math.ceil(total / steps_per_epoch)
        batches = None
        bar: tqdm | None = None

        while progress.step < total:
            step = progress.step
            epoch, batch = divmod(step, steps_per_epoch)
            if batches is None:
                sampler.set_position(epoch, batch)
                batches = iter(loader)
                bar = tqdm(total=min(steps_per_epoch, total - epoch * steps_per_epoch), initial=batch,
                           desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False, dynamic_ncols=True)
            images, labels = next(batches)
            images, labels = images.to(dist.device, non_blocking=True), labels.to(dist.device, non_blocking=True)
            cost = method.step_cost(step)
            result = train_step(net, method, optimizer, step, images, labels)
            scheduler.step()
            if result.records:
                zeta_p = forward_flops(costs, method.state.active_weights())
            progress.train_flops += train_step_flops(cost, zeta_p, zeta_d) * len(labels) * dist.world
            progress.epoch_loss += result.loss * len(labels)
            progress.epoch_correct += result.correct
            progress.epoch_seen += len(labels)
            progress.step = step + 1
            progress.seconds = time.perf_counter() - started
            if dist.is_main:
                for record in result.records:
                    self._log_update(record, steps_per_epoch, zeta_p, zeta_d, progress.train_flops)
            if self.on_step_end is not None:
                self.on_step_end(step, model, method)
            assert bar is not None
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix_str(f"loss {result.loss:.3f} {method.stage_name(step)}")

            epoch_done = progress.step % steps_per_epoch == 0 or progress.step == total
            if epoch_done:
                bar.close()
                batches = None
                self._end_epoch(model, method, val, dist, progress, epoch, optimizer)
            if epoch_done or (cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0):
                self._save_checkpoint(model, optimizer, scheduler, method, progress, dist)
            if dist.any(self._stop):
                if not epoch_done:
                    self._save_checkpoint(model, optimizer, scheduler, method, progress, dist)
                raise KeyboardInterrupt

        return self._finish(model, method, info, progress, zeta_p, zeta_d, total, steps_per_epoch, bundle, dist)

    def _log_update(self, record: UpdateRecord, steps_per_epoch: int, zeta_p: float, zeta_d: float, flops: float) -> None:
        data = asdict(record)
        extra = data.pop("extra")
        append_jsonl(self.out / METRICS, {"type": "update", **data, "epoch": record.step / steps_per_epoch, **extra,
                                          "forward_flops": zeta_p, "dense_forward_flops": zeta_d, "train_flops": flops})

    def _end_epoch(self, model: nn.Module, method: SparsityMethod, val: DataLoader, dist: Distributed,
                   progress: Progress, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        for buffer in model.buffers():  # BN statistics: every rank evaluates with rank 0's, which rank 0 saves
            dist.broadcast_(buffer)
        with method.evaluation():
            progress.val_loss, progress.val_acc = evaluate(model, val, dist)
        progress.best_val_acc = max(progress.best_val_acc, progress.val_acc)
        loss, correct, seen = dist.sum_(torch.tensor([progress.epoch_loss, progress.epoch_correct, progress.epoch_seen],
                                                     dtype=torch.float64, device=dist.device)).tolist()
        sparsity = overall_sparsity(method.state)
        record = {"type": "epoch", "epoch": epoch + 1, "step": progress.step - 1, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": loss / max(seen, 1), "train_acc": correct / max(seen, 1), "val_loss": progress.val_loss,
                  "val_acc": progress.val_acc, "sparsity": sparsity, "train_flops": progress.train_flops,
                  "seconds": progress.seconds}
        progress.epoch_loss, progress.epoch_correct, progress.epoch_seen = 0.0, 0, 0
        if dist.is_main:
            append_jsonl(self.out / METRICS, record)
            tqdm.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:.2f}% | "
                       f"val loss {progress.val_loss:.4f} acc {100 * progress.val_acc:.2f}% | "
                       f"sparsity {100 * sparsity:.2f}% | {progress.seconds:.0f} s")

    # --- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                         method: SparsityMethod, progress: Progress, dist: Distributed) -> None:
        if not dist.is_main:
            return
        save_torch(self.out / CHECKPOINT, {
            "progress": asdict(progress), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "method": method.state_dict(), "rng": rng_state(),
            "config": self.config.to_json(),
        })

    def _load_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                         method: SparsityMethod, dist: Distributed) -> Progress:
        path = self.out / CHECKPOINT
        try:
            ckpt = torch.load(path, map_location=dist.device, weights_only=False)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            method.load_state_dict(ckpt["method"])
            progress = Progress(**ckpt["progress"])
        except (RuntimeError, KeyError, TypeError, EOFError) as exc:
            raise UserError(f"checkpoint '{path}' cannot be resumed ({type(exc).__name__}: {str(exc)[:80]})",
                            "start the run again in a new `out`", fields=("out",)) from None
        set_rng_state(ckpt["rng"])
        if dist.is_main:  # drop records written after the checkpoint; the resumed run writes them again
            kept = [r for r in read_metrics(self.out / METRICS) if r["step"] < progress.step]
            write_text(self.out / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
        return progress

    # --- the end ---------------------------------------------------------------------------
    def _finish(self, model: nn.Module, method: SparsityMethod, info: RunInfo, progress: Progress, zeta_p: float,
                zeta_d: float, total: int, steps_per_epoch: int, bundle: DataBundle, dist: Distributed) -> dict[str, Any]:
        cfg = self.config
        global_batch = cfg.batch_size * dist.world
        samples = total * min(cfg.batch_size, len(bundle.train) // dist.world) * dist.world
        appendix = method.appendix_train_flops(zeta_p, zeta_d)
        layers = layer_sparsity(method.state)
        facts = method.run_facts()
        summary: dict[str, Any] = {
            "method": cfg.sparsity.method, "kind": cfg.sparsity.kind, "settings": method.describe(),
            "model": cfg.model, "dataset": cfg.dataset, "resolution": bundle.resolution,
            "epochs": cfg.epochs, "steps": total, "steps_per_epoch": steps_per_epoch, "global_batch": global_batch,
            "val_loss": progress.val_loss, "val_acc": progress.val_acc, "best_val_acc": progress.best_val_acc,
            "sparsity": {"target": facts["sparsity"], "distribution": cfg.sparsity.distribution,
                         "nm": facts["nm"], "achieved": overall_sparsity(method.state), "layers": layers},
            "flops": {"dense_forward": zeta_d, "sparse_forward": zeta_p, "train_total": progress.train_flops,
                      "train_dense_equivalent": 3 * zeta_d * samples,
                      "train_relative": progress.train_flops / (3 * zeta_d * samples),
                      "appendix_relative": None if appendix is None else appendix / (3 * zeta_d)},
            "structure": structure_stats(read_metrics(self.out / METRICS)) if dist.is_main else {},
            "seconds": progress.seconds,
            **method.summary(),
        }
        if dist.is_main:
            with method.evaluation():
                final = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            save_torch(self.out / FINAL_MODEL, final)
            save_torch(self.out / PRUNED_MODEL, method.pruned_model(model))
            for name, content in method.artifacts().items():
                write_json(self.out / name, content)
            write_summary(self.out, summary)
            info = replace(info, **facts)
            info.finished = True
            info.extra = {"val_acc": progress.val_acc, "achieved_sparsity": summary["sparsity"]["achieved"],
                          "sparse_forward_flops": zeta_p}
            write_run_info(self.out, info)
        return summary

