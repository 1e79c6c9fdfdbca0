import json

import pytest
import torch
from conftest import assert_user_error, run_cli

from iee_deploy.errors import UserError
from iee_deploy.models import build_model, list_models, load_checkpoint, load_state, model_spec

ZOO = list_models()
CORE = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
        "densenet121", "vgg16_bn", "shufflenet_v2_x1_0", "mobilenet_v1", "wrn22_2", "resnet20", "resnet56"]
"""The zoo's first 14 models (the paper's and the structured benchmarks'); the others are swept by
benchmarks/graph.py, and a representative few run in test_graph_coverage.py."""


def test_zoo_has_the_requested_models():
    assert set(CORE) <= set(ZOO)


@pytest.mark.parametrize("name", CORE)
def test_every_model_runs_at_native_resolution(name):
    res = model_spec(name).native_resolution
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_paper_model_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("resnet20", 10)) == 272_474  # He et al. report 0.27M
    assert count(build_model("resnet56", 10)) == 855_770  # 0.85M
    assert count(build_model("mobilenet_v1", 1000)) == 4_231_976  # 4.2M (Howard et al.)


def test_small_resolution_mobilenet_v2_keeps_a_4x4_map():
    small = build_model("mobilenet_v2", 10, resolution=32)
    assert small.features[0][0].stride == (1, 1) and small.features[2].conv[1][0].stride == (1, 1)
    assert small.features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert build_model("mobilenet_v2", 10, resolution=224).features[0][0].stride == (2, 2)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_small_resolution_mobilenet_v3_keeps_a_4x4_map(name):
    small = build_model(name, 10, resolution=32)
    assert small.features[0][0].stride == (1, 1)
    assert small.features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    strides = [m.stride for m in small.modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)]
    assert len(strides) == 3  # of the five stride-2 convs, the stem's and the first depthwise one's are now 1
    assert build_model(name, 10, resolution=224).features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)


def test_small_resolution_resnet_gets_cifar_stem():
    model = build_model("resnet18", 10, resolution=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert build_model("resnet18", 10, resolution=224).conv1.kernel_size == (7, 7)


def _saved(path, obj):
    torch.save(obj, path)
    return path


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = build_model("resnet20", 10)
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pt")
    loaded = build_model("resnet20", 10, checkpoint=tmp_path / "ck.pt")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="does not match the model"):
        build_model("resnet56", 10, checkpoint=tmp_path / "ck.pt")
    training = {"progress": {"step": 3}, "model": model.state_dict(), "optimizer": {"state": {}}}  # checkpoint.pt
    assert build_model("resnet20", 10, checkpoint=_saved(tmp_path / "run.pt", training)) is not None  # its weights
    with pytest.raises(UserError, match="is a training checkpoint .* not a model's weights"):
        load_state(model, training, "final_model.pt")  # where weights alone are expected (a run's final_model.pt)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a torch checkpoint"):
        load_checkpoint(model, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt")


def test_unknown_model_suggests_names():
    with pytest.raises(UserError, match="did you mean resnet50"):
        model_spec("resnet-50")


def test_every_torchvision_classifier_is_in_the_zoo_with_the_paper_models():
    import torchvision

    names = set(ZOO)
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    assert {"resnet20", "resnet56", "wrn22_2", "mobilenet_v1"} <= names
    assert list_models("vit_b_*") == ["vit_b_16", "vit_b_32"]
    assert list_models(["convnext_t*", "swin_t"]) == ["convnext_tiny", "swin_t"]
    assert "resnet20" in list_models(family="paper") and "resnet20" not in list_models(family="torchvision")
    with pytest.raises(UserError, match="unknown model family 'TIMM'; choose one of: torchvision, paper, timm, hf"):
        list_models(["*"], family="TIMM")  # it returned [] without a word


def test_fixed_size_models_take_valid_resolutions_and_name_them_otherwise():
    vit = build_model("vit_b_32", 3, resolution=64).eval()  # the position embedding follows the resolution
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(UserError, match="multiple of 32"):
        build_model("vit_b_32", 3, resolution=48)
    with pytest.raises(UserError, match="multiple of 224"):
        model_spec("maxvit_t").check_resolution(64)
    with pytest.raises(UserError, match="at least 75 px"):
        build_model("inception_v3", 3, resolution=32)
    googlenet = build_model("googlenet", 3, resolution=64).train()  # no auxiliary heads: one output in training
    assert googlenet(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_user_factory_by_module_path():
    spec = model_spec("tests.user_model:build")
    assert (spec.family, spec.native_resolution) == ("user", 16)
    model = build_model("tests.user_model:build", num_classes=5)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(UserError, match="has no 'biuld'; did you mean build"):
        model_spec("tests.user_model:biuld")
    with pytest.raises(UserError, match="cannot import module 'tests.no_such_module'"):
        model_spec("tests.no_such_module:build")
    with pytest.raises(UserError, match="takes no num_classes"):
        model_spec("tests.user_model:TinyNet.forward")


def test_cli_lists_models_and_trains_a_user_model(tmp_path):
    listed = run_cli("models", "swin_*", "--names-only")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t"]
    assert_user_error(run_cli("models", "nomatch*"), "no model matches nomatch*")

    out = tmp_path / "run"
    result = run_cli("train", "--model", "tests.user_model:build", "--dataset", "digits", "--subset", "64",
                     "--epochs", "1", "--batch-size", "8", "--sparsity", "0.5", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["model"] == "tests.user_model:build"
    state = torch.load(out / "final_model.pt", weights_only=True)
    assert set(state) == set(build_model("tests.user_model:build", 10).state_dict())


@pytest.mark.parametrize(("args", "field"), [
    (("resnet20", "10", 32), "num_classes"), (("resnet20", 10.0, 32), "num_classes"), (("resnet20", None, 32), "num_classes"),
    (("resnet20", 10, "32"), "resolution"), (("resnet20", 10, 0), "resolution"), ((None, 10, 32), "model"),
], ids=["classes-a-string", "classes-a-float", "classes-none", "resolution-a-string", "resolution-zero", "name-none"])
def test_build_model_names_a_bad_argument(args, field):
    """Python callers get the one-line error naming the argument (they got a TypeError from a comparison or a layer)."""
    with pytest.raises(UserError) as err:
        build_model(*args)
    assert err.value.field == field
