"""Dense vs pruned engine latency and throughput of one run across batch sizes (side-by-side ratios).

    python benchmarks/deploy_fps.py --run RUN [--backend onnxruntime] [--batches 1,8,32] [--min-seconds 3]

For each batch size, `build_engine` builds the dense and the pruned model with the same backend
and times them interleaved in one measurement (see runtime.timing). Prints a table and
writes benchmarks/results/deploy_fps.md (command, machine, date, versions) and deploy_fps.json.
Engines go to benchmarks/.cache/deploy_fps/.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import click

from iee_deploy.deploy.build import build_engine
from iee_deploy.deploy.render import environment, markdown_table
from iee_deploy.io import write_json, write_text
from runtime.backends import BACKENDS, PRECISIONS
from runtime.timing import TimingConfig

HERE = Path(__file__).resolve().parent


@click.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True), required=True, help="Run folder.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="onnxruntime", show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default=None, help="Default: the backend's.")
@click.option("--batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes (images).")
@click.option("--threads", type=int, default=None, help="CPU threads (onnxruntime). Default: all cores.")
@click.option("--min-seconds", type=float, default=3.0, show_default=True, help="Timing per model and batch (s).")
def main(run_dir: str, backend: str, precision: str | None, batches: str, threads: int | None, min_seconds: float) -> None:
    rows, records = [], []
    for batch in (int(b) for b in batches.split(",")):
        report = build_engine(run_dir, HERE / ".cache" / "deploy_fps" / f"{backend}-b{batch}", backend=backend, batch=batch,
                              precision=precision, threads=threads, timing=TimingConfig(min_seconds=min_seconds))
        d, p = report.dense.timing, report.pruned.timing
        rows.append([batch, d.median_ms, p.median_ms, d.p90_ms, p.p90_ms, d.images_per_s, p.images_per_s, report.speedup])
        records.append(asdict(report))
        click.echo(f"batch {batch}: dense {d.median_ms:.3f} ms, pruned {p.median_ms:.3f} ms, speed-up {report.speedup:.2f}x")
    headers = ["batch", "dense median ms", "pruned median ms", "dense p90 ms", "pruned p90 ms", "dense images/s",
               "pruned images/s", "speed-up"]
    table = markdown_table(headers, rows)
    click.echo(table)
    env = environment()
    command = "python benchmarks/deploy_fps.py " + shlex.join(sys.argv[1:])
    results = HERE / "results"
    write_text(results / "deploy_fps.md", "\n".join([
        "# Dense vs pruned engine latency", "", f"Command: `{command}`", "",
        f"Run `{run_dir}` ({records[0]['model']}, {records[0]['kind']}), backend {backend}, "
        f"{records[0]['spec']['precision']}, {records[0]['spec']['threads']} threads, >= {min_seconds} s per model and batch.", "",
        table, "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]))
    write_json(results / "deploy_fps.json", {"command": command, "environment": env, "engines": records})


if __name__ == "__main__":
    main()
