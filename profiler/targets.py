"""Hardware targets: what device a latency table is for, and how to measure it there.

A target is a YAML file (the shipped ones live in the top-level `targets/` folder; users can pass
their own path). It names the device kind, how to recognise the device, the backends to try in
order, the default precision, batch size and thread count, the channel grid and the timing
repeats. `check_device` refuses to profile a target on a machine that is not that device: a
latency table measured on the wrong hardware is worse than none, so there is no fallback.
"""

from __future__ import annotations

import difflib
import os
import platform
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from iee_deploy.errors import UserError
from runtime.machine import cap_threads, cpu_name, detect_gpus, usable_cores
from runtime.timing import STATISTICS, describe

KINDS = ("cpu", "gpu")
BACKENDS = ("onnxruntime", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class GridSpec:
    """Channel grid of a latency table: `min`, then every multiple of `step`, then the layer's full width.

    `align` is the hardware's channel block (8 for tensor cores): the latency model rounds channel
    counts up to it before interpolating, since a layer with 40 channels runs as one with 48.
    `align: auto` (`align` 0 here) measures it on the device at profile time instead
    (`profiler.blocking`: the runtime's block, and half a block below one block where the runtime
    saves there), so the grid follows the runtime that runs the network.
    """

    step: int
    min: int
    align: int = 1  # 0: measured at profile time (`align: auto`)

    @property
    def measured(self) -> bool:
        """Whether the channel blocking is measured at profile time rather than given."""
        return self.align == 0


@dataclass(frozen=True)
class TimingSpec:
    """Untimed warm-up runs and timed repeats per layer configuration and per whole network."""

    warmup: int
    repeats: int
    network_repeats: int
    statistic: str = "median"  # what the table records and the latency model predicts: median or min


@dataclass(frozen=True)
class Target:
    """One hardware target, as read from its YAML file."""

    name: str
    description: str
    kind: str  # "cpu" or "gpu"
    device_name: str | None  # regex searched in the CUDA device name (GPU targets)
    device_arch: str | None  # regex matched against platform.machine()
    backends: tuple[str, ...]  # in order of preference
    precision: str
    batch: int
    threads: int  # 0: every core this process may use
    grid: GridSpec
    timing: TimingSpec
    calibration_networks: int
    path: Path

    @property
    def device(self) -> str:
        """The torch device kind its backends run on: "cuda" for a gpu target, else "cpu"."""
        return "cuda" if self.kind == "gpu" else "cpu"

    @property
    def statistic(self) -> str:
        """The latency statistic of this target (fastest run on the shared-machine cpu target, median on GPUs)."""
        return self.timing.statistic

    @property
    def statistic_words(self) -> str:
        """How that statistic is printed beside every latency: "fastest run" or "median"."""
        return describe(self.timing.statistic)

    def resolved_threads(self) -> int:
        """Thread count to run with: the YAML's, or every core this process may use when it says 0."""
        return cap_threads(self.threads, usable_cores())[0]


def targets_dir() -> Path:
    """The folder of shipped target YAMLs (the `targets` package)."""
    return Path(str(resources.files("targets")))


def list_targets() -> list[str]:
    """Names of the shipped targets, sorted."""
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Read a shipped target by name (`cpu`, `titanv`, ...) or a user's target YAML by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if not path.is_file():
            raise UserError(f"target file '{path}' does not exist", "pass a target name or the path of a target YAML")
    else:
        path = targets_dir() / f"{text}.yaml"
        if not path.is_file():
            names = list_targets()
            close = difflib.get_close_matches(text, names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(names)}, or pass a YAML path"
            raise UserError(f"unknown target '{text}'", hint)
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"target file '{path}' is not text", "pass a target YAML (see targets/cpu.yaml)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"target file '{path}' is not valid YAML ({str(exc).splitlines()[0]})", "fix the file") from None
    return parse_target(data, path)


def _require(data: Any, key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"target file '{where}' has no '{key}'", "see targets/cpu.yaml for the fields a target needs")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise UserError(f"target file '{where}': '{key}' is {value!r}", f"give '{key}' as {getattr(kind, '__name__', kind)}")
    return value


def _positive(data: Any, key: str, where: Path, allow_zero: bool = False) -> int:
    value = int(_require(data, key, int, where))
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"target file '{where}': '{key}' must be {'>= 0' if allow_zero else 'positive'}, got {value}",
                        f"fix '{key}'")
    return value


def parse_target(data: Any, path: Path) -> Target:
    """Validate a target YAML's content; every problem is a UserError naming the field."""
    if not isinstance(data, dict):
        raise UserError(f"target file '{path}' does not hold a mapping", "see targets/cpu.yaml for the format")
    known = {"name", "description", "kind", "device", "backends", "precision", "batch", "threads", "grid", "timing",
             "calibration"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"target file '{path}' has unknown field(s) {', '.join(unknown)}", f"use only {', '.join(sorted(known))}")
    kind = _require(data, "kind", str, path)
    if kind not in KINDS:
        raise UserError(f"target file '{path}': kind '{kind}' is not one of {', '.join(KINDS)}", "set kind: cpu or kind: gpu")
    device = _require(data, "device", dict, path)
    device_name = device.get("name")
    device_arch = device.get("arch")
    if kind == "gpu" and not device_name:
        raise UserError(f"target file '{path}': a gpu target needs device.name", "give a pattern of the CUDA device name")
    if kind == "cpu" and not device_arch:
        raise UserError(f"target file '{path}': a cpu target needs device.arch", "give a pattern such as x86_64|AMD64")
    for pattern in (device_name, device_arch):
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise UserError(f"target file '{path}': device pattern '{pattern}' is not a regex ({exc})", "fix it") from None
    backends = tuple(_require(data, "backends", list, path))
    bad = [b for b in backends if b not in BACKENDS]
    if not backends or bad:
        raise UserError(f"target file '{path}': unknown backend(s) {bad or '(none given)'}", f"use {', '.join(BACKENDS)}")
    precision = _require(data, "precision", str, path)
    if precision not in PRECISIONS:
        raise UserError(f"target file '{path}': precision '{precision}' is not one of {', '.join(PRECISIONS)}", "fix it")
    grid = _require(data, "grid", dict, path)
    timing = _require(data, "timing", dict, path)
    statistic = timing.get("statistic", "median")
    if statistic not in STATISTICS:
        raise UserError(f"target file '{path}': timing.statistic '{statistic}' is not one of {', '.join(STATISTICS)}",
                        "fix it")
    calibration = data.get("calibration", {"networks": 5})
    return Target(
        name=str(_require(data, "name", str, path)),
        description=str(data.get("description", "")),
        kind=kind,
        device_name=None if device_name is None else str(device_name),
        device_arch=None if device_arch is None else str(device_arch),
        backends=backends,
        precision=precision,
        batch=_positive(data, "batch", path),
        threads=_positive(data, "threads", path, allow_zero=True) if "threads" in data else 0,
        grid=GridSpec(step=_positive(grid, "step", path), min=_positive(grid, "min", path),
                      align=0 if grid.get("align") == "auto" else _positive(grid, "align", path) if "align" in grid else 1),
        timing=TimingSpec(warmup=_positive(timing, "warmup", path, allow_zero=True), repeats=_positive(timing, "repeats", path),
                          network_repeats=_positive(timing, "network_repeats", path), statistic=statistic),
        calibration_networks=_positive(calibration, "networks", path),
        path=path,
    )


def check_device(target: Target) -> str:
    """Return the name of this machine's device for `target`, or raise a UserError naming what was found."""
    arch = platform.machine()
    if target.device_arch and not re.fullmatch(target.device_arch, arch, flags=re.IGNORECASE):
        raise UserError(f"target '{target.name}' is for {target.device_arch} machines, but this one is {arch} ({cpu_name()})",
                        "profile on that device, or use a target YAML whose device.arch matches this machine")
    if target.kind == "cpu":
        return cpu_name()
    gpus = detect_gpus()
    assert target.device_name is not None  # parse_target guarantees it for gpu targets
    for name in gpus:
        if re.search(target.device_name, name, flags=re.IGNORECASE):
            return name
    found = f"GPU(s) {', '.join(repr(g) for g in gpus)}" if gpus else f"no usable CUDA GPU, only the CPU '{cpu_name()}'"
    raise UserError(
        f"target '{target.name}' needs a GPU matching '{target.device_name}', but this machine has {found}",
        "run on that GPU, or use the cpu target (or a target YAML whose device.name matches this machine); "
        "no other device's numbers are used in its place",
    )
