"""Hardware measurement: per-layer latency lookup tables (LUTs) and the latency model built on them.

| module | what it holds |
|---|---|
| `targets` | `load_target(name_or_path) -> Target` (targets/*.yaml), `check_device(target)` |
| `layers` | `LayerSignature`, `enumerate_layers(model, input_shape)`, the channel grid |
| `backends` | `Backend` interface and `make_backend`: onnxruntime, torch (CPU/CUDA), tensorrt |
| `timing` | warm-up/repeat loops (host clock, CUDA graphs + events), `Timing` |
| `lut` | the LUT files (CSV + JSON metadata), `load_lut`, `check_lut` |
| `latency` | `LatencyModel.predict(layer_channels)`, `layer_latency(name, cin, cout)`, calibration |
| `measure` | `profile_model(request, out, resume)`: `iee-deploy profile` |
| `subnets`, `validate` | random pruned sub-networks; `validate_lut`: `iee-deploy validate-lut` |

Typical use by a pruner: `LatencyModel.load(path, model=..., batch=..., layers=...)`, then
`layer_latency(name, cin_array, cout_array)` for knapsack costs and `predict(g.layer_channels(keep))`
for a whole configuration (layer names are module names, as in `iee_deploy.graph`).
"""
