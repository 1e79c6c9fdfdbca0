"""The latency model: predicted latency of a (sub-)network from its per-layer channel counts.

    predicted_ms = a * sum_l T_l(cin_l, cout_l) + b      (sum at least the smallest calibration network's)
    predicted_ms = p(s0) * sum / s0                      (below it: proportional, so never negative)

`T_l` is layer l's latency table, interpolated bilinearly between the measured (cin, cout) grid
points (linearly along cin for depthwise and grouped convs, which lose whole conv groups, so cin and
cout shrink together) after rounding
the channel counts up to the hardware's channel multiples (the grid's `align` below one `block`, the
`block` above: `profiler.blocking`), and (a, b)
is the target's calibration, fitted from whole-network measurements so that what a one-layer
network cannot show (fusion across layers, memory traffic between them, pooling and adds) is
accounted for. Conv latency is close to bilinear in (cin, cout) - its work is k*k*H*W*cin*cout -
so the interpolation is exact for that part and the grid only has to catch hardware stair-steps.

Everything here is pure and vectorised: `layer_latency` answers thousands of (cin, cout) queries
per millisecond, which is what the knapsack construction needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from iee_deploy.errors import UserError
from profiler.blocking import round_channels
from profiler.lut import Lut, check_lut, load_lut

FloatArray = NDArray[np.float64]


def _cell(grid: FloatArray, x: FloatArray) -> tuple[NDArray[np.intp], FloatArray]:
    """Left index of the grid cell used for each x and the position t in it (t < 0 or > 1 beyond the ends)."""
    if grid.size == 1:
        return np.zeros(x.shape, dtype=np.intp), np.zeros(x.shape)
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, grid.size - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


def _next(grid: FloatArray, i: NDArray[np.intp]) -> NDArray[np.intp]:
    return i if grid.size == 1 else i + 1


def linear(grid: ArrayLike, values: ArrayLike, x: ArrayLike) -> FloatArray:
    """Piecewise-linear interpolation of `values` on increasing `grid` at `x`; linear extrapolation, floored at 0."""
    g, v, q = np.asarray(grid, float), np.asarray(values, float), np.asarray(x, float)
    i, t = _cell(g, q)
    result = v[i] + t * (v[_next(g, i)] - v[i])
    return np.asarray(np.maximum(result, 0.0))


def bilinear(cin_grid: ArrayLike, cout_grid: ArrayLike, table: ArrayLike, cin: ArrayLike, cout: ArrayLike) -> FloatArray:
    """Bilinear interpolation of `table[i, j]` (measured at cin_grid[i], cout_grid[j]) at each (cin, cout).

    Outside the grid the nearest cell is extended linearly; a one-point axis is constant. Results
    are floored at 0. `cin` and `cout` broadcast against each other.
    """
    gx, gy, v = np.asarray(cin_grid, float), np.asarray(cout_grid, float), np.asarray(table, float)
    x, y = np.broadcast_arrays(np.asarray(cin, float), np.asarray(cout, float))
    i, s = _cell(gx, x)
    j, t = _cell(gy, y)
    i1, j1 = _next(gx, i), _next(gy, j)
    result = (1 - s) * (1 - t) * v[i, j] + s * (1 - t) * v[i1, j] + (1 - s) * t * v[i, j1] + s * t * v[i1, j1]
    return np.asarray(np.maximum(result, 0.0))


@dataclass(frozen=True)
class LayerTable:
    """Measured latency (ms) of one layer signature over its channel grid."""

    cin: FloatArray  # grid of input channels
    cout: FloatArray  # grid of output channels
    ms: FloatArray  # (len(cin), len(cout)); for a diagonal layer, (len(cin),) with cout following cin
    diagonal: bool = False  # depthwise or grouped: whole conv groups go
    align: int = 1  # channel counts below one `block` are rounded up to a multiple of this before interpolation
    block: int = 0  # the runtime's channel block: counts of at least one block round up to its multiples (0: align)

    def __call__(self, cin: ArrayLike, cout: ArrayLike) -> FloatArray:
        block = self.block or self.align
        ci, co = (round_channels(x, self.align, block, cap) for x, cap in ((cin, self.cin[-1]), (cout, self.cout[-1])))
        if self.diagonal:  # cout follows cin (whole conv groups)
            return linear(self.cin, self.ms, np.broadcast_arrays(ci, co)[0])
        return bilinear(self.cin, self.cout, self.ms, ci, co)


@dataclass(frozen=True)
class Calibration:
    """measured_ms = a * sum_of_layer_latencies_ms + b, fitted on whole networks of one target."""

    a: float = 1.0
    b: float = 0.0
    points: tuple[tuple[float, float], ...] = field(default=())  # (sum of layers, measured) in ms

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "points": [list(p) for p in self.points]}

    @property
    def dense_ms(self) -> float | None:
        """The dense model's measured latency (`calibrate` times it first, beside its sub-networks); None unfitted."""
        return self.points[0][1] if self.points else None

    def formula(self, digits: int = 4) -> str:
        """The fit as people write it: "0.9107 x sum_of_layers - 0.0885 ms" (never "+ -0.0885")."""
        sign = "-" if self.b < 0 else "+"
        return f"{self.a:.{digits}f} x sum_of_layers {sign} {abs(self.b):.{digits}f} ms"

    def apply(self, sum_ms: float) -> float:
        """Calibrated latency of a network whose layer latencies sum to `sum_ms`; positive for every positive sum.

        The affine fit holds over the networks it was fitted on. A negative intercept (common: one-layer
        networks carry overheads a whole network shares) would make the line negative for tiny networks,
        so below the smallest calibration network (sum s0) the prediction shrinks in proportion to the
        sum from its value at s0 instead: continuous, increasing, and zero only for an empty network.
        """
        line = self.a * sum_ms + self.b
        if self.b >= 0 or not self.points:
            return max(line, 0.0)
        s0 = min(s for s, _ in self.points)
        at_s0 = self.a * s0 + self.b
        if sum_ms >= s0 and line > 0:
            return line
        scale = at_s0 / s0 if at_s0 > 0 else min(m / s for s, m in self.points)
        return max(scale * sum_ms, 0.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        return cls(float(data["a"]), float(data["b"]), tuple((float(s), float(m)) for s, m in data.get("points", [])))


def fit_calibration(sum_ms: Sequence[float], measured_ms: Sequence[float]) -> Calibration:
    """Least-squares fit of measured = a * sum + b.

    One network fixes only the scale (b = 0). If the free fit is not increasing (a <= 0, possible
    with noisy points of nearly equal size), the scale-only fit through the origin is used instead.
    """
    s, m = np.asarray(sum_ms, float), np.asarray(measured_ms, float)
    if s.shape != m.shape or s.size == 0 or np.any(s <= 0) or np.any(m <= 0):
        raise ValueError("calibration needs matching, positive sums and measurements")
    points = tuple(zip(s.tolist(), m.tolist()))
    if s.size >= 2 and np.ptp(s) > 0:
        a, b = np.polyfit(s, m, 1)
        if a > 0:
            return Calibration(float(a), float(b), points)
    return Calibration(float(np.dot(s, m) / np.dot(s, s)), 0.0, points)


class LatencyModel:
    """Per-layer latency tables of one model on one target, keyed by layer name, plus the calibration."""

    def __init__(self, tables: Mapping[str, LayerTable], full: Mapping[str, tuple[int, int]],
                 calibration: Calibration | None = None) -> None:
        if set(tables) != set(full):
            raise ValueError("tables and full channel counts must name the same layers")
        aligns = {t.align for t in tables.values()}
        if len(aligns) > 1:
            raise ValueError("every layer table of one model has the same channel block")
        self.align = aligns.pop() if aligns else 1
        """Channel multiple pruning keeps (multiples of `block` above one block cost no more: see `profiler.blocking`)."""
        self._tables = dict(tables)
        self._full = dict(full)
        self.calibration = calibration or Calibration()

    @classmethod
    def from_lut(cls, lut: Lut) -> LatencyModel:
        """Build the tables from a loaded (complete) LUT, using the statistic (median or min) it was made for."""
        by_signature: dict[str, dict[tuple[int, int], float]] = {}
        use_min = lut.meta.statistic == "min"
        for row in lut.rows:
            by_signature.setdefault(row.signature, {})[(row.cin, row.cout)] = row.min_ms if use_min else row.median_ms
        tables: dict[str, LayerTable] = {}
        for key, sig in lut.meta.signatures.items():
            points = by_signature.get(key, {})
            cins = np.array(sorted({c for c, _ in points}), float)
            couts = np.array(sorted({c for _, c in points}), float)
            if sig.diagonal:
                ordered = sorted(points.items())
                ms = np.array([value for _, value in ordered])
                tables[key] = LayerTable(cins, couts, ms, True, lut.meta.grid_align, lut.meta.grid_block)
            else:
                grid = np.array([[points[(int(ci), int(co))] for co in couts] for ci in cins])
                tables[key] = LayerTable(cins, couts, grid, False, lut.meta.grid_align, lut.meta.grid_block)
        meta = lut.meta
        return cls({name: tables[key] for name, key in meta.layers.items()},
                   {name: (meta.signatures[key].cin, meta.signatures[key].cout) for name, key in meta.layers.items()},
                   Calibration.from_dict(meta.calibration))

    @classmethod
    def load(cls, path: str | os.PathLike[str], **expect: Any) -> LatencyModel:
        """Load a LUT file, check it against `expect` (see `profiler.lut.check_lut`) and build the model."""
        lut = load_lut(path)
        check_lut(lut, **expect)
        return cls.from_lut(lut)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self._tables)

    def full_channels(self, name: str) -> tuple[int, int]:
        """(cin, cout) of layer `name` in the unpruned model."""
        return self._full[self._known(name)]

    def _known(self, name: str) -> str:
        if name not in self._tables:
            raise UserError(f"the latency model has no layer '{name}'", "use the LUT profiled for this model")
        return name

    def layer_latency(self, name: str, cin: ArrayLike, cout: ArrayLike) -> FloatArray:
        """Calibrated latency contribution (a * T_l) in ms of layer `name` at each (cin, cout); vectorised."""
        return self.calibration.a * self._tables[self._known(name)](cin, cout)

    def sum_of_layers(self, layer_channels: Mapping[str, tuple[int, int]]) -> float:
        """Uncalibrated sum of the per-layer table latencies; layers not in the mapping count at full width."""
        channels = {**self._full, **{self._known(n): c for n, c in layer_channels.items()}}
        return float(sum(float(self._tables[n](*channels[n])) for n in self._tables))

    def predict(self, layer_channels: Mapping[str, tuple[int, int]]) -> float:
        """Predicted latency (ms per batch, >= 0) of the network with these per-layer (cin, cout); others at full width."""
        return self.calibration.apply(self.sum_of_layers(layer_channels))
