"""The measured budget: the knapsack re-aimed until the pruned network's measured latency meets the budget.

A latency table predicts a network as the calibrated sum of its layers; the engine of the pruned
network is then measured whole, fused and cached, and the two part: on mobilenet_v3_small the
final engines of our knapsack arms landed 1-16% from their aim, and not by one constant factor
(see docs/benchmarks.md, head to head). With `measure_budget`, when the structure first reaches
Psi (HALP's last prune, the end of structured IEE's descent, IEE's random start), the run times
candidate structures on this machine beside the dense network, in interleaved rounds so noise hits
them alike, and re-aims the knapsack (`solvers.aim`) until their latency ratio is within
`budget_tolerance` of the budget's, for at most `MEASURED_TRIES` structures. The kept structure's
aim becomes Psi, so IEE's later prunes and grows hold the latency its engine was measured at.

A shared machine's other jobs slow the dense network far more than a pruned one, for seconds to
minutes at a time (`runtime.timing.lowest`), so one side-by-side timing in a disturbed moment reads
the ratio low and aims too large a network. Each structure is therefore timed in passes with fresh
sessions until every network's lowest reading has held for `measure_seconds` (`runtime.timing.
spread_passes`: a burst of load is waited out), and counts at its lowest reading; the dense network,
timed beside every candidate, counts at its lowest reading over all of them and the LUT's own timing
of it (its calibration timed the dense network with the same settings, on this device with the same
libraries), so a run that meets load throughout its timing still has one quiet reading of it.

The budget's ratio is Psi over the dense network's predicted latency (`latency_ratio`, or
`latency_ms` over that prediction): a ratio timed side by side reproduces between timing sessions
where absolute milliseconds do not. Only the kept counts per group set a latency, not which units
are kept, so each candidate is timed as the network with the first units of each group kept.

This machine must be the LUT's target: its device must be the one the LUT was measured on (a FLOPs
table, measured nowhere, times on this machine's device for its target), and the run must be one
process, since each process's timing would choose its own structure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from iee_deploy.errors import NotAvailableError, UserError
from iee_deploy.graph import DependencyGraph, prune_model
from iee_deploy.structured.budget import LatencySource
from profiler.flops_table import BACKEND as FLOPS_BACKEND
from profiler.latency import Calibration
from profiler.measurer import Measurer, choose_measurer, settings_for
from profiler.targets import check_device, load_target
from runtime.timing import lowest, spread_passes
from solvers.aim import best_try, next_aim, within

MEASURED_TRIES = 6
"""Structures timed at most per measured budget (the first aim and five re-aims)."""
LEAST_PASSES = 3
"""Side-by-side passes per structure at least, however short `measure_seconds`."""


@dataclass(frozen=True)
class Try:
    """One timed candidate: its aim (ms predicted, and as a fraction of the dense prediction) and its lowest reading,
    beside the dense network's lowest reading in the same passes."""

    aim_ms: float
    aim: float
    dense_ms: float  # the dense network, timed beside it
    network_ms: float


@dataclass(frozen=True)
class Settled:
    """The outcome of a measured budget: the aim kept (the new Psi), its counts, and every try. Every try's ratio is
    taken over `dense_ms`, the dense network's lowest reading over all of them and the LUT's."""

    target: float  # the budget's fraction of the dense network's predicted latency
    tolerance: float
    kept: int  # the index of the kept try
    counts: dict[str, int]  # the kept try's units per group
    tries: list[Try] = field(default_factory=list)
    table_dense_ms: float | None = None  # the LUT's own timing of the dense network, one of the readings in dense_ms

    @property
    def dense_ms(self) -> float:
        return dense_low(self.tries, self.table_dense_ms)

    def ratio(self, t: Try) -> float:
        """A try's measured latency over the dense network's."""
        return t.network_ms / self.dense_ms

    @property
    def aim_ms(self) -> float:
        return self.tries[self.kept].aim_ms

    @property
    def measured(self) -> float:
        """The kept structure's measured latency over the dense network's."""
        return self.ratio(self.tries[self.kept])

    @property
    def within(self) -> bool:
        return within(self.measured, self.target, self.tolerance)

    def summary(self) -> dict[str, Any]:
        """What the run records (summary.json's `latency.measured_budget`)."""
        return {"target_ratio": self.target, "tolerance": self.tolerance, "aim_ms": self.aim_ms,
                "dense_ms": self.dense_ms, "table_dense_ms": self.table_dense_ms, "measured_ratio": self.measured,
                "within": self.within,
                "tries": [{**asdict(t), "measured_ratio": self.ratio(t)} for t in self.tries]}


def keep_first(counts: Mapping[str, int], device: torch.device) -> dict[str, torch.Tensor]:
    """Unit indices keeping the first `counts[g]` units of every group (a structure with these counts)."""
    return {g: torch.arange(k, device=device) for g, k in counts.items()}


class MeasuredBudget:
    """Times candidate structures of a network on this machine and settles the aim (see the module docstring)."""

    def __init__(self, measurer: Measurer, statistic: str, input_shape: tuple[int, ...], tolerance: float,
                 seconds: float, table_dense_ms: float | None = None) -> None:
        self.measurer = measurer
        self.statistic = statistic
        self.input_shape = input_shape
        self.tolerance = tolerance
        self.seconds = seconds
        self.table_dense_ms = table_dense_ms  # the LUT's calibration timing of the dense network (a timed table's)

    @classmethod
    def on_target(cls, source: LatencySource, tolerance: float, seconds: float, processes: int = 1) -> MeasuredBudget:
        """A measured budget for the LUT's target on this machine; a one-line UserError when this machine is not it."""
        meta = source.meta
        fields = ("measure_budget",)
        if processes > 1:
            raise UserError(f"a measured budget times the network in one process, but this run has {processes}",
                            "leave `measure_budget` off in a multi-process run, or run it in one process", fields=fields)
        target = load_target(meta.target)
        try:
            here = check_device(target)
        except UserError as exc:
            raise UserError(f"a measured budget times the network on this machine, which is not target "
                            f"{meta.target}: {exc.problem}", "run on the target, or leave `measure_budget` off",
                            fields=fields) from None
        timed_table = meta.backend != FLOPS_BACKEND  # a FLOPs table was measured nowhere: the target's own settings
        if timed_table and here != meta.device:
            raise UserError(f"a measured budget times the network on this machine ({here}), but the LUT '{source.path}' "
                            f"was measured on {meta.device}", "run on the LUT's device, or leave `measure_budget` off",
                            fields=fields)
        settings = settings_for(target, precision=meta.precision, warmup=meta.warmup if timed_table else None,
                                network_repeats=meta.network_repeats if timed_table else None)
        try:
            measurer = choose_measurer(target, settings)
        except NotAvailableError as exc:
            raise UserError(f"a measured budget cannot time target {meta.target} here: {exc}",
                            "install its runtime, or leave `measure_budget` off", fields=fields) from None
        res = meta.resolution
        same_timing = timed_table and measurer.versions() == meta.versions  # the same device, libraries and threads
        table_dense = Calibration.from_dict(meta.calibration).dense_ms if same_timing else None
        return cls(measurer, meta.statistic, (meta.batch, 3, res, res), tolerance, seconds, table_dense)

    @staticmethod
    def structure(network: nn.Module, graph: DependencyGraph, counts: Mapping[str, int]) -> nn.Module:
        """A pruned copy of `network` with `counts` units per group, on the CPU for timing (`network` is untouched)."""
        return prune_model(network, graph, keep_first(counts, next(network.parameters()).device)).cpu().eval()

    def time(self, dense: nn.Module, candidate: nn.Module) -> tuple[float, float]:
        """(dense, candidate) latency in ms: side-by-side passes, each in fresh sessions, until both lowest readings
        have held for `seconds` (at least LEAST_PASSES passes), and each network's lowest reading (see the module
        docstring)."""

        def one_pass() -> dict[str, float]:
            timings = self.measurer.time_models([dense, candidate], self.input_shape)
            return {"dense": timings[0].value(self.statistic), "candidate": timings[1].value(self.statistic)}

        ms = lowest(spread_passes(one_pass, self.seconds, LEAST_PASSES))
        return ms["dense"], ms["candidate"]


def settle(timer: Callable[[Mapping[str, int]], tuple[float, float]], counts_for: Callable[[float], dict[str, int]],
           psi: float, dense_ms: float, smallest_ms: float, tolerance: float, table_dense_ms: float | None = None) -> Settled:
    """Re-aim `counts_for` (the knapsack: an aim in predicted ms -> units per group) from `psi` until `timer` (counts ->
    dense and pruned ms, timed side by side) measures the counts within `tolerance` of psi / dense_ms, at most
    MEASURED_TRIES times; the best try (`solvers.aim.best_try`). Aims stay between the smallest network and dense.
    Every ratio is over the dense network's lowest reading so far, `table_dense_ms` (the LUT's own) among them: a
    later, quieter reading corrects earlier tries."""
    target = psi / dense_ms
    tries: list[Try] = []
    counts: list[dict[str, int]] = []
    points: list[tuple[float, float]] = []  # (aim, measured ratio) of every try so far
    aim: float | None = target
    while aim is not None and len(tries) < MEASURED_TRIES:
        chosen = counts_for(aim * dense_ms)
        dense, network = timer(chosen)
        tries.append(Try(aim * dense_ms, aim, dense, network))
        counts.append(chosen)
        points = measured_points(tries, table_dense_ms)
        if within(points[-1][1], target, tolerance):
            break
        aim = next_aim(points, target, smallest_ms / dense_ms)
    kept = best_try(points, target)
    return Settled(target, tolerance, kept, counts[kept], tries, table_dense_ms)


def dense_low(tries: list[Try], table_dense_ms: float | None) -> float:
    """The dense network's lowest reading: over the tries, and the LUT's own timing of it when there is one."""
    return min([t.dense_ms for t in tries] + ([] if table_dense_ms is None else [table_dense_ms]))


def measured_points(tries: list[Try], table_dense_ms: float | None) -> list[tuple[float, float]]:
    """(aim, measured ratio) of every try, each ratio over the dense network's lowest reading (`dense_low`)."""
    dense = dense_low(tries, table_dense_ms)
    return [(t.aim, t.network_ms / dense) for t in tries]
