"""`iee-deploy train`: sparse training with IEE or a baseline, unstructured or under a latency budget."""

from __future__ import annotations

import os
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

import click

from iee_deploy.cli.options import FRACTION, data_options, model_options
from iee_deploy.errors import UserError
from iee_deploy.io import check_writable
from iee_deploy.methods import METHODS, STRUCTURED_METHODS, GrowCriterion, SparsityConfig, parse_nm
from iee_deploy.methods.schedule import Decay
from iee_deploy.runs import RunFolder
from iee_deploy.sparse.distributions import Distribution
from iee_deploy.sparse.state import GrowInit
from iee_deploy.structured.space import Start


def _values(enum: type[Enum]) -> list[str]:
    return [member.value for member in enum]


def _hjq(text: str) -> tuple[int, int, int] | None:
    if text == "auto":
        return None
    try:
        h, j, q = (int(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not three iteration counts; pass e.g. 150,150,150 (or auto)",
                                 param_hint="'--hjq'") from None
    return h, j, q


def _delta_t(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"'{text}' is not a positive number of steps; pass e.g. 100 (or auto)",
                                 param_hint="'--delta-t'")
    return int(text)


@click.command("train")
@click.option("--task", default="classification", show_default=True,
              help="classification, or detection: a torchvision detector (--model ssdlite, retinanet_resnet18, "
                   "fcos_resnet18 or package.module:factory; default ssdlite) on --dataset digits (scenes of the "
                   "digits, offline), voc or coco at --data-dir, scored by mAP.")
@model_options
@data_options
@click.option("--method", type=click.Choice(list(dict.fromkeys([*METHODS, *STRUCTURED_METHODS]))), default="iee", show_default=True,
              help="Sparsification method; all share one training loop. iee: the paper's prune / reactivate & explore / grow; "
                   "rigl: magnitude drop, gradient grow; set: magnitude drop, random grow; static: fixed random mask; "
                   "gmp: gradual magnitude pruning from dense (Zhu & Gupta); halp: latency-constrained channel pruning "
                   "(Shen et al.), structured only. With --latency-ms/--latency-ratio, iee and halp prune channels.")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Unstructured: fraction of prunable (conv and linear) weights removed, 0-1. Default 0.9, or 1-N/M with --nm.")
@click.option("--distribution", type=click.Choice(_values(Distribution)), default="erk", show_default=True,
              help="Unstructured: how sparsity is spread over layers (global: ranked over all layers, ERK start).")
@click.option("--nm", default=None, help="Unstructured N:M pattern along the input dimension, e.g. 2:4 (layers whose "
                                        "input channels are not a multiple of M stay dense).")
@click.option("--latency-ms", type=click.FloatRange(0, min_open=True), default=None,
              help="Structured: latency budget Psi in ms per batch on the LUT's target, at the LUT's batch size and "
                   "precision, as the LUT's latency model predicts it.")
@click.option("--latency-ratio", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Structured: latency budget Psi as a fraction (0-1] of the dense model's predicted latency.")
@click.option("--target", default=None,
              help="Structured: hardware target name (targets/*.yaml) or YAML path; must be the LUT's (default: the LUT's).")
@click.option("--lut", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Structured: latency lookup table (.csv, .json beside it) from `iee-deploy profile` for this model, "
                   "class count and resolution.")
@click.option("--descent", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="Structured IEE from a --checkpoint: share (0-1) of the update window spent pruning the dense model "
                   "down to Psi with HALP's exponential schedule before IEE's updates.")
@click.option("--measure-budget", is_flag=True,
              help="Structured: where the structure first reaches Psi, time the pruned network on this machine (which "
                   "must be the LUT's target) beside the dense one, and re-aim Psi until their measured ratio meets "
                   "the budget's, so the engine lands on the budget and not only the LUT's prediction.")
@click.option("--budget-tolerance", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.02,
              show_default=True, help="With --measure-budget: relative miss of the measured latency ratio accepted.")
@click.option("--measure-seconds", type=click.FloatRange(0), default=20.0, show_default=True,
              help="With --measure-budget: each structure is timed in passes until its lowest reading has held for "
                   "this many seconds (at most 6 times as long in all); longer outlasts a shared machine's bursts of load.")
@click.option("--hjq", default="auto", show_default=True,
              help="IEE iterations H,J,Q: importance estimation, accuracy improvement, reactivate & explore (steps), "
                   "e.g. 150,150,150. auto: the paper's 150,150,150 when 4 such updates fit, else the short-run rule (a period with "
                   "4 updates, Q = J = 1/10 of it; the run summary says which and why).")
@click.option("--delta-t", default="auto", show_default=True,
              help="RigL / SET / GMP update interval, HALP prune interval (also the descent of structured IEE from a "
                   "--checkpoint), in steps. auto: the papers' (100; HALP 40), or shorter so >= 4 updates fit.")
@click.option("--omega0", type=FRACTION, default=0.3, show_default=True,
              help="Update budget Omega_0 (RigL/SET: alpha): fraction 0-1 of the active weights (structured: of the "
                   "latency budget Psi, in ms) moved at the first update.")
@click.option("--omega-decay", type=click.Choice(_values(Decay)), default=None,
              help="How the update budget decays over the updates (cosine as RigL; exponential to 1% of Omega_0). "
                   "Default: the paper's, cosine unstructured, exponential structured (HALP's scheduler).")
@click.option("--update-end", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Fraction 0-1 of training after which the structure stops changing (GMP and HALP reach the target "
                   "there). Default: the paper's, 0.75 unstructured, 5/130 structured (epoch 5 of 130).")
@click.option("--no-freeze", is_flag=True, help="IEE ablation: train Theta_K too during reactivate & explore.")
@click.option("--grow-init", type=click.Choice(_values(GrowInit)), default=None,
              help="Value of re-entering weights: mru (most recently used) or zero. Default: mru for iee, zero for rigl/set.")
@click.option("--grow-criterion", type=click.Choice(_values(GrowCriterion)), default=None,
              help="IEE ablation: grow by magnitude after exploring (default, the prune criterion) or at random.")
@click.option("--gmp-start", type=FRACTION, default=0.0, show_default=True, help="GMP: fraction 0-1 of training before pruning starts.")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=10, show_default=True, help="Training epochs (fractions allowed).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True, help="Peak SGD learning rate (cosine decay).")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(0), default=5e-4, show_default=True, help="SGD weight decay (L2 coefficient).")
@click.option("--warmup-epochs", type=click.FloatRange(0), default=0.0, show_default=True, help="Linear learning-rate warm-up (epochs).")
@click.option("--checkpoint-every", type=click.IntRange(0), default=0, show_default=True,
              help="Also checkpoint every N steps (0: only at the start, at each epoch end and every 5 minutes).")
@click.option("--eval-every", type=click.IntRange(1), default=1, show_default=True,
              help="Validate every N epochs and after the last (a large validation set costs its inference each time).")
@click.option("--out", type=click.Path(file_okay=False), default="runs/train", show_default=True, help="Run folder to write.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same options).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Training device.")
@click.option("--no-progress", is_flag=True, help="No progress bar (epoch lines are still printed).")
@click.pass_context
def train(ctx: click.Context, task: str, model_name: str, num_classes: int | None, resolution: int | None, checkpoint: str | None, dataset: str,
          data_dir: str | None, subset: int | None, val_subset: int | None, batch_size: int, workers: int, seed: int, method: str,
          sparsity: float | None, distribution: str, nm: str | None, latency_ms: float | None, latency_ratio: float | None,
          target: str | None, lut: str | None, descent: float, measure_budget: bool, budget_tolerance: float, measure_seconds: float, hjq: str, delta_t: str, omega0: float, omega_decay: str | None, update_end: float | None,
          no_freeze: bool, grow_init: str | None, grow_criterion: str | None, gmp_start: float, epochs: float, lr: float,
          momentum: float, weight_decay: float, warmup_epochs: float, checkpoint_every: int, eval_every: int, out: str, resume: bool,
          device: str, no_progress: bool) -> None:
    """Train a sparse network (IEE by default) into a run folder: config.json, run.json, metrics.jsonl,
    checkpoint.pt, curves.png, final_model.pt, summary.json and summary.md."""
    from iee_deploy.tasks import task_named
    from iee_deploy.train import TrainConfig, Trainer

    learner = task_named(task)
    if ctx.get_parameter_source("model_name") is click.core.ParameterSource.DEFAULT:
        model_name = learner.default_model
    learner.check_model_name(model_name)
    structured = latency_ms is not None or latency_ratio is not None
    if structured and (sparsity is not None or nm is not None):
        raise UserError("--sparsity and --nm set unstructured sparsity, but a latency budget prunes channels",
                        "pass either --latency-ms / --latency-ratio (structured) or --sparsity / --nm")
    if not structured and (target is not None or lut is not None or method == "halp" or measure_budget):
        what = ("--method halp needs" if method == "halp" else "--measure-budget needs" if measure_budget
                else "--target and --lut need")
        raise UserError(f"{what} a latency budget",
                        "pass --latency-ms or --latency-ratio (with --lut), or train unstructured with --sparsity")
    if nm is not None and sparsity is None:
        sparsity = 1 - parse_nm(nm).density
    check_writable(out, "out", folder=True)
    sparse = SparsityConfig(
        method=method, sparsity=0.9 if sparsity is None else sparsity, distribution=Distribution(distribution), nm=nm,
        hjq=_hjq(hjq), delta_t=_delta_t(delta_t), omega0=omega0, omega_decay=None if omega_decay is None else Decay(omega_decay),
        update_end=update_end,
        freeze=not no_freeze, grow_init=None if grow_init is None else GrowInit(grow_init),
        grow_criterion=None if grow_criterion is None else GrowCriterion(grow_criterion), gmp_start=gmp_start,
        latency_ms=latency_ms, latency_ratio=latency_ratio, target=target, lut=lut,
        start=Start.DENSE if checkpoint and structured else Start.SCRATCH, descent=descent,
        measure_budget=measure_budget, budget_tolerance=budget_tolerance, measure_seconds=measure_seconds,
    )
    config = TrainConfig(task=task, model=model_name, dataset=dataset, data_dir=data_dir, resolution=resolution,
                         num_classes=num_classes, subset=subset, val_subset=val_subset, init_checkpoint=checkpoint, epochs=epochs,
                         batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, workers=workers, seed=seed, device=device,
                         checkpoint_every=checkpoint_every, eval_every=eval_every, sparsity=sparse)
    bundle = learner.datasets(config)
    config = replace(config, resolution=bundle.resolution)
    learner.check_fits_data(config, bundle)
    if structured:  # the LUT must describe this model at this resolution, before any data is trained on
        from iee_deploy.structured.budget import open_latency_model

        classes = num_classes or bundle.num_classes
        open_latency_model(lut, target, learner.build_model(model_name, classes, bundle.resolution, None), model_name=model_name,
                           num_classes=classes, resolution=bundle.resolution)
    summary = Trainer(config, out, resume=resume, data=bundle, progress_bar=not no_progress).fit()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    survival = summary["structure"].get("mean_survival")
    latency = summary.get("latency")
    budget = f"at sparsity {100 * summary['sparsity']['achieved']:.2f}%" if latency is None else \
        (f"at predicted latency {latency['predicted_ms']:.4g} ms (budget {latency['budget_ms']:.4g} ms, dense "
         f"{latency['dense_ms']:.4g} ms, {latency['target']} batch {latency['batch']})" + measured_text(latency))
    click.echo(f"{method}: {learner.score_label} {100 * summary[learner.score]:.2f}% {budget}"
               + ("" if survival is None else f", grown-{'weight' if latency is None else 'channel'} survival {100 * survival:.1f}%")
               + f"; run folder {out} (summary.md, {'curves.png, ' if (Path(out) / RunFolder.CURVES).is_file() else ''}"
                 "metrics.jsonl, final_model.pt)")


def measured_text(latency: dict[str, Any]) -> str:
    """The measured budget's outcome in the run's last line ("" without one)."""
    m = latency.get("measured_budget")
    if m is None:
        return ""
    verdict = "within" if m["within"] else "NOT within"
    return (f"; measured {m['measured_ratio']:.3f}x dense on this machine, {verdict} {100 * m['tolerance']:g}% of the "
            f"budget's {m['target_ratio']:.3f}x ({len(m['tries'])} structures timed)")


COMMANDS = [train]
