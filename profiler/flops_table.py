"""A FLOPs cost table: a latency table's layers and grid with multiply-accumulates in place of timings.

The knapsack prunes against whatever cost its table holds. A table written by `flops_table` has the
same signatures, layers and (cin, cout) grid as the measured table it comes from, but every row
holds the layer's multiply-accumulates at that grid point, in millions per image, instead of a
latency; its calibration is the identity (a = 1, b = 0) and it has no channel blocking (block 1:
counts are costed as they are, not rounded up to the runtime's block). A structured run given this
table (`lut`) with `latency_ratio` r keeps r of the dense model's MACs: the same knapsack, the same
channel multiples (the source's `grid_align`), with FLOPs as its cost. It is the control that
shows what measuring the hardware buys.

The table's "ms" columns and a run's "latency" figures are then MMACs; its metadata says so
(`backend` "macs", `machine["cost"]`). MACs are bilinear in (cin, cout) for a dense conv or a linear
layer and linear along the diagonal of a depthwise or grouped one, so the latency model's bilinear
interpolation between the grid points reproduces them exactly at every count.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from iee_deploy.io import write_text
from profiler.layers import LayerSignature
from profiler.lut import HEADER, Lut, LutMeta, Row, load_lut, row_line, write_meta

COST = "multiply-accumulates in millions per image (computed, not measured); the 'ms' columns hold them"
BACKEND = "macs"


def layer_macs(sig: LayerSignature, cin: int, cout: int) -> float:
    """Multiply-accumulates of one image through the layer `sig` pruned to (cin, cout).

    A conv does kh * kw * cin / groups MACs per output value; a depthwise or grouped conv keeps its
    channels per group, so its groups shrink with cin (`groups_for`). A linear layer does cin * cout.
    """
    if sig.kind == "linear":
        return float(cin * cout)
    oh, ow = sig.out_hw
    groups = sig.groups_for(cin)
    return float(sig.kernel[0] * sig.kernel[1] * oh * ow * (cin // groups) * cout)


def flops_rows(lut: Lut) -> list[Row]:
    """The rows of `lut` with each (signature, cin, cout) costed in MMACs (`layer_macs` / 1e6)."""
    rows = []
    for row in lut.rows:
        mmacs = layer_macs(lut.meta.signatures[row.signature], row.cin, row.cout) / 1e6
        rows.append(Row(row.signature, row.cin, row.cout, mmacs, 0.0, mmacs, 1))
    return rows


def flops_meta(meta: LutMeta) -> LutMeta:
    """The metadata of the FLOPs table of `meta`'s model: same layers and grid, no blocking, identity calibration."""
    return replace(meta, backend=BACKEND, device="none", statistic="min", grid_block=1, blocking=None,
                   calibration={"a": 1.0, "b": 0.0, "points": []}, machine={"cost": COST}, versions={},
                   repeats=1, network_repeats=1, warmup=0, elapsed_s=0.0, complete=True, rows_done=meta.rows_planned)


def flops_table(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the FLOPs cost table of the complete latency table `source` to `out` (.csv and .json); return `out`."""
    lut = load_lut(source)
    out = Path(out)
    write_text(out, HEADER + "".join(row_line(row) for row in flops_rows(lut)))  # computed: one write, not a row each
    write_meta(out, flops_meta(lut.meta))
    return out

