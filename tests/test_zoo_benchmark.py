"""benchmarks/zoo.py: the timm family rule, and one model's row measured end to end on a tiny model."""

import pytest
import torch
from torch import nn

from benchmarks.zoo import Entry, normalised, split_names, summary, sweep_one, timm_family


@pytest.mark.parametrize(("name", "family"), [
    ("resnet50d", "resnet"), ("tf_efficientnetv2_b0", "efficientnetv2"), ("efficientnetv2_rw_t", "efficientnetv2"),
    ("efficientnet_b0", "efficientnet"), ("mobilenetv3_small_050", "mobilenetv3"), ("mobilenetv4_conv_small", "mobilenetv4"),
    ("vit_tiny_patch16_224", "vit"), ("convnextv2_atto", "convnextv2"), ("res2net50_14w_8s", "res"),
    ("cs3darknet_s", "cs"), ("regnetx_002", "regnetx"), ("inception_v3", "inception"), ("levit_128s", "levit"),
])
def test_timm_family_rule(name, family):
    assert timm_family(name) == family


def test_names_split_outside_overrides():
    assert split_names("timm:a, hf:ViTConfig(hidden_size=8, num_hidden_layers=1),x") == [
        "timm:a", "hf:ViTConfig(hidden_size=8, num_hidden_layers=1)", "x"]
    assert normalised("model 'timm:x' cannot take 16 px") == "model '…' cannot take N px"


class Tiny(nn.Module):
    """conv-BN-ReLU twice, a residual sum, pooling and a classifier: prunable groups on both sides of a sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.fc(x.mean((2, 3)))


def test_one_model_row_and_summary(one_thread):
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    row = sweep_one(Entry("tiny", "hand-made", lambda size: Tiny(), fixed_size=16), 64, repeats=1, limit=60)
    ours, tp = row["ours"], row["torch_pruning"]
    assert (row["model"], row["source"], row["resolution"]) == ("tiny", "hand-made", 16)
    assert row["params_m"] == round(sum(p.numel() for p in Tiny().parameters()) / 1e6, 2)
    assert ours["handled"] and ours["rel_err"] < 1e-4 and ours["groups"] >= 2
    assert ours["onnx"]["ok"] and ours["onnx"]["rel_err"] <= 1e-4  # a real ONNX Runtime session ran it
    assert 0.5 < ours["prunable_share"] < 1  # the classifier's outputs and the stem's inputs stay
    assert tp["handled"] and ours["ms"] > 0 and tp["ms"] > 0 and row["ratio"] == ours["ms"] / tp["ms"]

    def broken(size: int) -> nn.Module:
        raise ValueError("no such layer")

    bad = sweep_one(Entry("broken", "hand-made", broken, fixed_size=16), 64, repeats=1, limit=60)
    assert bad["ours"] == {"handled": False, "error": "build: ValueError: no such layer", "user_error": False}
    lines = "\n".join(summary([row, bad]))
    assert "do not build offline on their own (left out of every count below): 1: broken (each row says why)" in lines
    assert "Exact (ours): **1/1** (100%)" in lines and "**1/1** of the exact ones" in lines
    assert "No raw traceback (exact, wrong outputs, or refused with a one-line UserError): **1/1**." in lines
