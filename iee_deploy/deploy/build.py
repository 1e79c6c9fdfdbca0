"""`build_engine`: run folder -> ONNX -> engine for the pruned and the dense model, timed side by side.

Output folder (`out`):

| file | content |
|---|---|
| `pruned.onnx`, `dense.onnx` | the models in the engine precision (dynamic batch, opset 17; int8 and fp8: QDQ graphs) |
| `pruned<suffix>`, `dense<suffix>` | the backend's artefacts (`.ort.onnx`, `.plan`, `.torch.pt2`) |
| `engine.json`, `engine.md` | `EngineReport`: settings, parameters, latency (ms per batch), images/s, speed-up |

The dense model is the unpruned architecture (see `run_models`), built by the same backend with the
same settings (same threads, but no sparse-weight kernels) and timed in the same interleaved
measurement (`runtime.timing.measure`), so `speedup` is a side-by-side ratio. Latency is the
target's statistic (`statistic`: the fastest run on the shared-machine cpu target, the median on
GPUs), the one the run's LUT predicted and its budget was set in; GPU engines are timed with CUDA
events, the clock of the GPU latency tables.

What an engine computes is the run's task's `Deployment`: a classifier's engine maps images to logits; a
detector's engine is its network part (backbone, neck, heads; `iee_deploy.models.detection`), its head outputs
packed into one tensor, and its post-processing (box decoding, NMS) a stage of its own on the host, timed in
the same interleaved measurement on the outputs of real validation images: `engine.json` states the latency
without it (`pruned`, `dense`: what the latency table predicts and the budget is set in) and with it
(`postprocess`).

A quantized engine (int8; fp8 on TensorRT) is the fp32 export quantized by the backend's QDQ scheme
(`runtime.quantize`), its activations calibrated on N training images of the run's dataset
(`iee_deploy.deploy.calibration`, checked before any export); `engine.json` records the set
(`quantization`: dataset, count, seed, indices, method). Dense and pruned are quantized alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from iee_deploy.deploy.calibration import DEFAULT_IMAGES, CalibrationRequest, calibration_images
from iee_deploy.deploy.render import markdown_table
from iee_deploy.deploy.run_models import load_run_models, parameter_count, run_data, run_task
from iee_deploy.errors import UserError
from iee_deploy.io import check_writable, write_json, write_text, writer_lock
from iee_deploy.runs import RUN_INFO, RunFolder, RunInfo, read_run_info
from iee_deploy.tasks import Task
from iee_deploy.tasks.base import Deployment
from profiler.lut import read_meta
from profiler.targets import load_target
from runtime.backends import PRECISIONS, Backend, BuildSpec, ModelSource, Session, canonical_name, get_backend
from runtime.export import export_onnx
from runtime.machine import cap_threads, check_batch_fits, free_memory_bytes, machine_info, usable_cores
from runtime.progress import progress as progress_bar
from runtime.quantize import export_quantized
from runtime.timing import Runner, Timing, TimingConfig, describe, host_runner, measure, rounds_of

ENGINE_REPORT = "engine.json"
VALIDATION_REPORT = "validation.json"
VALIDATION_MARKDOWN = "validation.md"
STALE_ON_REBUILD = (VALIDATION_REPORT, VALIDATION_MARKDOWN)
"""Files of an engine folder that describe the engine built before: removed when it is rebuilt."""
ENGINE_MARKDOWN = "engine.md"
MODELS = ("dense", "pruned")
POSTPROCESS = "postprocess"
DEFAULT_CPU_TARGET = "cpu"  # the target whose threads and statistic a CPU engine of a run without a target gets
UNSTRUCTURED_NOTE = ("Unstructured sparsity leaves the layer shapes unchanged, so dense kernels (ONNX Runtime on the CPU, "
                     "torch, TensorRT without sparse weights) multiply the zeros: the pruned engine is no faster. "
                     "Sparse kernels that use it: TensorRT with 2:4 (N:M) sparse weights on sparse tensor cores "
                     "(an N:M run built with the tensorrt backend).")

DENSE_ROW = "dense (full width, masked weights)"
POSTPROCESS_ROW = "post-processing (decoding, NMS; host)"
DENSE_NOTE = ("The dense row is the unpruned architecture holding the run's final (masked) weights: the dense model's "
              "layers and widths, so its latency is the dense model's (dense kernels do not depend on the weight values); "
              "its non-zero parameters are the masked model's.")

Log = Callable[[str], None]


@dataclass
class ModelResult:
    """One built model: size, files (relative to the engine folder) and measured latency."""

    params: int
    onnx: str
    artefact: str
    timing: Timing
    nonzero_params: int | None = None  # parameters that are not zero (unstructured sparsity keeps the shapes)
    latency_ms: float | None = None  # the timing's value of the report's statistic
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> digest when built (empty: older folders)


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
    speedup: float  # dense latency / pruned latency, in the report's statistic
    timing_config: TimingConfig
    environment: dict[str, str] = field(default_factory=dict)
    statistic: str = "median"  # the target's latency statistic: "min" (fastest run) or "median"
    quantization: dict[str, Any] | None = None  # a quantized engine's CalibrationSet (asdict); None for fp32/fp16
    task: str = "classification"  # the run's task: what the engine's outputs are (logits, packed head outputs)
    postprocess: Timing | None = None  # the task's post-processing stage on the pruned engine's outputs (detection)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineReport:
        def result(d: dict[str, Any]) -> ModelResult:
            return ModelResult(**{**d, "timing": Timing.from_dict(d["timing"])})

        backend = canonical_name(data["backend"])
        spec = {"device": engine_device(get_backend(backend)), **data["spec"], "shape": None}
        post = data.get("postprocess")
        return cls(**{**data, "backend": backend, "spec": BuildSpec(**spec),
                      "pruned": result(data["pruned"]), "dense": result(data["dense"]),
                      "timing_config": TimingConfig(**data["timing_config"]),
                      "postprocess": Timing.from_dict(post) if post is not None else None})

    def end_to_end(self, result: ModelResult) -> float:
        """A model's latency (ms per batch, the report's statistic) with the post-processing stage added."""
        return self.latency(result) + (self.postprocess.value(self.statistic) if self.postprocess is not None else 0.0)

    def latency(self, result: ModelResult) -> float:
        """A model's latency (ms per batch) in the report's statistic."""
        return result.timing.value(self.statistic)

    def markdown(self) -> str:
        words = describe(self.statistic)
        rows = [[name, r.params, r.nonzero_params, self.latency(r), r.timing.median_ms, r.timing.p90_ms,
                 r.timing.images_per_s, r.timing.iterations] for name, r in ((DENSE_ROW, self.dense), ("pruned", self.pruned))]
        post = self.postprocess
        if post is not None:
            rows.append([POSTPROCESS_ROW, None, None, post.value(self.statistic), post.median_ms, post.p90_ms,
                         post.images_per_s, post.iterations])
        s, t = self.spec, self.timing_config
        clock = "CUDA events around CUDA-graph replays" if s.device == "cuda" else "host wall time of one synchronous batch"
        return "\n".join([
            f"# Engine: {self.model} ({self.kind}) on {self.backend}", "",
            f"Run `{self.run_dir}`; batch {s.batch}, {s.precision}, input {s.input_shape}, {s.threads} CPU threads, "
            f"sparse weights: {'yes' if s.sparse_weights else 'no'}.", "",
            markdown_table(["model", "parameters", "non-zero parameters", f"latency ms/batch ({words})",
                            "median ms/batch", "p90 ms/batch", "images/s", "iterations"], rows), "",
            f"**Speed-up (dense / pruned latency, {words}): {self.speedup:.2f}x**", "",
            *([self.postprocess_note(), ""] if post is not None else []), DENSE_NOTE, "",
            *([UNSTRUCTURED_NOTE, ""] if self.kind == "unstructured" and not s.sparse_weights else []),
            *([self.quantization_note(), ""] if self.quantization else []),
            f"Timing: warm-up {t.warmup_s} s, then >= {t.min_iterations} iterations and >= {t.min_seconds} s per model "
            f"in {t.rounds} alternating rounds; latency = {clock}; the {words} is the target's latency statistic.", "",
            "Environment: " + ", ".join(f"{k} {v}" for k, v in self.environment.items()), "",
        ])


    def postprocess_note(self) -> str:
        """The latencies with the post-processing stage, in one sentence."""
        words = describe(self.statistic)
        return (f"With post-processing ({POSTPROCESS_ROW}, timed on the pruned engine's outputs of real validation "
                f"images), end to end ({words}): dense {self.end_to_end(self.dense):.4g}, pruned "
                f"{self.end_to_end(self.pruned):.4g} ms/batch; the latency table and the budget speak of the engine "
                "alone.")

    def quantization_note(self) -> str:
        """How a quantized engine was calibrated, in one sentence."""
        q = self.quantization or {}
        return (f"Quantization: {self.spec.precision}, {q.get('scheme')}, activations calibrated with {q.get('method')} "
                f"on {q.get('images')} training images of {q.get('dataset')} (seed {q.get('seed')}; indices in engine.json).")


def engine_device(backend: Backend) -> str:
    """Where an engine of `backend` runs: the GPU for backends that have one (torch, tensorrt), else the CPU."""
    return "cuda" if "cuda" in backend.devices else "cpu"


def run_target(info: RunInfo, device: str) -> str:
    """The target whose threads and latency statistic an engine uses: the run's, else the default CPU target on the CPU."""
    if info.target:
        return info.target
    return DEFAULT_CPU_TARGET if device == "cpu" else ""


def run_statistic(info: RunInfo, device: str) -> str:
    """The latency statistic of the run's target: its LUT's, else its target's, else the default CPU target's on the
    CPU and the median on a GPU. Budgets, LUT predictions and measured latencies all speak this statistic."""
    if info.lut and Path(info.lut).is_file():
        return read_meta(info.lut).statistic
    target = run_target(info, device)
    return load_target(target).statistic if target else "median"


def default_threads(target: str) -> int:
    """Intra-op CPU threads: the target's `threads` (a name in targets/ or a YAML path), else all cores."""
    return load_target(target).resolved_threads() if target else usable_cores()


def build_spec(info: RunInfo, backend: str, batch: int, precision: str | None, threads: int | None) -> BuildSpec:
    """Check the user's choices and derive the spec (sparse weights for N:M runs on TensorRT)."""
    if batch < 1:
        raise UserError(f"the batch size (batch) must be at least 1, got {batch}", "give a number of images, e.g. 1")
    chosen = get_backend(backend)
    device = engine_device(chosen)
    precision = precision or chosen.default_precision(device)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}")
    chosen.check_precision(precision, device)
    check_batch_fits(batch, 3 * info.resolution ** 2 * 4, f"fp32 input alone at {info.resolution} px (activations "
                     "need several times more)", free_memory_bytes())
    if threads is not None and threads < 0:
        raise UserError(f"the CPU thread count (threads) must be 0 (every core) or more, got {threads}",
                        "give a number of CPU threads")
    return BuildSpec(batch=batch, resolution=info.resolution, precision=precision,
                     threads=default_threads(run_target(info, device)) if threads is None else threads,
                     sparse_weights=chosen.name == "tensorrt" and info.nm is not None, device=device)


def timing_input(spec: BuildSpec, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal batch in the engine's input dtype (latency does not depend on the values)."""
    return np.random.default_rng(seed).standard_normal(spec.input_shape).astype(spec.input_dtype)


def nonzero_count(model: nn.Module) -> int:
    """Parameters that are not exactly zero."""
    return sum(int(p.count_nonzero()) for p in model.parameters())


def check_engine_folder(out: Path, run_dir: Path, force: bool) -> None:
    """An engine folder holds one run's engine: another run's, or an engine.json that names no run (a user's own
    file), is replaced only with `force` (never silently). Another run's own folder is refused either way: `report`
    would take that folder for this engine's run and leave its own run out."""
    if (out / RUN_INFO).is_file() and out.resolve() != run_dir.resolve():
        raise UserError(f"'{out}' is the folder of another run, not of '{run_dir}'",
                        f"choose another `out`, e.g. a folder inside '{run_dir}'", fields=("out",))
    if force:
        return
    if not (out / ENGINE_REPORT).exists():
        if (out / ENGINE_MARKDOWN).exists():  # written after engine.json: without it, not a build's
            raise UserError(f"'{out}' holds an {ENGINE_MARKDOWN} without {ENGINE_REPORT}", "choose another `out`, or add "
                            "`force` to replace it", fields=("out", "force"))
        return
    previous = RunFolder(out).read_json(ENGINE_REPORT)
    other = previous.get("run_dir") if previous is not None else None
    if other != str(run_dir.resolve()):
        whose = f"the engine of another run ({other})" if other else f"an {ENGINE_REPORT} that names no run"
        raise UserError(f"'{out}' holds {whose}", "choose another `out`, or add `force` to replace it", fields=("out", "force"))


def output_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the writer lock of an output folder of build-engine, validate or report (the `.lock` a training run holds
    in its folder too): a second command writing the same folder at once is refused in one line before any work,
    instead of both writing and the folder ending with one's engine.json beside the other's ONNX files."""
    return writer_lock(folder / RunFolder.LOCK, f"the folder '{folder}'",
                       "another command is writing there: wait for it to finish, or choose another `out`", fields=("out",))


def build_engine(run_dir: str | Path, out: str | Path, *, backend: str = "onnxruntime", batch: int = 1,
                 precision: str | None = None, threads: int | None = None, timing: TimingConfig = TimingConfig(),
                 log: Log = lambda _: None, force: bool = False,
                 calibration: CalibrationRequest | None = None) -> EngineReport:
    """Build the pruned and the dense model of `run_dir` with `backend` into `out`; time both; write engine.json/.md.

    `precision` None means the backend's default: fp32 on the CPU, fp16 on a GPU. A quantized precision
    calibrates on `calibration` (None: `CalibrationRequest()`'s defaults); float ones refuse it. A folder
    holding another run's engine is refused unless `force`; rebuilding removes the old engine's validation files.
    """
    chosen = get_backend(backend)
    info = read_run_info(run_dir)
    task = run_task(run_dir)
    spec = build_spec(info, backend, batch, precision, threads)
    capped, warning = cap_threads(spec.threads, usable_cores())
    if warning:
        log(warning)
    spec = replace(spec, threads=capped)
    chosen.check_available(spec.device)
    out = check_writable(out, "out", folder=True)
    with output_lock(out):  # before the folder's files are read: a build started beside this one is refused
        check_engine_folder(out, Path(run_dir), force)
        scheme = chosen.qdq_scheme(spec.precision)
        if scheme is None and calibration is not None:
            raise UserError(f"calibration options apply to quantized engines, not {spec.precision}",
                            "drop them, or ask for `precision` int8", fields=("calibration", "precision"))
        models = load_run_models(run_dir)
        modules = {"dense": models.masked, "pruned": models.pruned}
        deployments = {name: task.deployment(module, spec.resolution) for name, module in modules.items()}
        request = calibration or CalibrationRequest()
        calibrated = (calibration_images(run_dir, info, request, scheme, spec.precision, task, deployments["pruned"])
                      if scheme is not None else None)
        if calibrated is not None:
            used = calibrated[0].images
            log(f"calibrating activations on {used} training images" + (
                f", all the run's training set holds (the default is {DEFAULT_IMAGES})"
                if request.images is None and used < DEFAULT_IMAGES else ""))
        for stale in STALE_ON_REBUILD:
            (out / stale).unlink(missing_ok=True)
        statistic = run_statistic(info, spec.device)
        networks = {name: deployment.network for name, deployment in deployments.items()}
        # the dense reference gets no sparse-weight kernels, even though the masked weights have the N:M pattern
        specs = {"dense": replace(spec, sparse_weights=False), "pruned": spec}
        sessions: dict[str, Session] = {}
        files: dict[str, tuple[str, str]] = {}
        digests: dict[str, dict[str, str]] = {}
        for name in MODELS:
            log(f"{name}: export ONNX ({spec.precision}) and build the {chosen.name} engine")
            onnx_path = (export_onnx(networks[name], out / f"{name}.onnx", spec.resolution, spec.precision)
                         if scheme is None or calibrated is None else
                         export_quantized(networks[name], out / f"{name}.onnx", spec.resolution, scheme, calibrated[1],
                                          calibrated[0].method))
            artefact = chosen.build(ModelSource(name, networks[name], onnx_path), specs[name], out)
            sessions[name] = chosen.load(artefact, specs[name])
            files[name] = (onnx_path.name, artefact.name)
            digests[name] = {f.name: file_sha256(f) for f in (onnx_path, out / artefact.name)}
        log(f"timing dense and pruned side by side on {spec.threads} thread(s) (>= {timing.min_iterations} iterations and "
            f">= {timing.min_seconds} s each; latency = {describe(statistic)})")
        x = timing_input(spec)
        runners = {name: sessions[name].runner(x) for name in MODELS}
        if deployments["pruned"].postprocessed:
            runners[POSTPROCESS] = postprocess_runner(run_dir, info, task, deployments["pruned"], sessions["pruned"])
        with progress_bar(total=rounds_of(timing) * len(runners), desc="build-engine: timing", unit="share") as bar:
            timings = measure(runners, spec.batch, timing, step_done=bar.update)
        results = {name: ModelResult(parameter_count(modules[name]), *files[name], timings[name],
                                     nonzero_count(modules[name]), timings[name].value(statistic), digests[name])
                   for name in MODELS}
        report = EngineReport(
            run_dir=str(Path(run_dir).resolve()), model=info.model, kind=info.kind, backend=chosen.name, spec=spec,
            pruned=results["pruned"], dense=results["dense"],
            speedup=timings["dense"].value(statistic) / timings["pruned"].value(statistic),
            timing_config=timing, environment=machine_info(spec.threads), statistic=statistic,
            quantization=asdict(calibrated[0]) if calibrated is not None else None, task=task.name,
            postprocess=timings.get(POSTPROCESS),
        )
        write_json(out / ENGINE_REPORT, report.to_json())
        write_text(out / ENGINE_MARKDOWN, report.markdown())
        return report


def postprocess_runner(run_dir: str | Path, info: RunInfo, task: Task, deployment: Deployment,
                       session: Session) -> Runner:
    """Timed runs of the task's post-processing on the engine's outputs for one batch of the run's first validation
    images (its cost depends on what the network detects, so not on the timing input's noise)."""
    data = run_data(run_dir, info, batch_size=session.spec.batch)
    val = task.datasets(data).val
    if len(val) == 0:
        raise UserError(f"the run's {info.dataset} validation set is empty: the post-processing has nothing to be timed on",
                        "train the run with a validation set")
    batch = next(iter(task.val_batches(Subset(val, [i % len(val) for i in range(session.spec.batch)]), data, 0, 1)))
    x, context = deployment.inputs(batch)
    outputs = torch.from_numpy(session.run(x.numpy()))
    return host_runner(lambda: deployment.predictions(outputs, context))


def read_engine_report(engine_dir: str | Path) -> EngineReport:
    """Read `engine.json` from a build-engine output folder, or raise a UserError."""
    path = Path(engine_dir) / ENGINE_REPORT
    if not path.is_file():
        raise UserError(f"'{engine_dir}' is not an engine folder (no {ENGINE_REPORT})", "pass the output folder of `iee-deploy build-engine`")
    try:
        return EngineReport.from_json(json.loads(path.read_text()))
    except UserError as exc:  # a field no build writes (a batch of -4, a resolution of 0)
        raise UserError(f"'{path}' is corrupt ({exc.problem})", "run build-engine again") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"'{path}' is corrupt ({type(exc).__name__}: {exc})", "run build-engine again") from None


def check_engine_run(engine_dir: str | Path, report: EngineReport) -> None:
    """The run folder an engine was built from must still be where engine.json says (validate and report read it)."""
    if not (Path(report.run_dir) / RUN_INFO).is_file():
        raise UserError(f"engine '{engine_dir}' was built from '{report.run_dir}', which is gone",
                        "move that run folder back, or build the engine again from where the run is now")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (an engine folder records its files' digests so validate checks what it loads)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_engine(engine_dir: str | Path, report: EngineReport) -> Session:
    """Load the pruned model's engine of an engine folder (the one that gets deployed)."""
    backend = get_backend(report.backend)
    backend.check_available(report.spec.device)
    for name in (report.pruned.onnx, report.pruned.artefact):
        path = Path(engine_dir) / name
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"engine file '{path}' is {'empty' if path.is_file() else 'missing'}", "run build-engine again")
        recorded = report.pruned.sha256.get(name)
        if recorded is not None and file_sha256(path) != recorded:
            raise UserError(f"engine file '{path}' is not the one build-engine wrote for run '{report.run_dir}' "
                            "(its checksum differs)", "run build-engine again for this run")
    return backend.load(Path(engine_dir) / report.pruned.artefact, report.spec)
