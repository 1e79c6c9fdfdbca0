"""ONNX export and the real ONNX Runtime engine against PyTorch; backend selection errors."""

import sys

import numpy as np
import onnx
import pytest
import torch

from iee_deploy.deploy.engines import BACKENDS, BuildSpec, ModelSource, get_backend
from iee_deploy.deploy.export import export_onnx
from iee_deploy.deploy.validate import TOLERANCES, compare_outputs
from iee_deploy.errors import NotAvailableError, UserError
from iee_deploy.models import build_model


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 32)
    model.train()
    with torch.no_grad():  # realistic BN statistics
        model(torch.randn(16, 3, 32, 32))
    return model.eval()


def test_export_fp16_is_fp16_end_to_end(resnet20, tmp_path):
    path = export_onnx(resnet20, tmp_path / "m.onnx", 32, "fp16")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {i.data_type for i in graph.graph.initializer} <= {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64}
    assert next(resnet20.parameters()).dtype == torch.float32  # the caller's model is untouched


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_engine_matches_pytorch(resnet20, tmp_path, precision):
    backend = get_backend("onnxruntime")
    spec = BuildSpec(batch=3, resolution=32, precision=precision, threads=1)
    onnx_path = export_onnx(resnet20, tmp_path / "pruned.onnx", 32, precision)
    artefact = backend.build(ModelSource("pruned", resnet20, onnx_path), spec, tmp_path)
    assert artefact.name == "pruned.ort.onnx" and artefact.is_file()
    engine = backend.load(artefact, spec)
    x = torch.randn(7, 3, 32, 32)  # 7 images: two full batches of 3 and a padded one
    with torch.no_grad():
        ref = resnet20(x).numpy()
    out = engine.run(x.numpy())
    assert out.shape == (7, 10) and out.dtype == np.float32
    err = compare_outputs(out, ref)
    assert err.max_abs <= TOLERANCES[precision].limit(err.scale), err
    if precision == "fp32":
        assert err.max_abs <= 1e-4
    call = engine.timed_call(x[:3].numpy())
    call()


def test_compare_outputs_exact():
    ref = np.array([[1.0, -4.0, 2.0], [0.5, 0.0, 0.25]], np.float32)
    out = ref + np.array([[0.0, 0.02, 0.0], [0.0, 0.7, 0.0]], np.float32)
    err = compare_outputs(out, ref)
    assert err.max_abs == pytest.approx(0.7) and err.scale == 4.0
    assert err.max_rel == pytest.approx(0.7 / 4.0)
    assert err.top1_agreement == 50.0  # second row's arg-max moved from 0 to 1
    assert TOLERANCES["fp16"].limit(4.0) == pytest.approx(0.04) and TOLERANCES["fp32"].limit(4.0) == 1e-4


def test_backend_registry_and_errors(monkeypatch):
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "torch-cuda"}
    with pytest.raises(UserError, match="did you mean onnxruntime"):
        get_backend("onnxrt")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(NotAvailableError, match=r"pip install \.\[tensorrt\] on a machine with an NVIDIA GPU"):
        get_backend("tensorrt").check_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="wrong device: --backend torch-cuda needs an NVIDIA GPU, found no CUDA device"):
        get_backend("torch-cuda").check_available()


def test_torch_cuda_build_saves_the_module_in_the_engine_dtype(resnet20, tmp_path):
    """Building needs no GPU (loading does): the artefact is the module in FP16, same function."""
    backend = get_backend("torch-cuda")
    assert backend.default_precision == "fp16" and get_backend("onnxruntime").default_precision == "fp32"
    spec = BuildSpec(batch=2, resolution=32, precision="fp16", threads=1)
    artefact = backend.build(ModelSource("pruned", resnet20, tmp_path / "unused.onnx"), spec, tmp_path)
    module = torch.export.load(artefact).module()  # an exported program: no Python pickle in an engine folder
    assert artefact.name == "pruned.torch.pt" and next(module.parameters()).dtype == torch.float16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        err = compare_outputs(module.float()(x).numpy(), resnet20(x).numpy())
    assert err.max_abs <= TOLERANCES["fp16"].limit(err.scale)
