"""Profiler acceptance run: profile time, LUT accuracy on random sub-networks, latency-model query speed.

    python benchmarks/profiler.py                 # the acceptance run: cpu target, resnet18 at 224 px
    python benchmarks/profiler.py --model resnet20 --samples 4   # a short version

1. `iee-deploy profile --target cpu --model M` with the target's default grid, timed end to end
   (acceptance: under 15 minutes on a 2-core machine for resnet18).
2. `iee-deploy validate-lut --samples N`: predicted vs measured latency of N random physically
   pruned sub-networks (acceptance: MAPE <= 10 %, Spearman >= 0.9).
3. `LatencyModel.layer_latency` on 100,000 (cin, cout) queries, vectorised vs one call per query
   (the knapsack construction's need), as a side-by-side ratio from one run.

Writes `benchmarks/results/profiler.md` (table, exact commands, machine, date, versions, load
average) and `benchmarks/results/profiler.json`. The LUT goes to `benchmarks/.cache/`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iee_deploy.io import write_json, write_text  # noqa: E402
from profiler.latency import Calibration, LatencyModel  # noqa: E402
from profiler.lut import load_lut  # noqa: E402
from profiler.targets import cpu_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"


def cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "iee_deploy", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    return result, time.perf_counter() - start


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def query_speed(latency: LatencyModel, queries: int = 100_000) -> dict[str, float]:
    """Vectorised vs per-query calls of layer_latency on the model's widest layer."""
    name = max(latency.layers, key=lambda n: (min(latency.full_channels(n)), -max(latency.full_channels(n))))  # a square conv
    cin_max, cout_max = latency.full_channels(name)
    rng = np.random.default_rng(0)
    cin, cout = rng.integers(1, cin_max + 1, queries), rng.integers(1, cout_max + 1, queries)
    start = time.perf_counter()
    vectorised = latency.layer_latency(name, cin, cout)
    vector_s = time.perf_counter() - start
    loop_n = min(queries, 5_000)
    start = time.perf_counter()
    looped = [float(latency.layer_latency(name, int(a), int(b))) for a, b in zip(cin[:loop_n], cout[:loop_n])]
    loop_s = (time.perf_counter() - start) * queries / loop_n
    assert np.allclose(vectorised[:loop_n], looped)
    return {"layer": name, "queries": queries, "vectorised_ms": vector_s * 1e3, "per_query_loop_ms": loop_s * 1e3,
            "queries_per_ms_vectorised": queries / (vector_s * 1e3), "speedup": loop_s / vector_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `profile` options, e.g. --step 16")
    args = parser.parse_args()

    lut = CACHE / f"{args.target}-{args.model}.csv"
    for stale in (lut, lut.with_suffix(".json")):
        stale.unlink(missing_ok=True)
    record: dict[str, object] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
                                 "load_before": load()}
    profile_args = ["profile", "--target", args.target, "--model", args.model, "--out", str(lut.relative_to(ROOT)),
                    *args.extra]
    result, seconds = cli(*profile_args)
    record["profile"] = {"command": "iee-deploy " + " ".join(profile_args), "returncode": result.returncode,
                         "seconds": seconds, "stdout": result.stdout.strip(), "load_after": load()}
    if result.returncode:
        print(result.stderr, file=sys.stderr)
        return 1
    meta = load_lut(lut).meta
    record["lut"] = {"rows": meta.rows_done, "signatures": len(meta.signatures), "layers": len(meta.layers),
                     "grid_step": meta.grid_step, "grid_min": meta.grid_min, "grid_align": meta.grid_align,
                     "repeats": meta.repeats, "network_repeats": meta.network_repeats, "statistic": meta.statistic,
                     "threads": meta.threads,
                     "calibration": meta.calibration, "versions": meta.versions}

    report = CACHE / f"validate-{args.model}.json"
    validate_args = ["validate-lut", "--lut", str(lut.relative_to(ROOT)), "--model", args.model, "--samples",
                     str(args.samples), "--json", str(report.relative_to(ROOT))]
    result, seconds = cli(*validate_args)
    record["validate"] = {"command": "iee-deploy " + " ".join(validate_args), "returncode": result.returncode,
                          "seconds": seconds, "stdout": result.stdout.strip(), "stderr": result.stderr.strip()[-500:],
                          "load_after": load()}
    if result.returncode == 0:
        figures = json.loads(report.read_text())
        record["validate"].update({k: figures[k] for k in ("mape_pct", "spearman", "mape_uncalibrated_pct",
                                                            "dense_measured_ms", "dense_predicted_ms", "samples")})
    record["query_speed"] = query_speed(LatencyModel.from_lut(load_lut(lut)))
    write_json(RESULTS / "profiler.json", record)
    write_text(RESULTS / "profiler.md", markdown(record))
    print(markdown(record))
    return 0


def markdown(r: dict[str, Any]) -> str:
    p, v, q, lut = r["profile"], r["validate"], r["query_speed"], r["lut"]
    ok = v["returncode"] == 0
    lines = [
        "# Profiler benchmark",
        "",
        f"Date {r['date']}; machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['platform']}; "
        f"load average (1, 5, 15 min) before {r['load_before']}, after profiling {p['load_after']}, after validation "
        f"{v['load_after']}. Versions: {', '.join(f'{k} {x}' for k, x in lut['versions'].items())}.",
        "",
        "A load average above the core count means other processes were competing for the CPU while this ran: "
        "timings are then inflated and noisy, and the figures should be taken again on a quiet machine.",
        "",
        "| measure | value | acceptance |",
        "|---|---|---|",
        f"| profile wall time | {p['seconds'] / 60:.1f} min ({lut['rows']} rows, {lut['signatures']} signatures, "
        f"{lut['layers']} layers, grid step {lut['grid_step']} from {lut['grid_min']} in blocks of {lut['grid_align']}, "
        f"{lut['statistic']} of {lut['repeats']} runs, {lut['threads']} thread(s)) | < 15 min |",
        f"| calibration | measured = {Calibration.from_dict(lut['calibration']).formula(3)} "
        f"({len(lut['calibration']['points'])} networks) | |",
    ]
    if ok:
        lines += [
            f"| validate-lut MAPE ({len(v['samples'])} random pruned sub-networks, {lut['statistic']} of "
            f"{lut['network_repeats']} runs each) | {v['mape_pct']:.1f} % "
            f"(uncalibrated sum of layers: {v['mape_uncalibrated_pct']:.1f} %) | <= 10 % |",
            f"| validate-lut Spearman | {v['spearman']:.3f} | >= 0.9 |",
            f"| dense network | measured {v['dense_measured_ms']:.2f} ms, predicted {v['dense_predicted_ms']:.2f} ms | |",
        ]
    else:
        lines.append(f"| validate-lut | did not run: {v['stderr'].splitlines()[-1] if v['stderr'] else 'failed'} | |")
    lines += [
        f"| layer_latency, {q['queries']:,} queries on {q['layer']} | vectorised {q['vectorised_ms']:.2f} ms "
        f"({q['queries_per_ms_vectorised']:,.0f} queries/ms) vs one call per query {q['per_query_loop_ms']:.0f} ms: "
        f"{q['speedup']:.0f}x | thousands of queries per ms |",
        "",
        "Commands (from the repository root):",
        "",
        f"    {p['command']}",
        f"    {v['command']}",
        "",
    ]
    if ok:
        lines += ["| # | keep level | predicted ms | measured ms (IQR) | error % |", "|---|---|---|---|---|"]
        lines += [f"| {i} | {s['level']:.2f} | {s['predicted_ms']:.2f} | {s['measured_ms']:.2f} ({s['measured_iqr_ms']:.2f}) | "
                  f"{s['error_pct']:+.1f} |" for i, s in enumerate(v["samples"], 1)]
    lines += ["", "Machine-readable record: `benchmarks/results/profiler.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
