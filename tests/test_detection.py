"""Detectors: the network part (backbone, neck, heads) is the prunable graph, exact on the raw head outputs; the
stages around it (pre-processing, anchors, box decoding, NMS) stay outside, whole."""

from __future__ import annotations

import json

import detectors
import pytest
import torch
from click.testing import CliRunner
from test_graph import random_keep, randomise_bn, rel_err

from iee_deploy.cli import main
from iee_deploy.errors import UserError
from iee_deploy.graph import build_dependency_graph, mask_model, prune_model
from iee_deploy.models.detection import OneStageNetwork, ProposalNetwork, network_part

FACTORIES = ["retinanet_tiny", "fcos_tiny", "fasterrcnn_tiny", "ssdlite", "yolo_tiny"]


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("factory", FACTORIES)
def test_network_part_prunes_exactly_on_the_raw_head_outputs(factory):
    detector = getattr(detectors, factory)().eval()
    part = network_part(detector)
    assert part is not None and "NMS" in part.left_out
    net = randomise_bn(part.module).eval()
    g = build_dependency_graph(net, images(1))
    assert g.prunable_groups
    keep = random_keep(g)
    pruned, masked = prune_model(net, g, keep), mask_model(net, g, keep)
    with torch.no_grad():
        got, want = pruned(images()), masked(images())
    assert len(got) == len(want) > 1 and all(a.shape == b.shape for a, b in zip(got, want))
    assert max(rel_err(a, b) for a, b in zip(got, want)) < 1e-4
    removed = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in pruned.parameters())
    assert removed > 0


def test_head_outputs_are_kept_whole_and_the_inner_convolutions_prune():
    """Widths that encode anchors x classes or box coordinates are outputs: kept; the head's tower prunes."""
    detector = detectors.retinanet_tiny(num_classes=7).eval()
    part = network_part(detector)
    assert part is not None and isinstance(part.module, OneStageNetwork)
    g = build_dependency_graph(part.module, images(1))
    prunable = {ref.name for grp in g.prunable_groups for ref in grp.owners}
    assert "head.classification_head.cls_logits" not in prunable
    assert "head.regression_head.bbox_reg" not in prunable
    assert "head.classification_head.conv.0.0" in prunable  # the shared tower of the head
    with torch.no_grad():
        cls_logits = part.module(images(1))[sorted(["cls_logits", "bbox_regression"]).index("cls_logits")]
    assert cls_logits.shape[-1] == 7  # anchors x classes, reshaped by the head: whole


def test_the_network_parts_graph_prunes_the_detector_itself_and_it_still_detects():
    """Layers keep their detector names in the network part: its graph prunes the whole detector by name."""
    detector = detectors.fasterrcnn_tiny().eval()
    part = network_part(detector)
    assert part is not None and isinstance(part.module, ProposalNetwork) and "RoI heads" in part.left_out
    g = build_dependency_graph(part.module, images(1))
    assert {name for name, _ in part.module.named_parameters()} <= {name for name, _ in detector.named_parameters()}
    pruned = prune_model(detector, g, random_keep(g))
    assert type(pruned) is type(detector)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in detector.parameters())
    with torch.no_grad():
        detections = pruned(list(images()))
    assert len(detections) == 2 and {"boxes", "labels", "scores"} <= set(detections[0])


@pytest.mark.parametrize("factory", ["ssdlite", "fasterrcnn_tiny"])
def test_a_whole_detector_is_pointed_at_its_network_part(factory):
    """Its transform works on image lists, not channels: the advice is network_of, never register_op."""
    with pytest.raises(UserError, match="is a whole detector") as caught:
        build_dependency_graph(getattr(detectors, factory)().eval(), images(1))
    assert "network_of(model)" in caught.value.fix and "register_op" not in str(caught.value)


def test_a_classifier_is_its_own_network():
    from iee_deploy.models import build_model

    assert network_part(build_model("resnet20", 10, 8)) is None


def test_a_model_that_cannot_run_on_the_input_is_told_so_not_blamed_on_the_graph():
    with pytest.raises(UserError, match=r"fails on the example input \(1, 3, 4, 4\) itself") as err:
        build_dependency_graph(detectors.unpadded(), torch.zeros(1, 3, 4, 4))
    assert "limitation of the graph" not in str(err.value) and "larger `resolution`" in str(err.value)


@pytest.mark.parametrize(("model", "example", "fragment"), [
    ("resnet20", torch.zeros(1, 3, 8, 8), "`model` must be a torch.nn.Module, got str"),
    (None, [torch.zeros(1, 3, 8, 8)], "`example_input` must be a tensor or a tuple of tensors"),
    (None, torch.zeros(1, 1, 8, 8), "fails on the example input (1, 1, 8, 8) itself"),  # a 3-channel model, 1 channel
])
def test_a_users_mistake_is_named_not_blamed_on_the_graph(model, example, fragment):
    from iee_deploy.models import build_model

    with pytest.raises(UserError) as err:
        build_dependency_graph(model if model is not None else build_model("resnet20", 10, 8), example)
    assert fragment in str(err.value) and "limitation of the graph" not in str(err.value)


def test_graph_command_on_a_detector(tmp_path):
    result = CliRunner().invoke(main, ["graph", "--model", "detectors:retinanet_tiny", "--num-classes", "5",
                                       "--resolution", "64", "--json", str(tmp_path / "g.json")], prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    assert "is a detector: the graph covers its network part" in result.output and "NMS" in result.output
    groups = json.loads((tmp_path / "g.json").read_text())["groups"]
    assert any(grp["prunable"] for grp in groups)


def test_profile_refuses_a_model_it_cannot_graph_before_measuring(tmp_path):
    """A model at a size too small for it: one line at once, and no table is started."""
    lut = tmp_path / "lut.csv"
    result = CliRunner().invoke(main, ["profile", "--target", "cpu", "--model", "detectors:unpadded", "--num-classes",
                                       "5", "--resolution", "4", "--out", str(lut)], prog_name="iee-deploy")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert len(lines) == 1 and "fails on the example input" in lines[0], result.stderr
    assert not lut.exists()


def test_built_in_detectors_go_by_their_bare_names_in_every_command_outside_the_classifier_listing(tmp_path):
    """`profile --model ssdlite` as `train --task detection --model ssdlite`: the table and the run name one model."""
    from iee_deploy.data.detection import DEFAULT_RESOLUTION
    from iee_deploy.data.scenes import NUM_CLASSES
    from iee_deploy.models import list_models, model_spec
    from iee_deploy.models.detectors import DETECTORS

    spec = model_spec("ssdlite")
    assert (spec.name, spec.family, spec.native_resolution, spec.builder, spec.default_classes) == (
        "ssdlite", "detector", DEFAULT_RESOLUTION, DETECTORS["ssdlite"], NUM_CLASSES)
    assert not set(DETECTORS) & set(list_models()) and model_spec("resnet18").default_classes == 1000
    assert model_spec("resnet20").default_classes == 10  # a CIFAR model: CIFAR-10's classes
    result = CliRunner().invoke(main, ["graph", "--model", "ssdlite", "--num-classes", "3", "--resolution", "32"],
                                prog_name="iee-deploy")
    assert result.exit_code == 0, result.output
    # without --num-classes, the digit scenes' classes: a table profiled by default fits a run trained by default
    result = CliRunner().invoke(main, ["graph", "--model", "ssdlite", "--resolution", "32", "--json", str(tmp_path / "g.json")],
                                prog_name="iee-deploy")
    assert result.exit_code == 0 and json.loads((tmp_path / "g.json").read_text())["num_classes"] == NUM_CLASSES
    assert "ssdlite is a detector: the graph covers its network part" in result.output
    with pytest.raises(UserError, match="unknown model 'ssdlit'; did you mean ssdlite"):
        model_spec("ssdlit")
