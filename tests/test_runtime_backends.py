"""`runtime`: ONNX export, real ONNX Runtime and torch CPU sessions against PyTorch; backend selection errors."""

import numpy as np
import onnx
import pytest
import torch

from iee_deploy.deploy.validate import TOLERANCES, compare_outputs
from iee_deploy.errors import NotAvailableError, UserError
from iee_deploy.models import build_model
from runtime.backends import BACKENDS, BuildSpec, ModelSource, canonical_name, get_backend
from runtime.export import export_onnx
from runtime.timing import TimingConfig, measure


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
    timing = measure({"pruned": engine.runner(x[:3].numpy())}, 3,
                     TimingConfig(warmup_s=0, min_iterations=2, min_seconds=0, rounds=1))["pruned"]
    assert timing.iterations == 2 and timing.min_ms > 0


def test_torch_cpu_session_matches_pytorch_and_is_timed_on_the_host(resnet20, tmp_path, one_thread):
    backend = get_backend("torch")
    spec = BuildSpec(batch=2, resolution=32, precision="fp32", threads=1)
    session = backend.load(backend.build(ModelSource("pruned", resnet20), spec, tmp_path), spec)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = resnet20(x).numpy()
    assert compare_outputs(session.run(x.numpy()), ref).max_abs <= 1e-4
    assert len(session.runner(x[:2].numpy())(3)) == 3


def test_compare_outputs_exact():
    ref = np.array([[1.0, -4.0, 2.0], [0.5, 0.0, 0.25]], np.float32)
    out = ref + np.array([[0.0, 0.02, 0.0], [0.0, 0.7, 0.0]], np.float32)
    err = compare_outputs(out, ref)
    assert err.max_abs == pytest.approx(0.7) and err.scale == 4.0
    assert err.max_rel == pytest.approx(0.7 / 4.0)
    assert err.agreement == 50.0  # second row's arg-max moved from 0 to 1
    assert TOLERANCES["fp16"].limit(4.0) == pytest.approx(0.04) and TOLERANCES["fp32"].limit(4.0) == 1e-4


def test_a_nan_output_is_a_nan_error_that_fails_its_check():
    """max() dropped a NaN error, so an engine computing NaN passed engine-vs-pytorch with '0 error'."""
    from iee_deploy.deploy.validate import ErrorAccumulator, threshold_check

    ref = np.array([[1.0, -4.0, 2.0]], np.float32)
    acc = ErrorAccumulator()
    acc.update(np.full_like(ref, np.nan), ref)
    acc.update(ref, ref)  # a later finite batch does not hide it
    err = acc.result()
    assert np.isnan(err.max_abs)
    assert threshold_check("engine-vs-pytorch", err.max_abs, TOLERANCES["fp32"].limit(err.scale), "").status == "fail"


def test_backend_registry_and_errors(cpu_host):
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "torch"}  # one name per runtime
    assert canonical_name("torch-cuda") == "torch" and get_backend("torch-cuda").name == "torch"
    with pytest.raises(UserError, match="did you mean onnxruntime"):
        get_backend("onnxrt")
    with pytest.raises(NotAvailableError, match=r"pip install \.\[tensorrt\] on a machine with an NVIDIA GPU"):
        get_backend("tensorrt").check_available("cuda")
    with pytest.raises(UserError, match="wrong device: the torch backend on a GPU needs an NVIDIA GPU, found no CUDA device"):
        get_backend("torch").check_available("cuda")
    get_backend("torch").check_available("cpu")
    with pytest.raises(UserError, match="runs on cpu, not cuda"):
        get_backend("onnxruntime").check_available("cuda")


def test_backends_pass_on_a_gpu_host(gpu_host):
    get_backend("torch").check_available("cuda")
    get_backend("tensorrt").check_available("cuda")  # the fake TensorRT of tests/hosts imports


def test_torch_build_saves_the_module_in_the_engine_dtype(resnet20, tmp_path):
    """Building needs no GPU (loading on CUDA does): the artefact is the module in FP16, same function."""
    backend = get_backend("torch")
    assert backend.default_precision("cuda") == "fp16" and get_backend("onnxruntime").default_precision("cpu") == "fp32"
    spec = BuildSpec(batch=2, resolution=32, precision="fp16", threads=1)
    artefact = backend.build(ModelSource("pruned", resnet20, tmp_path / "unused.onnx"), spec, tmp_path)
    module = torch.export.load(artefact).module()  # an exported program: no Python pickle in an engine folder
    assert artefact.name == "pruned.torch.pt2" and next(module.parameters()).dtype == torch.float16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        err = compare_outputs(module.float()(x).numpy(), resnet20(x).numpy())
    assert err.max_abs <= TOLERANCES["fp16"].limit(err.scale)
