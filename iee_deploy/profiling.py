"""Profiling orchestration above `profiler/`: builds the model and its sub-networks, then measures.

`profile` is `iee-deploy profile`: it builds the zoo model and hands it, with a source of random
physically pruned sub-networks for the calibration (`iee_deploy.subnets`), to
`profiler.measure.profile_model`. `validate_lut` is `iee-deploy validate-lut`: is a LUT
trustworthy? It draws random sub-networks (every prunable group keeps 30-100% of its channels,
see `iee_deploy.subnets`), measures each whole network with the LUT's own backend and settings on
the LUT's device, and compares with the latency model's prediction: mean absolute percentage
error (MAPE) and Spearman rank correlation (what a pruning method needs: that a faster predicted
network is a faster real one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import stats
from torch import nn

from iee_deploy.graph import DependencyGraph, build_dependency_graph
from iee_deploy.models import build_model
from iee_deploy.models.detection import network_part
from iee_deploy.outputs import check_report_output
from iee_deploy.subnets import random_subnetworks
from profiler.latency import LatencyModel
from profiler.layers import enumerate_layers
from profiler.lut import LutMeta, check_lut, load_lut
from profiler.measure import (
    ProfileRequest,
    ProfileSummary,
    Subnetworks,
    check_out,
    input_shape,
    now,
    profile_model,
)
from profiler.measurer import BackendSettings, make_measurer
from profiler.targets import Target, check_device, list_targets, load_target
from runtime.machine import check_batch_fits, free_memory_bytes, machine_info
from runtime.progress import progress as progress_bar
from runtime.progress import write as write_line


def subnetwork_source(model: nn.Module, resolution: int, low: float = 0.3, high: float = 1.0,
                      graph: DependencyGraph | None = None) -> Subnetworks:
    """The profiler's `Subnetworks` for `model` (with its `graph`, if built): random pruned sub-networks with their
    per-layer channels."""

    def draw(count: int, seed: int, align: int) -> Iterator[tuple[nn.Module, Mapping[str, tuple[int, int]]]]:
        for subnet in random_subnetworks(model, resolution, count, seed, low, high, align, graph):
            yield subnet.model, subnet.layer_channels

    return draw


def profile(request: ProfileRequest, out: str | Path, resume: bool = False, progress: bool = True) -> ProfileSummary:
    """`iee-deploy profile`: build the request's model and measure its LUT into `out` (checked first)."""
    check_out(Path(out), resume)
    model = build_model(request.model, request.num_classes, request.resolution, request.checkpoint).eval()
    part = network_part(model)
    if part is not None:  # the table times what the graph prunes: the network part
        write_line(part.describe(request.model))
        model = part.module
    graph = build_dependency_graph(model, torch.zeros(input_shape(1, request.resolution)))  # refused before measuring
    check_layer_batch(model, request.batch, request.resolution)
    return profile_model(request, model, out, subnetwork_source(model, request.resolution, graph=graph), resume, progress)


def check_layer_batch(model: nn.Module, batch: int, resolution: int) -> None:
    """Refuse a batch whose widest layer's fp32 input and output do not fit in memory, before timing it."""
    widest = max(s.in_hw[0] * s.in_hw[1] * (s.cin + s.cout) * 4
                 for s in enumerate_layers(model, input_shape(1, resolution)).values())
    check_batch_fits(batch, widest, f"fp32 input and output of the widest layer at {resolution} px", free_memory_bytes())


def mape(predicted: ArrayLike, measured: ArrayLike) -> float:
    """Mean absolute percentage error of `predicted` against `measured`, in percent."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.mean(np.abs(p - m) / m) * 100)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (scipy; ties share their average rank); NaN when either side is constant."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


@dataclass
class Sample:
    """One random sub-network: its keep level, predicted and measured latency (ms per batch)."""

    level: float
    predicted_ms: float
    measured_ms: float  # the LUT's statistic (median or min) over the runs
    measured_median_ms: float
    measured_iqr_ms: float
    sum_of_layers_ms: float
    error_pct: float


@dataclass
class ValidationReport:
    """Predicted vs measured latency of random sub-networks under one LUT."""

    lut: str
    model: str
    target: str
    backend: str
    device: str
    batch: int
    resolution: int
    precision: str
    statistic: str
    seed: int
    keep_range: tuple[float, float]
    calibration: dict[str, Any]
    dense_measured_ms: float
    dense_predicted_ms: float
    samples: list[Sample]
    mape_pct: float
    spearman: float
    mape_uncalibrated_pct: float  # with a = 1, b = 0: the raw sum of layer latencies
    seconds: float
    date: str = field(default_factory=now)
    machine: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: an undefined rank correlation (one sub-network, or predictions all alike) is null, not NaN."""
        return {**asdict(self), "spearman": self.spearman if math.isfinite(self.spearman) else None}


def lut_target(meta: LutMeta) -> Target:
    """The target a LUT was measured on: a shipped target by name, else the YAML file recorded at profile time."""
    return load_target(meta.target if meta.target in list_targets() else meta.target_file)


def lut_settings(meta: LutMeta, target: Target) -> BackendSettings:
    """The backend settings the LUT was measured with."""
    return BackendSettings(device=target.device, precision=meta.precision,
                           threads=meta.threads, warmup=meta.warmup, repeats=meta.repeats,
                           network_repeats=meta.network_repeats)


def validate_lut(lut_path: str | Path, model_name: str, num_classes: int | None = None, resolution: int | None = None,
                 checkpoint: str | None = None, samples: int = 10, seed: int = 0, low: float = 0.3, high: float = 1.0,
                 progress: bool = True, json_out: str | Path | None = None) -> ValidationReport:
    """Measure `samples` random sub-networks of the LUT's model and compare with the LUT's predictions.

    `json_out` (where the caller will write the report) is checked for writability before any timing.
    """
    started = time.perf_counter()
    if json_out is not None:
        check_report_output(json_out, "json_out")
    lut = load_lut(lut_path)
    meta = lut.meta
    num_classes = num_classes or meta.num_classes
    resolution = resolution or meta.resolution
    model = build_model(model_name, num_classes, resolution, checkpoint).eval()
    check_layer_batch(model, meta.batch, resolution)
    check_lut(lut, model=model_name, num_classes=num_classes, resolution=resolution,
              layers=enumerate_layers(model, input_shape(1, resolution)))
    target = lut_target(meta)
    device = check_device(target)
    backend = make_measurer(meta.backend, lut_settings(meta, target))
    latency = LatencyModel.from_lut(lut)
    subnets = list(progress_bar(random_subnetworks(model, resolution, samples, seed, low, high, latency.align),
                                total=samples, desc="validate-lut: prune sub-networks", unit="net", enabled=progress))
    dense, *timings = backend.time_models([model] + [s.model for s in subnets], input_shape(meta.batch, resolution),
                                          f"validate-lut: time {samples + 1} whole networks" if progress else None)
    results = []
    for subnet, timing in zip(subnets, timings):
        predicted, measured = latency.predict(subnet.layer_channels), timing.value(meta.statistic)
        results.append(Sample(subnet.level, predicted, measured, timing.median_ms, timing.iqr_ms,
                              latency.sum_of_layers(subnet.layer_channels), (predicted - measured) / measured * 100))
    measured_all = [s.measured_ms for s in results]
    return ValidationReport(
        lut=str(lut_path), model=model_name, target=meta.target, backend=meta.backend, device=device, batch=meta.batch,
        resolution=resolution, precision=meta.precision, statistic=meta.statistic, seed=seed, keep_range=(low, high),
        calibration=latency.calibration.to_dict(), dense_measured_ms=dense.value(meta.statistic),
        dense_predicted_ms=latency.predict({}), samples=results,
        mape_pct=mape([s.predicted_ms for s in results], measured_all),
        spearman=spearman([s.predicted_ms for s in results], measured_all),
        mape_uncalibrated_pct=mape([s.sum_of_layers_ms for s in results], measured_all),
        seconds=time.perf_counter() - started, machine=machine_info(meta.threads),
    )
