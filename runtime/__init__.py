"""The runtime layer: export, sessions and timing, below both `profiler/` and `iee_deploy.deploy`.

| module | what it holds |
|---|---|
| `export` | `export_onnx(model, path, resolution, precision)`: opset 17, dynamic batch, FP16 in the graph |
| `backends` | one `Backend` per runtime (`onnxruntime`, `torch`, `tensorrt`), `BuildSpec`, `ModelSource`, `Session`, `get_backend` |
| `timing` | the one timing loop (`measure`), the one `Timing`, the one `percentile`, the latency statistics |
| `cuda` | the device check, CUDA-graph capture and the CUDA-event runner (every GPU latency's clock) |
| `machine` | the one description of the machine a number was measured on |
| `progress` | progress of long work: a bar on a terminal, whole lines in a log |

It imports nothing from `profiler/` or `iee_deploy/` except the foundation modules
`iee_deploy.errors` and `iee_deploy.io` (tests/test_import_arrows.py holds the arrows). This
package imports nothing eagerly: `import runtime.backends.ort` loads ONNX Runtime and no GPU code.
"""
