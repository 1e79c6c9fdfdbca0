"""Hardware targets: one YAML file per device (`<name>.yaml`) and shipped latency tables (`luts/`).

`profiler.targets.load_target(name_or_path)` reads them; users can add a file here or pass a path.
"""
