"""timm:NAME and hf:CONFIG_OR_CLASS models: built offline, sizes checked first, one-line errors, optional packages."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli

from iee_deploy.errors import UserError
from iee_deploy.models import build_model, list_models, model_spec
from iee_deploy.models.external import HFLogits, parse_name

TINY_VIT = "hf:ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8)"


def test_parse_name_reads_literal_overrides():
    assert parse_name("resnet10t") == ("resnet10t", {})
    assert parse_name("vit_tiny_patch16_224(depth=2, drop_rate=0.1)") == ("vit_tiny_patch16_224",
                                                                         {"depth": 2, "drop_rate": 0.1})
    with pytest.raises(UserError, match="cannot read the overrides"):
        parse_name("vit(depth=os.system('x'))")


def test_timm_model_builds_offline_with_its_native_size():
    pytest.importorskip("timm")
    spec = model_spec("timm:resnet10t")
    assert (spec.family, spec.native_resolution) == ("timm", 176)  # timm's pretrained cfg input_size
    model = build_model("timm:resnet10t", num_classes=7, resolution=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_timm_vit_takes_multiples_of_its_patch():
    pytest.importorskip("timm")
    model = build_model("timm:vit_tiny_patch16_224(depth=1)", num_classes=5, resolution=48).eval()
    assert model.pos_embed.shape[1] == 1 + 3 * 3  # img_size reached the position embedding
    with pytest.raises(UserError, match="cannot take 40 px inputs.*multiple of 16"):
        build_model("timm:vit_tiny_patch16_224(depth=1)", 5, 40)


def test_timm_errors_are_one_line_before_any_build():
    pytest.importorskip("timm")
    with pytest.raises(UserError, match="unknown timm model 'resnet10x'; did you mean resnet10t"):
        model_spec("timm:resnet10x")
    with pytest.raises(UserError, match=r"cannot take 16 px inputs.*Kernel size can't be greater"):
        build_model("timm:convnext_atto", 10, 16)  # found by the meta-device forward, before the real build
    with pytest.raises(UserError, match="cannot run even at its native 224 px: ValueError: dropout probability"):
        build_model("timm:resnet18(drop_rate=2)", 10, 32)  # the name's argument, not the resolution, is wrong
    with pytest.raises(UserError, match="cannot be built with {'dept': 1}"):
        model_spec("timm:vit_tiny_patch16_224(dept=1)")
    with pytest.raises(UserError, match="sets .pretrained., which the tool sets itself; models are built offline"):
        model_spec("timm:resnet18(pretrained=True)")  # timm's 'got multiple values for keyword argument'
    with pytest.raises(UserError, match="sets 'num_classes', which the tool sets itself; give the class count as"):
        model_spec("timm:resnet18(num_classes=5)")


def test_hf_config_and_class_build_a_logits_model():
    pytest.importorskip("transformers")
    model = build_model(TINY_VIT, num_classes=4, resolution=32).eval()
    assert isinstance(model, HFLogits) and model.hf.config.image_size == 32 and model.hf.config.num_labels == 4
    assert next(iter(model.state_dict())) == "hf.vit.embeddings.cls_token"
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    by_class = build_model(TINY_VIT.replace("ViTConfig", "ViTForImageClassification"), 4, 32)
    assert by_class.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(UserError, match="cannot take 36 px.*multiple of 8"):
        build_model(TINY_VIT, 4, 36)


def test_hf_errors():
    pytest.importorskip("transformers")
    with pytest.raises(UserError, match="'DetrConfig' has no image-classification head"):
        model_spec("hf:DetrConfig")
    with pytest.raises(UserError, match="unknown transformers config or model class 'VitConfig'; did you mean ViTConfig"):
        model_spec("hf:VitConfig")
    with pytest.raises(UserError, match="ViTConfig has no field 'hiden_size'; did you mean hidden_size"):
        model_spec("hf:ViTConfig(hiden_size=32)")
    with pytest.raises(UserError, match="sets 'num_labels', which the tool sets itself"):
        model_spec("hf:ViTConfig(num_labels=3)")  # it was 'no field num_labels' (a property of every config)
    with pytest.raises(UserError, match="ViTConfig's `image_size` 30 is not a multiple of its `patch_size` 16"):
        model_spec("hf:ViTConfig(image_size=30, patch_size=16)")  # it was 'use a resolution a multiple of 16 (native 30)'


def test_listing_external_names():
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    assert list_models("timm:efficientnet_b0*")[0] == "timm:efficientnet_b0"
    assert {"hf:ViTConfig", "hf:ConvNextConfig"} <= set(list_models("hf:*"))
    assert "hf:DetrConfig" not in list_models("hf:*")
    result = run_cli("models", "timm:efficientnet_b*")
    assert result.returncode == 0, result.stderr
    assert "timm:efficientnet_b0 " in result.stdout and "checked on build" in result.stdout
    assert all(line.startswith("timm:efficientnet_b") for line in result.stdout.splitlines()[1:-2] if line)
    assert list_models("timm:nothing_like_this*") == []  # the CLI's "no model matches" case


def test_core_imports_and_refuses_in_one_line_without_timm_or_transformers():
    code = (
        "import sys; sys.modules['timm'] = None; sys.modules['transformers'] = None\n"
        "from iee_deploy.models import build_model, model_spec\n"
        "from iee_deploy.errors import UserError\n"
        "build_model('resnet20', 10)\n"
        "for name in ('timm:resnet18', 'hf:ViTConfig'):\n"
        "    try:\n"
        "        model_spec(name)\n"
        "    except UserError as e:\n"
        "        print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["timm is not installed; pip install 'iee-deploy[timm]'",
                                        "transformers is not installed; pip install 'iee-deploy[hf]'"]


def test_similar_names_put_a_case_only_difference_first():
    from iee_deploy.models.external import similar_names

    names = ["LevitConfig", "PvtConfig", "CvtConfig", "ViTConfig"]
    assert similar_names("vitconfig", names)[0] == "ViTConfig"  # difflib alone ranked it below the three others
    assert similar_names("levitconfig", names)[0] == "LevitConfig"
    assert similar_names("zzz", names) == []
