"""A Sparsifier in a plain torchvision detection loop (the model's own loss dict): structured HALP and IEE under a
latency budget over the network part's table, and unstructured RigL, on the digit scenes."""

from __future__ import annotations

import detectors
import pytest
import torch
from synthetic_lut import write_synthetic_lut
from test_graph import check_layer_shapes

from iee_deploy.data.scenes import NUM_CLASSES, SceneLayout, digit_scenes
from iee_deploy.models.detection import network_of
from iee_deploy.sparsifier import Sparsifier

SIZE = 64


def detection_loop(detector: torch.nn.Module, steps: int, **fields) -> tuple[Sparsifier, list[float]]:
    """What a user writes: their detector, data, optimizer and loop (the loss is the model's own loss dict)."""
    scenes = digit_scenes("train", 8, SceneLayout(canvas=SIZE), seed=0)
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    sparsifier = Sparsifier(detector, optimizer, steps, seed=0, **fields)
    detector.train()
    losses = []
    for step in range(steps):
        images, targets = zip(*(scenes[(2 * step + i) % len(scenes)] for i in range(2)))
        with sparsifier.step(len(images)):
            optimizer.zero_grad()
            loss = sum(detector(list(images), list(targets)).values())
            loss.backward()
            optimizer.step()
        losses.append(float(loss))
    return sparsifier, losses


@pytest.mark.parametrize("method", ["halp", "iee"])
def test_structured_methods_prune_a_detector_under_a_latency_budget(method, tmp_path):
    torch.manual_seed(0)
    detector = detectors.retinanet_tiny(NUM_CLASSES)
    lut = write_synthetic_lut(tmp_path / "lut.csv", "detectors:retinanet_tiny", network_of(detector), NUM_CLASSES, SIZE)
    fields = {"delta_t": 1, "update_end": 0.8} if method == "halp" else {"hjq": (1, 1, 1), "update_end": 0.8}
    sparsifier, losses = detection_loop(detector, 6, method=method, latency_ratio=0.6, lut=str(lut), **fields)
    assert all(torch.isfinite(torch.tensor(losses)))
    space = sparsifier.method.space  # type: ignore[attr-defined]
    assert space.predicted_ms() <= space.psi + 1e-9  # the budget, on the network part's table
    deployable = sparsifier.deployable()  # the whole detector, physically smaller
    assert type(deployable) is type(detector)
    assert sum(p.numel() for p in deployable.parameters()) < sum(p.numel() for p in detector.parameters())
    deployable.eval()
    with torch.no_grad():
        found = deployable([torch.rand(3, SIZE, SIZE)])
    assert {"boxes", "labels", "scores"} <= set(found[0])
    # the detector's layers have the widths the table was asked about: Theta_K's, layer by layer
    counts = {gid: len(idx) for gid, idx in space.masks.keep().items()}
    check_layer_shapes(deployable, space.graph, counts)
    assert space.latency.predict(space.graph.layer_channels(counts)) == pytest.approx(space.predicted_ms())


def test_unstructured_rigl_in_a_two_stage_detection_loop():
    torch.manual_seed(0)
    detector = detectors.fasterrcnn_tiny(NUM_CLASSES)
    sparsifier, losses = detection_loop(detector, 4, method="rigl", sparsity=0.8, delta_t=1, update_end=0.8)
    assert all(torch.isfinite(torch.tensor(losses)))
    with sparsifier.evaluation():
        weights = [m.weight for m in detector.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.02)
