"""Deployment: physically pruned model -> ONNX -> engine, measured FPS, validation and reports.

Public API (what the CLI and the demo call):

- `build_engine(run_dir, out, backend=, batch=, precision=, threads=, timing=) -> EngineReport`
- `validate_engine(engine_dir, dataset=, data_dir=, subset=, latency_ms=, lut_tolerance=, ...) -> ValidationReport`
- `write_report(paths, out) -> Path` (report.md; report.html, report.json and PNGs beside it)
"""

from iee_deploy.deploy.build import EngineReport, build_engine, read_engine_report
from iee_deploy.deploy.report import write_report
from iee_deploy.deploy.timing import Timing, TimingConfig
from iee_deploy.deploy.validate import TOLERANCES, ValidationReport, validate_engine

__all__ = ["TOLERANCES", "EngineReport", "Timing", "TimingConfig", "ValidationReport", "build_engine",
           "read_engine_report", "validate_engine", "write_report"]
