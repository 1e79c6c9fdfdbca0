"""`iee-deploy validate`: deployment checks for a built engine."""

from __future__ import annotations

import click

from iee_deploy.cli.build_engine import timing_config, timing_options


@click.command("validate")
@click.option("--engine", "engine_dir", type=click.Path(file_okay=False), required=True, help="Folder written by `build-engine`.")
@click.option("--dataset", default=None,
              help="Validation data; must be the run's dataset (digits, fashion-mnist, cifar10, imagefolder). Default: the run's.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset root. Default: the run's (when --dataset is not given).")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Use N/5 validation images (as in `train --subset N`). Default: the run's --subset.")
@click.option("--latency-ms", type=click.FloatRange(0, min_open=True), default=None,
              help="Budget the measured latency must meet (ms per batch), in the target's statistic: the fastest run "
                   "on the cpu target, the median on GPUs. Default: the run's budget_ms.")
@click.option("--lut-tolerance", type=click.FloatRange(0, 1), default=None,
              help="Fail when |measured / LUT-predicted latency - 1| exceeds this fraction (0-1). Default: report only.")
@click.option("--budget-tolerance", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction (0-1) by which the measured latency may exceed the budget, for timing noise; 0 is strict.")
@click.option("--budget-stage", type=click.Choice(["engine", "end-to-end"]), default="engine", show_default=True,
              help="What the budget applies to: the engine alone (what the LUT predicts), or end to end, with a "
                   "detector's post-processing (decoding, NMS) as build-engine timed it.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              help="Largest allowed drop of the task's score (top-1, or a detector's mAP@0.5; percentage points, 0 or "
                   "more) of the engine vs the fp32 PyTorch pruned model: the accuracy tolerance of quantized (int8, fp8) "
                   "engines, which have no elementwise one.")
@timing_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for validation.json and validation.md. Default: the engine folder.")
@click.pass_context
def validate(ctx: click.Context, engine_dir: str, dataset: str | None, data_dir: str | None, subset: int | None,
             latency_ms: float | None, lut_tolerance: float | None, budget_tolerance: float, budget_stage: str,
             max_accuracy_drop: float, warmup_s: float,
             min_iters: int, min_seconds: float, out: str | None) -> None:
    """Check outputs match (engine vs PyTorch pruned vs masked training model; a detector's boxes too), the
    task's score (top-1, mAP@0.5), and measured latency vs the budget and the LUT prediction. Exits 1 naming the
    failing checks.

    Latency is the target's statistic (the fastest run on the cpu target, the median on GPUs), the
    one the LUT predicts and the budget is set in.

    \b
    Tolerances on the max abs output error: fp32 1e-4; fp16 1% of the largest output; int8 and fp8
    engines are checked by their score against the fp32 model (--max-accuracy-drop) instead. A float
    detector engine's detections must each match PyTorch's: same label, IoU >= 0.99, score within 1e-3
    (fp32) or 1e-2 (fp16).
    """
    from iee_deploy.deploy.validate import VALIDATION_MARKDOWN, validate_engine

    report = validate_engine(engine_dir, dataset=dataset, data_dir=data_dir, subset=subset, latency_ms=latency_ms,
                             lut_tolerance=lut_tolerance, max_accuracy_drop=max_accuracy_drop,
                             budget_tolerance=budget_tolerance, budget_stage=budget_stage,
                             timing=timing_config(warmup_s, min_iters, min_seconds), out=out)
    click.echo(report.markdown())
    click.echo(f"wrote {out or engine_dir}/{VALIDATION_MARKDOWN} and validation.json")
    if report.failed:
        reasons = "; ".join(f"{c.name} (measured {c.measured:.4g} > limit {c.limit:.4g})" for c in report.failed
                            if c.measured is not None and c.limit is not None)
        click.echo(f"error: validation failed: {reasons}", err=True)
        ctx.exit(1)


COMMANDS = [validate]
