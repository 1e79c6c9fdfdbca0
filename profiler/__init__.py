"""Hardware measurement: per-layer latency lookup tables (LUTs) and the latency model built on them.

| module | what it holds |
|---|---|
| `targets` | `load_target(name_or_path) -> Target` (targets/*.yaml; its latency `statistic`), `check_device(target)` |
| `layers` | `LayerSignature`, `enumerate_layers(model, input_shape)`, the channel grid |
| `onnx_graphs` | the one-layer networks that are timed (ONNX graphs, eager modules) |
| `measurer` | `Measurer`: one-layer and whole networks timed through a `runtime` backend; `settings_for` |
| `lut` | the LUT files (CSV + JSON metadata), `load_lut` (refuses incomplete tables), `check_lut` |
| `latency` | `LatencyModel.predict(layer_channels)` (never negative), `layer_latency(name, cin, cout)`, calibration |
| `measure` | `profile_model(request, model, out, subnetworks)`: measure, calibrate, record, resume |

`profiler/` measures through `runtime/` and never builds models or dependency graphs: the
commands above it (`iee_deploy.profiling`) hand it the model and its random sub-networks.

Typical use by a pruner: `LatencyModel.load(path, model=..., batch=..., layers=...)`, then
`layer_latency(name, cin_array, cout_array)` for knapsack costs and `predict(g.layer_channels(keep))`
for a whole configuration (layer names are module names, as in `iee_deploy.graph`).
"""
