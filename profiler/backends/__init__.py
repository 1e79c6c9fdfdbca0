"""Latency backends behind one interface: time a one-layer network, or a whole network.

| name | device | how it times |
|---|---|---|
| `onnxruntime` | CPU | ONNX Runtime CPU execution provider, host clock (the embedded default) |
| `torch` | CPU or CUDA | eager PyTorch; on CUDA with cuDNN autotuning, CUDA graphs and CUDA events |
| `tensorrt` | CUDA | one strongly typed engine per configuration (TensorRT 10.x / 11.x), timing cache |

Backends are imported lazily: selecting one whose library is missing raises a one-line
`NotAvailableError` that says how to install it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import nn

from iee_deploy.errors import NotAvailableError, UserError
from profiler.layers import LayerSignature
from profiler.targets import BACKENDS, Target
from profiler.timing import Runner, Timing, interleaved


@dataclass(frozen=True)
class BackendSettings:
    """How a backend measures: device, precision, host threads, warm-up and repeats, TensorRT timing cache."""

    device: str  # "cpu" or "cuda"
    precision: str  # "fp32" or "fp16"
    threads: int
    warmup: int
    repeats: int  # per layer configuration
    network_repeats: int  # per whole network
    timing_cache: Path | None = None  # TensorRT: shared across every engine build and rerun


NETWORK_ROUNDS = 5
"""Whole networks are timed in this many interleaved rounds (see `profiler.timing.interleaved`)."""


class Backend(ABC):
    """Measures latency (ms per batch) of one-layer networks and of whole networks on one device.

    A backend prepares a `Runner` for a configuration (session, CUDA graph or engine); timing
    calls the runner. Subclasses implement `versions`, `layer_runner` and `model_runner`.
    """

    name: ClassVar[str]

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the libraries that produced the numbers (recorded in the LUT metadata)."""

    @abstractmethod
    def layer_runner(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Runner:
        """Prepared runner of one layer of signature `sig` with `cin` input and `cout` output channels."""

    @abstractmethod
    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        """Prepared runner of a whole network on an input of `input_shape` (batch first)."""

    def time_layer(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Timing:
        """Latency of one layer configuration over `settings.repeats` runs."""
        return Timing.from_samples(self.layer_runner(sig, cin, cout, batch)(self.settings.repeats))

    def time_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...]) -> list[Timing]:
        """Latency of whole networks, `settings.network_repeats` runs each, interleaved in rounds."""
        runners = [self.model_runner(model, input_shape) for model in models]
        return interleaved(runners, self.settings.network_repeats, NETWORK_ROUNDS)

    def time_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        """Latency of one whole network."""
        return self.time_models([model], input_shape)[0]


_MODULES = {"onnxruntime": ("profiler.backends.ort", "OrtBackend"),
            "torch": ("profiler.backends.torch_runtime", "TorchBackend"),
            "tensorrt": ("profiler.backends.tensorrt_engine", "TensorRTBackend")}


def backend_class(name: str) -> type[Backend]:
    """The backend class called `name` (imports only that backend's module)."""
    if name not in _MODULES:
        raise UserError(f"unknown backend '{name}'", f"choose one of: {', '.join(BACKENDS)}")
    module, cls = _MODULES[name]
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def make_backend(name: str, settings: BackendSettings) -> Backend:
    """Create backend `name`; a missing library or device is a one-line UserError with the fix."""
    return backend_class(name)(settings)


def settings_for(target: Target, precision: str | None = None, warmup: int | None = None, repeats: int | None = None,
                 network_repeats: int | None = None, timing_cache: Path | None = None) -> BackendSettings:
    """Backend settings from a target's defaults, with the user's overrides (None keeps the target's)."""
    return BackendSettings(
        device="cuda" if target.kind == "gpu" else "cpu",
        precision=precision or target.precision,
        threads=target.resolved_threads(),
        warmup=target.timing.warmup if warmup is None else warmup,
        repeats=repeats or target.timing.repeats,
        network_repeats=network_repeats or target.timing.network_repeats,
        timing_cache=timing_cache,
    )


def choose_backend(target: Target, settings: BackendSettings) -> Backend:
    """The target's first backend that can run here."""
    reasons = []
    for candidate in target.backends:
        try:
            return make_backend(candidate, settings)
        except NotAvailableError as exc:
            reasons.append(f"{candidate}: {exc.problem}")
    raise NotAvailableError(f"no backend of target '{target.name}' can run here ({'; '.join(reasons)})",
                            "install one of them, see the README's 'What needs a GPU or TensorRT'")
