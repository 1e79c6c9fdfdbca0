"""ONNX export falls back to the torch.export-based exporter where the TorchScript one cannot export a model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from runtime.export import DYNAMO_OPSET, INPUT_NAME, export_onnx


class RMSNormNet(nn.Module):
    """A conv and an RMSNorm over channels (aten::rms_norm: no TorchScript export at opset 17)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.rand(8) + 0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(self.conv(x).permute(0, 2, 3, 1), (8,), self.weight)
        return self.fc(x.mean((1, 2)))


def test_a_model_the_torchscript_exporter_cannot_export_still_exports_with_a_dynamic_batch(tmp_path, cpu_host):
    """On the CPU host: torch.export's decompositions query CUDA, which the forced-GPU test host only fakes."""
    torch.manual_seed(0)
    model = RMSNormNet().eval()
    path = export_onnx(model, tmp_path / "m.onnx", resolution=8)
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opsets[""] == DYNAMO_OPSET  # the fallback exporter wrote it (the TorchScript one fails on rms_norm)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch axis stays dynamic
        x = torch.randn(batch, 3, 8, 8)
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
