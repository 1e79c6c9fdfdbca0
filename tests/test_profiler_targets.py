import platform

import pytest
from conftest import assert_user_error, run_cli

from iee_deploy.errors import UserError
from profiler import targets
from profiler.targets import check_device, list_targets, load_target


def test_every_requested_target_ships_with_sensible_defaults():
    assert {"titanv", "v100", "a100", "h100", "h200", "jetson-orin", "cpu"} <= set(list_targets())
    for name in list_targets():
        t = load_target(name)
        assert t.name == name
        if t.kind == "gpu":
            assert t.precision == "fp16" and t.device_name and t.timing.statistic == "median"
            assert t.grid.step % 8 == 0 and t.grid.min % 8 == 0 and t.grid.align == 8  # 8-aligned grid on GPUs
            assert t.batch == (1 if name == "jetson-orin" else 256)
        else:
            assert (t.precision, t.batch, t.backends[0], t.grid.measured) == ("fp32", 1, "onnxruntime", True)
            assert (t.threads, t.timing.statistic) == (1, "min")  # channel blocking measured (profiler.blocking)
    assert load_target("titanv").backends[0] == "torch"  # the paper's table: cuDNN


def test_target_by_path_and_bad_files(tmp_path):
    own = tmp_path / "mybox.yaml"
    own.write_text(load_target("cpu").path.read_text().replace("name: cpu", "name: mybox"))
    assert load_target(str(own)).name == "mybox"
    with pytest.raises(UserError, match="did you mean h100"):
        load_target("h1000")
    with pytest.raises(UserError, match="does not exist"):
        load_target(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(own.read_text().replace("precision: fp32", "precision: int3"))
    with pytest.raises(UserError, match="precision 'int3'"):
        load_target(str(broken))
    broken.write_text(own.read_text().replace("statistic: min", "statistic: mean"))
    with pytest.raises(UserError, match="timing.statistic 'mean'"):
        load_target(str(broken))
    broken.write_text(own.read_text() + "colour: blue\n")
    with pytest.raises(UserError, match="unknown field.*colour"):
        load_target(str(broken))
    broken.write_text(own.read_text().replace("  step: 16", "  step: -4"))
    with pytest.raises(UserError, match="'step' must be positive"):
        load_target(str(broken))
    broken.write_text(own.read_text().replace("  align: auto", "  align: sometimes"))
    with pytest.raises(UserError, match="'align' is 'sometimes'"):
        load_target(str(broken))


def test_cpu_target_matches_x86_machines_only(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert check_device(load_target("cpu"))
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(UserError, match="target 'cpu' is for .* machines, but this one is aarch64"):
        check_device(load_target("cpu"))


def test_gpu_target_without_that_gpu_names_what_was_found(monkeypatch, cpu_host):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    # No GPU on this (forced) host: the detection says so.
    with pytest.raises(UserError, match="no usable CUDA GPU, only the CPU") as err:
        check_device(load_target("titanv"))
    assert "TITAN V" in str(err.value) and "the cpu target" in str(err.value)
    # A different GPU (a double) is named, never used in its place.
    monkeypatch.setattr(targets, "detect_gpus", lambda: ["NVIDIA H100 80GB HBM3"])
    with pytest.raises(UserError, match="has GPU\\(s\\) 'NVIDIA H100 80GB HBM3'"):
        check_device(load_target("titanv"))
    assert check_device(load_target("h100")) == "NVIDIA H100 80GB HBM3"


def test_cli_wrong_device_and_missing_tensorrt_are_one_line_errors(tmp_path):
    out = str(tmp_path / "t.csv")
    assert_user_error(run_cli("profile", "--target", "titanv", "--model", "resnet20", "--out", out, host="cpu"),
                      "target 'titanv' needs a GPU matching 'TITAN V'", "no usable CUDA GPU")
    assert_user_error(run_cli("profile", "--target", "h100", "--backend", "tensorrt", "--model", "resnet20", "--out", out,
                              host="cpu"), "needs NVIDIA TensorRT", "pip install .[tensorrt]")
    assert_user_error(run_cli("profile", "--target", "titanv", "--model", "resnet20", "--out", out, host="gpu"),
                      "needs a GPU matching 'TITAN V'", "has GPU(s) 'Fake GPU (tests)'")
    assert_user_error(run_cli("profile", "--target", "tpu9", "--out", out), "unknown target 'tpu9'")
    assert not (tmp_path / "t.csv").exists()
