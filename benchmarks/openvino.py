"""Does OpenVINO earn a place beside ONNX Runtime on this CPU? The same ONNX files, timed side by side.

    PYTHONPATH=. python -m benchmarks.openvino            # about 2 minutes
    PYTHONPATH=. python -m benchmarks.openvino --quick    # resnet20 at 32 px only, shorter timing

x86 edge users deploy with OpenVINO, so before a second CPU backend is written and maintained it
has to run the networks this toolkit ships faster than ONNX Runtime does. For every model and
precision the benchmark exports one ONNX file (fp32, and the int8 QDQ graph of `runtime.quantize`,
calibrated on random batches: the scales differ from an image calibration, the kernels do not) and
times it in both runtimes in one `measure` call, in alternating rounds, batch 1, one thread, the
fastest run (the `cpu` target's settings):

- ONNX Runtime: the project's own backend session (level-ALL optimisation, integer kernels checked);
- OpenVINO: `Core.compile_model` on the same file for the CPU device, one inference thread, the
  latency hint and f32 inference precision (so fp32 stays fp32; the QDQ graph runs in int8).

Writes benchmarks/results/openvino.md and .json (ratio ONNX Runtime / OpenVINO: above 1, OpenVINO
is faster).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_session, header, header_markdown, markdown_table, write_results
from iee_deploy.models import build_model
from runtime.backends import get_backend
from runtime.export import export_onnx
from runtime.quantize import quantize, random_batches
from runtime.timing import Runner, TimingConfig, host_runner, measure


@dataclass(frozen=True)
class Case:
    """One network as exported: zoo name, class count and input resolution."""

    model: str
    classes: int
    resolution: int


CASES = (Case("resnet20", 10, 32), Case("mobilenet_v2", 10, 32), Case("resnet18", 1000, 224),
         Case("mobilenet_v2", 1000, 224))
QUICK_CASES = CASES[:1]
PRECISIONS = ("fp32", "int8")


def openvino_runner(onnx_file: Path, x: np.ndarray) -> Runner:
    """OpenVINO's CPU plugin on `onnx_file`: one inference thread, latency hint, f32 inference precision."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(onnx_file), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                             "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    feed = {0: x}
    return host_runner(lambda: request.infer(feed))


def onnx_files(case: Case, folder: Path) -> dict[str, Path]:
    """The fp32 export of `case` (random weights: speed does not depend on their values) and its int8 QDQ graph."""
    model = build_model(case.model, case.classes, case.resolution).eval()
    stem = f"{case.model}-{case.resolution}"
    fp32 = export_onnx(model, folder / f"{stem}.onnx", case.resolution, "fp32")
    scheme = get_backend("onnxruntime").qdq_scheme("int8")
    assert scheme is not None
    int8 = quantize(fp32, folder / f"{stem}.qdq.onnx", random_batches((1, 3, case.resolution, case.resolution), 4), scheme)
    return {"fp32": fp32, "int8": int8}


def time_case(case: Case, folder: Path, seconds: float) -> list[dict[str, Any]]:
    """Both runtimes on both precisions of `case`, in one side-by-side timing run."""
    files = onnx_files(case, folder)
    x = np.random.default_rng(0).random((1, 3, case.resolution, case.resolution), dtype=np.float32)
    runners: dict[str, Runner] = {}
    for precision, path in files.items():
        runners[f"onnxruntime/{precision}"] = cpu_session(path, precision, case.resolution).runner(x)
        runners[f"openvino/{precision}"] = openvino_runner(path, x)
    timings = measure(runners, 1, TimingConfig(warmup_s=0.1, min_seconds=seconds, rounds=5, warmup=2))
    rows = []
    for precision in files:
        ort_ms, ov_ms = timings[f"onnxruntime/{precision}"].min_ms, timings[f"openvino/{precision}"].min_ms
        rows.append({"model": case.model, "resolution": case.resolution, "precision": precision, "onnxruntime_ms": ort_ms,
                     "openvino_ms": ov_ms, "ort_over_openvino": ort_ms / ov_ms})
    return rows


TIE = 0.02
"""Ratios within 2% of 1 are a tie: the spread of the fastest run between side-by-side runs on this machine."""


def verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence: where OpenVINO is faster and by how much, where it ties, where it is slower."""
    def named(picked: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['model']} {r['resolution']} px {r['precision']}" for r in picked)

    def span(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"{100 * low:.0f}%" if round(100 * low) == round(100 * high) else f"{100 * low:.0f}-{100 * high:.0f}%"

    faster = [r for r in rows if r["ort_over_openvino"] > 1 + TIE]
    slower = [r for r in rows if r["ort_over_openvino"] < 1 - TIE]
    tied = [r for r in rows if r not in faster and r not in slower]
    parts = []
    if faster:
        parts.append(f"OpenVINO is faster on {len(faster)} of {len(rows)}, by "
                     f"{span([r['ort_over_openvino'] - 1 for r in faster])} ({named(faster)})")
    if tied:
        parts.append(f"ties (within {100 * TIE:g}%) on {len(tied)} ({named(tied)})")
    if slower:
        parts.append(f"is slower on {len(slower)}, by {span([1 / r['ort_over_openvino'] - 1 for r in slower])} "
                     f"({named(slower)})")
    return "; ".join(parts) + "."


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], mode: str) -> str:
    table = markdown_table(["model", "px", "precision", "ONNX Runtime ms", "OpenVINO ms", "ORT / OpenVINO"],
                           [[r["model"], r["resolution"], r["precision"], f"{r['onnxruntime_ms']:.3f}",
                             f"{r['openvino_ms']:.3f}", f"{r['ort_over_openvino']:.2f}"] for r in rows])
    return "\n".join([
        "# OpenVINO beside ONNX Runtime on this CPU", "", *header_markdown(meta, mode), "",
        "Setting: the same ONNX file in both runtimes (fp32, and the int8 QDQ graph of the project's quantizer), batch 1, "
        "one thread, fastest run, both runtimes and precisions of one model timed in one run in alternating rounds. "
        "Random weights (speed does not depend on them). ORT / OpenVINO above 1: OpenVINO is faster.", "",
        "## The answer", "", verdict(rows), "", *table, "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet20 at 32 px only, 1 s of timing per runner")
    args = parser.parse_args()
    meta = header(1, "onnxruntime", "openvino", "onnx", "torch")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for case in QUICK_CASES if args.quick else CASES:
            rows += time_case(case, Path(folder), 1.0 if args.quick else 3.0)
            print(f"{case.model} {case.resolution} px: " + ", ".join(
                f"{r['precision']} ORT/OV {r['ort_over_openvino']:.2f}" for r in rows[-2:]), flush=True)
    mode = "quick" if args.quick else "full"
    record = {"meta": meta, "mode": mode, "rows": rows}
    write_results("openvino" + ("_quick" if args.quick else ""), record, markdown(meta, rows, mode))


if __name__ == "__main__":
    main()
