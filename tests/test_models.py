import pytest
import torch

from iee_deploy.errors import UserError
from iee_deploy.models import build_model, list_models, load_checkpoint, model_spec

ZOO = list_models()


def test_zoo_has_the_requested_models():
    expected = {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
                "regnet_y_400mf", "densenet121", "vgg16_bn", "shufflenet_v2_x1_0", "mobilenet_v1", "wrn22_2",
                "resnet20", "resnet56"}
    assert expected <= set(ZOO)


@pytest.mark.parametrize("name", ZOO)
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


def test_small_resolution_resnet_gets_cifar_stem():
    model = build_model("resnet18", 10, resolution=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert build_model("resnet18", 10, resolution=224).conv1.kernel_size == (7, 7)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = build_model("resnet20", 10)
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pt")
    loaded = build_model("resnet20", 10, checkpoint=tmp_path / "ck.pt")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="does not match the model"):
        build_model("resnet56", 10, checkpoint=tmp_path / "ck.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(model, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt")


def test_unknown_model_suggests_names():
    with pytest.raises(UserError, match="did you mean resnet50"):
        model_spec("resnet-50")
