"""PyTorch eager backend: CPU, and CUDA the way cuDNN latency tables are measured.

On CUDA (HALP's Titan V table was measured with cuDNN at batch 256) every configuration runs with
`cudnn.benchmark` (cuDNN times its algorithms during warm-up and keeps the fastest), in
channels-last memory format, captured once in a CUDA graph and timed with CUDA events per replay
(see `profiler.timing.time_cuda`). On the CPU it is timed with the host clock.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from iee_deploy.errors import NotAvailableError, UserError
from profiler.backends import Backend, BackendSettings
from profiler.layers import LayerSignature
from profiler.onnx_graphs import conv_groups, layer_input_shape
from profiler.timing import Runner, cuda_runner, host_runner

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def layer_module(sig: LayerSignature, cin: int, cout: int) -> nn.Module:
    """The one-layer network as eager PyTorch runs it in a CNN: conv, BatchNorm, ReLU (no fusion); or a Linear."""
    if sig.kind == "linear":
        return nn.Linear(cin, cout)
    conv = nn.Conv2d(cin, cout, sig.kernel, sig.stride, sig.padding, sig.dilation, groups=conv_groups(sig, cin, cout),
                     bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TorchBackend(Backend):
    """Times eager PyTorch modules on the CPU or on a CUDA GPU."""

    name = "torch"

    def __init__(self, settings: BackendSettings) -> None:
        if settings.device == "cuda":
            if not torch.cuda.is_available():
                raise NotAvailableError("the torch backend on a GPU target needs CUDA, which torch cannot use here",
                                        "run on the target GPU with a CUDA build of torch")
            torch.backends.cudnn.benchmark = True
        elif settings.precision != "fp32":
            raise UserError(f"the torch CPU backend measures fp32, not {settings.precision}", "pass --precision fp32")
        super().__init__(settings)
        self._device = torch.device(settings.device)
        self._dtype = _DTYPES[settings.precision]
        if settings.device == "cpu":
            torch.set_num_threads(settings.threads)

    def versions(self) -> dict[str, str]:
        found = {"torch": torch.__version__, "device": self.settings.device}
        if self.settings.device == "cuda":
            found.update(cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()),
                         gpu=torch.cuda.get_device_name(self._device))
        else:
            found["threads"] = str(self.settings.threads)
        return found

    def _runner(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        cuda = self._device.type == "cuda"
        layout = torch.channels_last if cuda and len(input_shape) == 4 else torch.contiguous_format
        module = module.eval().to(self._device, self._dtype).to(memory_format=layout)
        x = torch.randn(input_shape, device=self._device, dtype=self._dtype).contiguous(memory_format=layout)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return module(x)

        if cuda:
            return cuda_runner(run, torch.cuda.Stream(self._device), self.settings.warmup)
        return host_runner(run, self.settings.warmup)

    def layer_runner(self, sig: LayerSignature, cin: int, cout: int, batch: int) -> Runner:
        return self._runner(layer_module(sig, cin, cout), layer_input_shape(sig, cin, batch))

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        return self._runner(copy.deepcopy(model), input_shape)
