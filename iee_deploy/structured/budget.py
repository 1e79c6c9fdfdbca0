"""The latency side of a structured run: the LUT it prunes with and the budget Psi.

`open_latency_model` loads a LUT written by `iee-deploy profile` and refuses one that does not
describe this model on this target (`profiler.lut.check_lut`: model, classes, resolution, every
layer's signature; `target` must name the LUT's target). Latency is in ms per batch of the
LUT's batch size and precision, on the LUT's target, as the latency model predicts it.

`resolve_budget` turns `latency_ms` or `latency_ratio` (of the dense model's predicted latency)
into Psi, and refuses a budget below the smallest achievable latency (every group at its smallest
allowed width, as the never-negative latency model predicts it) before anything trains. Latencies
are in the LUT's statistic (`facts()["statistic"]`: the fastest run on the cpu target, the median
on GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from iee_deploy.errors import UserError, check_fraction, check_positive
from iee_deploy.models.detection import network_of
from profiler.latency import LatencyModel
from profiler.layers import enumerate_layers
from profiler.lut import LutMeta, check_lut, load_lut
from profiler.targets import load_target


@dataclass(frozen=True)
class LatencySource:
    """A loaded latency model and where it came from."""

    model: LatencyModel
    meta: LutMeta
    path: str

    def facts(self) -> dict[str, Any]:
        """What a run records about its LUT: target, file, batch and precision of the latencies."""
        return {"target": self.meta.target, "lut": self.path, "batch": self.meta.batch, "precision": self.meta.precision,
                "backend": self.meta.backend, "statistic": self.meta.statistic}


def open_latency_model(lut: str | None, target: str | None, model: nn.Module, *, model_name: str | None = None,
                       num_classes: int | None = None, resolution: int | None = None) -> LatencySource:
    """Load `lut` and check that it describes `model` (at the LUT's resolution, or `resolution`) on `target`."""
    if lut is None:
        raise UserError("a latency budget needs a latency lookup table (`lut`)",
                        "profile one for this model, resolution and class count on the target", fields=("lut",))
    table = load_lut(lut)
    meta = table.meta
    if target is not None:
        name = load_target(target).name
        if name != meta.target:
            raise UserError(f"`target` {target} does not match the LUT '{lut}', which was measured on target {meta.target}",
                            f"pass `target` {meta.target}, or a LUT profiled on {name}", fields=("target",))
    res = resolution or meta.resolution
    check_lut(table, model=model_name, num_classes=num_classes, resolution=res,
              layers=enumerate_layers(network_of(model), (1, 3, res, res)))
    return LatencySource(LatencyModel.from_lut(table), meta, str(lut))


def resolve_budget(latency_ms: float | None, latency_ratio: float | None, dense_ms: float, smallest_ms: float) -> float:
    """Psi in ms from exactly one of `latency_ms` and `latency_ratio` (of `dense_ms`); >= `smallest_ms` > 0."""
    if (latency_ms is None) == (latency_ratio is None):
        raise UserError("give exactly one latency budget", "pass `latency_ms` or `latency_ratio`, not both",
                        fields=("latency_ms", "latency_ratio"))
    if latency_ratio is not None:
        check_fraction("latency_ratio", latency_ratio, low_open=True)
        psi, asked = latency_ratio * dense_ms, f"`latency_ratio` {latency_ratio:g} ({latency_ratio * dense_ms:.4g} ms)"
        field = "latency_ratio"
    else:
        assert latency_ms is not None
        check_positive("latency_ms", latency_ms)
        psi, asked, field = latency_ms, f"`latency_ms` {latency_ms:g}", "latency_ms"
    if psi < smallest_ms and smallest_ms >= dense_ms:  # a flat or noisy table: nothing smaller is predicted faster
        raise UserError(f"latency budget {asked} cannot be met: the LUT predicts no sub-network faster than the dense "
                        f"model (smallest {smallest_ms:.4g} ms, dense {dense_ms:.4g} ms), its timings are too noisy or "
                        "too flat to prune against", "profile the target again with `iee-deploy profile` and more "
                        "`repeats` (or a larger `batch`)", fields=("lut", field, "repeats", "batch"))
    if not (smallest_ms > 0 and psi >= smallest_ms):
        raise UserError(f"latency budget {asked} is below the smallest achievable network's latency {smallest_ms:.4g} ms "
                        f"(dense model {dense_ms:.4g} ms)",
                        f"pass `latency_ms` >= {smallest_ms:.4g} or `latency_ratio` >= {smallest_ms / dense_ms:.3f}",
                        fields=("latency_ms", "latency_ratio"))
    return psi
