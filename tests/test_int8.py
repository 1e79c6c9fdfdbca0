"""INT8 as a precision of the LUT and the engine: real ONNX Runtime QDQ sessions on tiny ResNet-20s.

The accuracy checks need a model whose predictions mean something, so a ResNet-20 is trained for a
few seconds on the embedded digits at 8 px (about 80% top-1) and written as a run folder.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import assert_user_error, run_cli
from torch import nn

from iee_deploy.data import build_datasets
from iee_deploy.deploy.build import build_engine, read_engine_report
from iee_deploy.deploy.calibration import DEFAULT_IMAGES, CalibrationRequest, calibration_count
from iee_deploy.deploy.validate import check_budget_precision, validate_engine
from iee_deploy.errors import UserError
from iee_deploy.io import save_torch
from iee_deploy.models import build_model
from iee_deploy.profiling import profile as profile_model
from iee_deploy.profiling import validate_lut
from iee_deploy.runs import FINAL_MODEL, RunInfo, write_run_info
from profiler.latency import LatencyModel
from profiler.layers import enumerate_layers, unique_signatures
from profiler.lut import load_lut
from profiler.measure import ProfileRequest
from profiler.measurer import make_measurer, settings_for
from profiler.onnx_graphs import layer_onnx, quantized_layer_onnx
from profiler.targets import load_target
from runtime.backends import BuildSpec, ModelSource, get_backend
from runtime.backends.ort import session_options
from runtime.export import export_onnx
from runtime.quantize import integer_kernels, kernels_of, quantize, random_batches
from runtime.timing import TimingConfig

FAST = TimingConfig(warmup_s=0.0, min_iterations=3, min_seconds=0.05)
FAST_CLI = ("--warmup-s", "0", "--min-iters", "3", "--min-seconds", "0.05")
ORT_INT8 = get_backend("onnxruntime").quantization["int8"]


def optimised(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime runs for `model` (level ALL, as every session of the backend)."""
    options = session_options(1)
    options.optimized_model_filepath = str(folder / "optimised.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def conv_signature():
    layers = enumerate_layers(build_model("resnet20", 10, 16), (1, 3, 16, 16))
    return next(s for s in unique_signatures(layers).values() if s.kind == "conv" and s.cin == s.cout == 16)


def test_qdq_conv_layer_runs_as_an_integer_kernel(tmp_path):
    sig = conv_signature()
    graph = optimised(quantized_layer_onnx(sig, 16, 16, 1, ORT_INT8), tmp_path)
    found = integer_kernels(graph, "the layer")
    assert found.integer == {"QLinearConv": 1} and found.float_nodes == ()  # conv + ReLU in one integer kernel
    # the float layer keeps its float conv: refused as an int8 latency, in one line naming the node
    with pytest.raises(UserError, match="did not fuse the layer into integer kernels: float") as error:
        integer_kernels(optimised(layer_onnx(sig, 16, 16, 1), tmp_path), "the layer")
    assert "\n" not in str(error.value)
    session = get_backend("onnxruntime").session(
        ModelSource("layer", onnx=quantized_layer_onnx(sig, 16, 16, 1, ORT_INT8).SerializeToString()),
        BuildSpec(1, 16, "int8", 1, shape=(1, 16, 16, 16)))
    assert session.infer_batch(np.ones((1, 16, 16, 16), np.float32)).shape == (1, 16, 16, 16)


def test_whole_resnet20_quantizes_every_conv_and_the_classifier(tmp_path):
    """The exporter's shared zero biases (Identity nodes) would keep convs in float; none stays."""
    session = get_backend("onnxruntime").session(ModelSource("net", module=build_model("resnet20", 10, 8).eval()),
                                                 BuildSpec(1, 8, "int8", 1))
    options = session.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    fp32 = export_onnx(build_model("resnet20", 10, 8).eval(), tmp_path / "fp32.onnx", 8)
    qdq = quantize(fp32, tmp_path / "int8.onnx", random_batches((1, 3, 8, 8)), ORT_INT8)
    kernels = kernels_of(optimised(onnx.load(str(qdq)), tmp_path))
    assert kernels.integer == {"QGemm": 1, "QLinearConv": 21} and kernels.float_nodes == ()


@pytest.fixture(scope="module")
def int8_lut(tmp_path_factory):
    cpu = load_target("cpu")
    request = ProfileRequest(model="resnet20", num_classes=10, resolution=8, batch=1, target=cpu,
                             settings=settings_for(cpu, "int8", warmup=1, repeats=3, network_repeats=3), grid_step=32,
                             grid_align=8, calibration_networks=2)
    out = tmp_path_factory.mktemp("lut") / "cpu-resnet20-int8.csv"
    return out, profile_model(request, out, progress=False)


def test_profile_int8_writes_an_int8_lut_read_back_as_int8(int8_lut):
    out, summary = int8_lut
    lut = load_lut(out)
    assert lut.meta.precision == "int8" and summary.measured == len(lut.rows) > 0
    assert lut.meta.versions["quantization"].startswith("QDQ, QUInt8 activations, QInt8 per-channel weights")
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "int8"
    model = LatencyModel.load(out, precision="int8")  # a budget from it is an int8 budget
    assert model.predict({}) > 0
    with pytest.raises(UserError, match="was measured for precision int8, not fp32"):
        LatencyModel.load(out, precision="fp32")


def test_validate_lut_times_whole_networks_quantized_the_same_way(int8_lut):
    out, _ = int8_lut
    report = validate_lut(out, "resnet20", samples=2, progress=False)
    assert report.precision == "int8" and len(report.samples) == 2
    assert report.mape_pct >= 0 and all(s.measured_ms > 0 and s.predicted_ms > 0 for s in report.samples)


def train_run(run: Path, steps: int = 60) -> Path:
    """A ResNet-20 trained for `steps` SGD steps on digits at 8 px, written as an (unpruned) run folder."""
    torch.manual_seed(0)
    train = build_datasets("digits", None, 8).train
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor([train[i][1] for i in range(len(train))])
    model = build_model("resnet20", 10, 8)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    run.mkdir(parents=True)
    save_torch(run / FINAL_MODEL, model.eval().state_dict())
    write_run_info(run, RunInfo(model="resnet20", num_classes=10, resolution=8, dataset="digits", kind="unstructured",
                                target="cpu", budget_ms=500.0, finished=True))
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_run(tmp_path_factory.mktemp("trained") / "run")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def int8_engine(trained):
    """build-engine --precision int8 as a user runs it: 4 calibration images, Percentile."""
    out = trained / "engine-int8"
    result = run_cli("build-engine", "--run", str(trained), "--precision", "int8", "--batch", "32", "--threads", "1",
                     "--calibration-images", "4", "--calibration-method", "percentile", "--calibration-seed", "3",
                     "--out", str(out), *FAST_CLI)
    assert result.returncode == 0, result.stderr
    assert "Quantization: int8, QDQ, QUInt8 activations" in result.stdout
    return out


def test_build_engine_int8_records_precision_and_calibration_set(int8_engine):
    report = read_engine_report(int8_engine)
    assert report.spec.precision == "int8" and report.backend == "onnxruntime"
    q = report.quantization
    assert q is not None and (q["dataset"], q["images"], q["seed"], q["method"]) == ("digits", 4, 3, "Percentile")
    assert len(set(q["indices"])) == 4 and q["indices"] == sorted(q["indices"])
    again = np.random.default_rng(3).choice(1438, 4, replace=False)  # the digits training set, drawn by the seed
    assert q["indices"] == sorted(again.tolist())
    # the QDQ model on disk is what the engine runs, fused into integer kernels
    artefact = onnx.load(str(int8_engine / report.pruned.artefact))
    assert integer_kernels(artefact, "the engine").integer["QLinearConv"] == 21


def test_validate_int8_by_top1_within_the_tolerance_and_failing_at_zero(int8_engine, tmp_path):
    report = validate_engine(int8_engine, timing=FAST)
    status = {c.name: c.status for c in report.checks}
    assert status["engine-vs-pytorch"] == "info"  # no elementwise tolerance for int8
    assert report.scores["pruned"] > 50  # a model that learned the digits
    drop = report.scores["pruned"] - report.scores["engine"]
    assert 0 < drop <= 1.0 and status["accuracy"] == "pass"  # 4 Percentile images cost about a point, within 1
    assert status["latency-budget"] == "pass"
    strict = validate_engine(int8_engine, timing=FAST, max_accuracy_drop=0.0, out=tmp_path)
    assert [c.name for c in strict.failed] == ["accuracy"]
    accuracy = next(c for c in strict.checks if c.name == "accuracy")
    assert accuracy.measured == pytest.approx(drop) and "int8 engine" in accuracy.detail
    with pytest.raises(UserError, match="max_accuracy_drop -1 is not a drop of 0 or more"):
        validate_engine(int8_engine, timing=FAST, max_accuracy_drop=-1.0, out=tmp_path)


def test_default_calibration_and_an_fp32_engine_of_the_same_run(trained, tmp_path):
    int8 = build_engine(trained, tmp_path / "int8", precision="int8", batch=8, threads=1, timing=FAST)
    assert int8.quantization is not None and (int8.quantization["images"], int8.quantization["method"]) == (256, "MinMax")
    fp32 = build_engine(trained, tmp_path / "fp32", batch=8, threads=1, timing=FAST)
    assert fp32.quantization is None and "Quantization" not in fp32.markdown()


def test_an_int8_budget_is_not_an_fp32_one(int8_lut, trained):
    lut, _ = int8_lut
    info = RunInfo(model="resnet20", num_classes=10, resolution=8, dataset="digits", lut=str(lut), budget_ms=1.0)
    assert check_budget_precision(info, "int8", None) == "int8"
    with pytest.raises(UserError, match="the run's latency budget is an int8 budget .* but this engine is fp32") as refused:
        check_budget_precision(info, "fp32", None)
    assert "give `latency_ms` as the fp32 engine's budget" in refused.value.fix  # a field the CLI names as its flag
    assert check_budget_precision(info, "fp32", 2.0) == "int8"  # a budget the user gives is their own


def test_the_default_calibration_set_shrinks_to_a_small_training_set():
    # a run on 128 images was refused for the default 256 the user never asked for
    assert calibration_count(CalibrationRequest(), 128, "digits") == 128
    assert calibration_count(CalibrationRequest(), 1438, "digits") == DEFAULT_IMAGES
    assert calibration_count(CalibrationRequest(100), 128, "digits") == 100
    with pytest.raises(UserError, match="calibration asks for 256 training images, but the run's 'digits' training "
                                        "set holds 128; give `calibration_images` of at most 128"):
        calibration_count(CalibrationRequest(256), 128, "digits")  # asked for: refused


@pytest.mark.parametrize("options,message", [
    ({"precision": "int8", "calibration": CalibrationRequest(8, "Distribution")}, "Distribution cannot calibrate int8"),
    ({"precision": "int8", "calibration": CalibrationRequest(0)}, "calibration_images 0 is not a number of images"),
    ({"precision": "int8", "calibration": CalibrationRequest(5000)},
     "calibration asks for 5000 training images, but the run's 'digits' training set holds 1438"),
    ({"calibration": CalibrationRequest(8)}, "calibration options apply to quantized engines, not fp32"),
    ({"precision": "int8", "backend": "torch"},
     "the torch backend does not build int8 engines .* or the onnxruntime or tensorrt backend for int8"),
    ({"precision": "fp8"}, "the onnxruntime backend does not build fp8 .* or the tensorrt backend for fp8"),
])
def test_bad_quantization_requests_are_refused_before_any_export(trained, tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        build_engine(trained, tmp_path, threads=1, timing=FAST, **options)
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_unknown_calibration_method_is_one_line(trained, tmp_path):
    result = run_cli("build-engine", "--run", str(trained), "--out", str(tmp_path), "--precision", "int8",
                     "--calibration-method", "kl", host="cpu")
    assert_user_error(result, "unknown calibration method 'kl' for int8", "choose one of: MinMax, Entropy, Percentile")
    assert not list(tmp_path.glob("*.onnx"))


def test_int8_profile_on_a_backend_without_it_is_refused():
    cpu = load_target("cpu")
    with pytest.raises(UserError, match="the torch backend does not build int8"):
        make_measurer("torch", settings_for(cpu, "int8"))
    with pytest.raises(UserError, match="measures fp32 or its quantized precisions, not fp16"):
        make_measurer("onnxruntime", settings_for(cpu, "fp16"))


def test_trt_and_ort_schemes_quantize_as_each_runtime_needs(tmp_path):
    """TensorRT's INT8 is symmetric (zero point 0, signed); ONNX Runtime's is U8S8; FP8 is E4M3 at opset 19."""
    sig = conv_signature()
    float_layer = layer_onnx(sig, 16, 16, 1)
    schemes = get_backend("tensorrt").quantization

    def activation_zero_points(model: onnx.ModelProto) -> list[onnx.TensorProto]:
        inits = {t.name: t for t in model.graph.initializer}
        return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]

    for name, scheme, dtype, symmetric in (("ort", ORT_INT8, onnx.TensorProto.UINT8, False),
                                           ("trt", schemes["int8"], onnx.TensorProto.INT8, True),
                                           ("fp8", schemes["fp8"], onnx.TensorProto.FLOAT8E4M3FN, True)):
        model = onnx.load(str(quantize(float_layer, tmp_path / f"{name}.onnx", random_batches((1, 16, 16, 16)), scheme,
                                       scheme.methods[0])))
        points = activation_zero_points(model)
        assert points and all(p.data_type == dtype for p in points), name
        if symmetric:
            assert all(not onnx.numpy_helper.to_array(p).astype(np.float32).any() for p in points), name
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19


def test_fp8_needs_compute_capability_8_9(gpu_host, monkeypatch):
    trt = get_backend("tensorrt")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(UserError, match="fp8 needs a GPU of compute capability 8.9 or more; .* has 8.0"):
        trt.check_precision("fp8", "cuda")
    trt.check_precision("int8", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    trt.check_precision("fp8", "cuda")


def test_tensorrt_builds_the_qdq_onnx_strongly_typed_without_precision_flags(monkeypatch, tmp_path):
    """Explicit quantization: the QDQ graph decides INT8, no builder flag or calibrator (gone in TensorRT 11)."""
    from test_deploy_tensorrt import fake_tensorrt

    rec: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    trt = get_backend("tensorrt")
    qdq = quantize(layer_onnx(conv_signature(), 16, 16, 1), tmp_path / "pruned.onnx", random_batches((1, 16, 16, 16)),
                   trt.quantization["int8"])
    plan = trt.build(ModelSource("pruned", onnx=qdq), BuildSpec(1, 16, "int8", 1, device="cuda", shape=(1, 16, 16, 16)),
                     tmp_path)
    assert plan.read_bytes() == b"PLAN-BYTES" and rec["parsed"] == str(qdq)
    assert rec["network_flags"] == 1 << 1 and rec.get("set", []) == [] and rec.get("cleared", []) == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
