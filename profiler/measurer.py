"""How the profiler measures: one-layer networks and whole networks, through `runtime` backends.

A `Measurer` pairs a runtime backend (`runtime.backends`: onnxruntime, torch, tensorrt) with the
settings a latency table is measured with (`BackendSettings`: device, precision, threads, warm-up,
repeats). A layer configuration becomes a one-layer network (an ONNX graph for ONNX Runtime and
TensorRT, an eager conv-BN-ReLU module for torch), a session, and one `runtime.timing.measure`
of `repeats` runs; whole networks (calibration, validation) are timed interleaved in
`NETWORK_ROUNDS` rounds so machine noise hits them alike. A quantized precision (int8) times each
layer and network as the QDQ graph the backend fuses into integer kernels (`runtime.quantize`).
GPU layers and GPU networks are timed with CUDA events around CUDA-graph replays, like every GPU
latency of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from iee_deploy.errors import NotAvailableError, UserError
from profiler.layers import LayerSignature
from profiler.onnx_graphs import layer_input_shape, layer_module, layer_onnx, quantized_layer_onnx
from profiler.targets import Target
from runtime.backends import Backend, BuildSpec, ModelSource, get_backend
from runtime.progress import progress as progress_bar
from runtime.timing import Timing, TimingConfig, measure, rounds_of

NETWORK_ROUNDS = 5
"""Whole networks are timed in this many interleaved rounds."""


@dataclass(frozen=True)
class BackendSettings:
    """How a backend measures: device, precision, host threads, warm-up and repeats, TensorRT timing cache."""

    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" (GPU), "int8" (QDQ: ONNX Runtime CPU, TensorRT) or "fp8" (TensorRT)
    threads: int
    warmup: int
    repeats: int  # per layer configuration
    network_repeats: int  # per whole network
    timing_cache: Path | None = None  # TensorRT: shared across every engine build and rerun


def settings_for(target: Target, precision: str | None = None, warmup: int | None = None, repeats: int | None = None,
                 network_repeats: int | None = None, timing_cache: Path | None = None) -> BackendSettings:
    """Backend settings from a target's defaults, with the user's overrides (None keeps the target's)."""
    return BackendSettings(
        device=target.device,
        precision=precision or target.precision,
        threads=target.resolved_threads(),
        warmup=target.timing.warmup if warmup is None else warmup,
        repeats=repeats or target.timing.repeats,
        network_repeats=network_repeats or target.timing.network_repeats,
        timing_cache=timing_cache,
    )


def timing_cache_path(lut_path: Path) -> Path:
    """Where a LUT's TensorRT timing cache lives: beside it, shared by reruns and resume."""
    return lut_path.with_suffix(".trt-timing-cache")


class Measurer:
    """Measures latency (ms per batch) of one-layer networks and of whole networks with one backend."""

    def __init__(self, backend: Backend, settings: BackendSettings) -> None:
        backend.check_available(settings.device)
        if settings.device == "cpu" and settings.precision == "fp16":
            raise UserError(f"the {backend.name} CPU backend measures fp32 or its quantized precisions, not fp16",
                            "set the precision to fp32")
        backend.check_precision(settings.precision, settings.device)
        self.backend = backend
        self.settings = settings

    @property
    def name(self) -> str:
        return self.backend.name

    def versions(self) -> dict[str, str]:
        """Versions of the libraries that produced the numbers (recorded in the LUT metadata)."""
        found = self.backend.versions(self.settings.device)
        scheme = self.backend.qdq_scheme(self.settings.precision)
        if scheme is not None:
            found["quantization"] = f"{scheme.describe()}, calibrated on random inputs"
        if self.settings.device == "cpu":
            found["threads"] = str(self.settings.threads)
        return found

    def _spec(self, shape: tuple[int, ...]) -> BuildSpec:
        s = self.settings
        return BuildSpec(batch=shape[0], resolution=shape[-1], precision=s.precision, threads=s.threads,
                         device=s.device, warmup=max(s.warmup, 1), shape=shape)

    def _config(self, repeats: int, rounds: int) -> TimingConfig:
        return TimingConfig(warmup_s=0.0, min_iterations=repeats, min_seconds=0.0, rounds=rounds,
                            warmup=self.settings.warmup)

    def _input(self, spec: BuildSpec) -> np.ndarray:
        return np.random.default_rng(0).standard_normal(spec.input_shape).astype(spec.input_dtype)

    def time_layer(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Timing:
        """Latency of one layer configuration over `settings.repeats` runs."""
        spec = self._spec(layer_input_shape(sig, cin, batch))
        scheme = self.backend.qdq_scheme(spec.precision)
        if self.backend.needs_onnx:
            graph = (layer_onnx(sig, cin, cout, batch, spec.precision) if scheme is None
                     else quantized_layer_onnx(sig, cin, cout, batch, scheme))
            source = ModelSource("layer", onnx=graph.SerializeToString())
        else:
            source = ModelSource("layer", module=layer_module(sig, cin, cout))
        session = self.backend.session(source, spec, self.settings.timing_cache)
        return measure({"layer": session.runner(self._input(spec))}, batch, self._config(self.settings.repeats, 1))["layer"]

    def time_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...], progress: str | None = None) -> list[Timing]:
        """Latency of whole networks, `settings.network_repeats` runs each, interleaved in rounds.

        `progress`: the description of a progress bar over the rounds (None: no bar).
        """
        spec = self._spec(input_shape)
        x = self._input(spec)
        runners = {str(i): self.backend.session(ModelSource(f"net{i}", module=model), spec,
                                                self.settings.timing_cache).runner(x)
                   for i, model in enumerate(models)}
        config = self._config(self.settings.network_repeats, NETWORK_ROUNDS)
        with progress_bar(total=rounds_of(config) * len(runners), desc=progress or "", unit="net-round",
                          enabled=progress is not None) as bar:
            timings = measure(runners, input_shape[0], config, bar.update)
        return [timings[str(i)] for i in range(len(models))]

    def time_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        """Latency of one whole network."""
        return self.time_models([model], input_shape)[0]


def make_measurer(name: str, settings: BackendSettings) -> Measurer:
    """A measurer with backend `name`; a missing library or device is a one-line UserError with the fix."""
    return Measurer(get_backend(name), settings)


def choose_measurer(target: Target, settings: BackendSettings) -> Measurer:
    """A measurer with the target's first backend that can run here."""
    reasons = []
    for candidate in target.backends:
        try:
            return make_measurer(candidate, settings)
        except NotAvailableError as exc:
            reasons.append(f"{candidate}: {exc.problem}")
    raise NotAvailableError(f"no backend of target '{target.name}' can run here ({'; '.join(reasons)})",
                            "install one of them, see docs/gpu.md ('What needs a GPU or TensorRT')")
