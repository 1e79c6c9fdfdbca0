"""Deployment: physically pruned model -> ONNX -> engine, measured FPS, validation and reports.

Engines are built, loaded and timed through `runtime` (backends, sessions, the timing loop).
Modules, imported on use (this package imports nothing eagerly, so `import iee_deploy.deploy.render`
does not load datasets, models or engines):

- `build`: `build_engine(run_dir, out, backend=, batch=, precision=, threads=, timing=) -> EngineReport`
- `validate`: `validate_engine(engine_dir, dataset=, data_dir=, subset=, latency_ms=, ...) -> ValidationReport`
- `report`: `write_report(paths, out) -> Path` (report.md; report.html, report.json and PNGs beside it)
- `run_models`: the models of a run folder; `render`: tables and numbers
"""
