"""`build_engine`: run folder -> ONNX -> engine for the pruned and the dense model, timed side by side.

Output folder (`--out`):

| file | content |
|---|---|
| `pruned.onnx`, `dense.onnx` | the models in the engine precision (dynamic batch, opset 17) |
| `pruned<suffix>`, `dense<suffix>` | the backend's artefacts (`.ort.onnx`, `.plan`, `.torch.pt`) |
| `engine.json`, `engine.md` | `EngineReport`: settings, parameters, latency (ms per batch), images/s, speed-up |

The dense model is the unpruned architecture (see `run_models`), built by the same backend with the
same settings (but no sparse-weight kernels) and timed in the same interleaved measurement, so
`speedup` is a side-by-side ratio.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from iee_deploy.deploy.engines import PRECISIONS, BuildSpec, Engine, ModelSource, get_backend
from iee_deploy.deploy.export import export_onnx
from iee_deploy.deploy.render import environment, markdown_table
from iee_deploy.deploy.run_models import load_run_models, parameter_count
from iee_deploy.deploy.timing import Timing, TimingConfig, measure
from iee_deploy.errors import UserError
from iee_deploy.io import write_json, write_text
from iee_deploy.runs import RunInfo, read_run_info
from profiler.targets import load_target

ENGINE_REPORT = "engine.json"
ENGINE_MARKDOWN = "engine.md"
MODELS = ("dense", "pruned")

Log = Callable[[str], None]


@dataclass
class ModelResult:
    """One built model: size, files (relative to the engine folder) and measured latency."""

    params: int
    onnx: str
    artefact: str
    timing: Timing


@dataclass
class EngineReport:
    """What `build-engine` built and measured; `validate` and `report` read it back from `engine.json`."""

    run_dir: str
    model: str
    kind: str
    backend: str
    spec: BuildSpec
    pruned: ModelResult
    dense: ModelResult
    speedup: float  # dense median latency / pruned median latency
    timing_config: TimingConfig
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineReport:
        def result(d: dict[str, Any]) -> ModelResult:
            return ModelResult(**{**d, "timing": Timing(**d["timing"])})

        return cls(**{**data, "spec": BuildSpec(**data["spec"]), "pruned": result(data["pruned"]),
                      "dense": result(data["dense"]), "timing_config": TimingConfig(**data["timing_config"])})

    def markdown(self) -> str:
        rows = [[name, r.params, r.timing.median_ms, r.timing.p90_ms, r.timing.images_per_s, r.timing.iterations]
                for name, r in (("dense", self.dense), ("pruned", self.pruned))]
        s, t = self.spec, self.timing_config
        return "\n".join([
            f"# Engine: {self.model} ({self.kind}) on {self.backend}", "",
            f"Run `{self.run_dir}`; batch {s.batch}, {s.precision}, input {s.input_shape}, {s.threads} CPU threads, "
            f"sparse weights: {'yes' if s.sparse_weights else 'no'}.", "",
            markdown_table(["model", "parameters", "median ms/batch", "p90 ms/batch", "images/s", "iterations"], rows), "",
            f"**Speed-up (dense / pruned median latency): {self.speedup:.2f}x**", "",
            f"Timing: warm-up {t.warmup_s} s, then >= {t.min_iterations} iterations and >= {t.min_seconds} s per model "
            f"in {t.rounds} alternating rounds; latency = host wall time of one synchronous batch.", "",
            "Environment: " + ", ".join(f"{k} {v}" for k, v in self.environment.items()), "",
        ])


def default_threads(target: str | None) -> int:
    """Intra-op CPU threads: the target's `threads` (a name in targets/ or a YAML path), else all cores."""
    return load_target(target).resolved_threads() if target else os.cpu_count() or 1


def build_spec(info: RunInfo, backend: str, batch: int, precision: str | None, threads: int | None) -> BuildSpec:
    """Check the user's choices and derive the spec (sparse weights for N:M runs on TensorRT)."""
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}", "pass a number of images, e.g. --batch 1")
    precision = precision or get_backend(backend).default_precision
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}", "pass a number of CPU threads")
    return BuildSpec(batch=batch, resolution=info.resolution, precision=precision,
                     threads=threads or default_threads(info.target),
                     sparse_weights=backend == "tensorrt" and info.nm is not None)


def timing_input(spec: BuildSpec, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal batch in the engine's input dtype (latency does not depend on the values)."""
    return np.random.default_rng(seed).standard_normal(spec.input_shape).astype(spec.input_dtype)


def build_engine(run_dir: str | Path, out: str | Path, *, backend: str = "onnxruntime", batch: int = 1,
                 precision: str | None = None, threads: int | None = None, timing: TimingConfig = TimingConfig(),
                 log: Log = lambda _: None) -> EngineReport:
    """Build the pruned and the dense model of `run_dir` with `backend` into `out`; time both; write engine.json/.md.

    `precision` None means the backend's default: fp32 on onnxruntime, fp16 on tensorrt and torch-cuda.
    """
    chosen = get_backend(backend)
    chosen.check_available()
    spec = build_spec(read_run_info(run_dir), backend, batch, precision, threads)
    models = load_run_models(run_dir)
    info = models.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modules = {"dense": models.masked, "pruned": models.pruned}
    # the dense reference gets no sparse-weight kernels, even though the masked weights have the N:M pattern
    specs = {"dense": replace(spec, sparse_weights=False), "pruned": spec}
    engines: dict[str, Engine] = {}
    files: dict[str, tuple[str, str]] = {}
    for name in MODELS:
        log(f"{name}: export ONNX ({spec.precision}) and build the {backend} engine")
        onnx_path = export_onnx(modules[name], out / f"{name}.onnx", spec.resolution, spec.precision)
        artefact = chosen.build(ModelSource(name, modules[name], onnx_path), specs[name], out)
        engines[name] = chosen.load(artefact, specs[name])
        files[name] = (onnx_path.name, artefact.name)
    log(f"timing dense and pruned side by side (>= {timing.min_iterations} iterations and >= {timing.min_seconds} s each)")
    x = timing_input(spec)
    timings = measure({name: engines[name].timed_call(x) for name in MODELS}, spec.batch, timing)
    results = {name: ModelResult(parameter_count(modules[name]), *files[name], timings[name]) for name in MODELS}
    report = EngineReport(
        run_dir=str(Path(run_dir).resolve()), model=info.model, kind=info.kind, backend=backend, spec=spec,
        pruned=results["pruned"], dense=results["dense"],
        speedup=timings["dense"].median_ms / timings["pruned"].median_ms,
        timing_config=timing, environment=environment(),
    )
    write_json(out / ENGINE_REPORT, report.to_json())
    write_text(out / ENGINE_MARKDOWN, report.markdown())
    return report


def read_engine_report(engine_dir: str | Path) -> EngineReport:
    """Read `engine.json` from a build-engine output folder, or raise a UserError."""
    path = Path(engine_dir) / ENGINE_REPORT
    if not path.is_file():
        raise UserError(f"'{engine_dir}' is not an engine folder (no {ENGINE_REPORT})", "pass the --out folder of `iee-deploy build-engine`")
    try:
        return EngineReport.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"'{path}' is corrupt ({type(exc).__name__}: {exc})", "run build-engine again") from None


def load_engine(engine_dir: str | Path, report: EngineReport) -> Engine:
    """Load the pruned model's engine of an engine folder (the one that gets deployed)."""
    backend = get_backend(report.backend)
    backend.check_available()
    artefact = Path(engine_dir) / report.pruned.artefact
    if not artefact.is_file():
        raise UserError(f"engine file '{artefact}' is missing", "run build-engine again")
    return backend.load(artefact, report.spec)
