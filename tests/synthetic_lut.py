"""Latency tables for tests, written through the profiler's own LUT files and classes.

The latency of a layer is a known function of its work (multiply-accumulates of the (cin, cout)
configuration) instead of a measurement: every row is what `iee-deploy profile` would write if the
hardware took exactly that long, so the latency model, `check_lut` and the pruners read a real LUT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from profiler.flops_table import layer_macs
from profiler.latency import Calibration
from profiler.layers import LayerSignature, enumerate_layers, plan_rows, unique_signatures
from profiler.lut import LutMeta, Row, RowWriter, write_meta
from profiler.targets import load_target

LayerMs = Callable[[LayerSignature, int, int], float]


def macs_ms(sig: LayerSignature, cin: int, cout: int) -> float:
    """1 ms per 10^6 multiply-accumulates plus 0.01 ms of fixed cost per layer."""
    return 1e-6 * layer_macs(sig, cin, cout) + 0.01


def write_synthetic_lut(path: Path, model_name: str, model: nn.Module, num_classes: int, resolution: int, *,
                        layer_ms: LayerMs = macs_ms, step: int = 8, minimum: int = 4, align: int = 4,
                        calibration: Calibration = Calibration(1.0, 0.05), batch: int = 1,
                        device: str = "synthetic", versions: dict[str, str] | None = None) -> Path:
    """Write `path` (.csv) and its metadata as a complete LUT of `model` on the cpu target (of `device`: name this
    machine's CPU, `runtime.machine.cpu_name()`, for a LUT a measured budget may time here; and this machine's
    `versions` for one whose calibration it may read as timed with the same libraries)."""
    target = load_target("cpu")
    layers = enumerate_layers(model, (1, 3, resolution, resolution))
    signatures = unique_signatures(layers)
    planned = plan_rows(signatures.values(), step, minimum, align)
    meta = LutMeta(model=model_name, num_classes=num_classes, resolution=resolution, batch=batch, precision="fp32",
                   target=target.name, target_file=str(target.path), backend="onnxruntime", device=device,
                   threads=1, grid_step=step, grid_min=minimum, grid_align=align, warmup=0, repeats=1,
                   network_repeats=1, statistic="min", layers={n: s.key for n, s in layers.items()},
                   signatures=signatures, rows_planned=len(planned), rows_done=len(planned), complete=True,
                   calibration=calibration.to_dict(), versions=versions or {})
    path.unlink(missing_ok=True)
    with RowWriter(path) as writer:
        for key, cin, cout in planned:
            ms = layer_ms(signatures[key], cin, cout)
            writer.append(Row(key, cin, cout, ms, 0.0, ms, 1))
    write_meta(path, meta)
    return path


