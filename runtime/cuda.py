"""CUDA in one place: the device check, CUDA-graph capture and the CUDA-event runner.

`capture_graph` is the only place a CUDA graph is captured (the torch session's inference and
every GPU runner replay what it returns). `cuda_runner` times replays between CUDA events: the
clock of every GPU latency in the project, layer tables and budget checks alike.
`cuda` parameters are the `torch.cuda` module, a parameter so the orchestration can be tested
without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iee_deploy.errors import NotAvailableError
from runtime.machine import cpu_name, detect_gpus
from runtime.timing import Runner


def _torch_cuda() -> Any:
    import torch

    return torch.cuda


def found_devices() -> str:
    """What this machine offers torch: the GPUs, or why there are none (CPU-only build, no driver)."""
    import torch

    gpus = detect_gpus()
    if gpus:
        return ", ".join(gpus)
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " without CUDA")
    return f"no CUDA device ({build}; CPU: {cpu_name()})"


def require_cuda(backend: str) -> None:
    """Raise a one-line NotAvailableError unless torch sees an NVIDIA GPU."""
    if not _torch_cuda().is_available():
        raise NotAvailableError(f"wrong device: the {backend} backend on a GPU needs an NVIDIA GPU, found {found_devices()}",
                                "use the onnxruntime backend on this machine")


def capture_graph(run: Callable[[], object], stream: Any, warmup: int, cuda: Any = None) -> Callable[[], object]:
    """Run `run` (work enqueued on `stream`) `warmup` times (at least once), capture it, return the replay.

    Warm-up keeps cuDNN autotuning and lazy initialisation out of the graph. If the work cannot be
    captured, `run` itself is returned and plain enqueues are replayed, as trtexec does.
    """
    cuda = cuda or _torch_cuda()
    step: Callable[[], object] = run
    with cuda.stream(stream):
        for _ in range(max(warmup, 1)):
            run()
        stream.synchronize()
        try:
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, stream=stream):
                run()
            graph.replay()
            step = graph.replay
        except RuntimeError:  # capture unsupported for this work
            pass
        stream.synchronize()
    return step


def cuda_runner(step: Callable[[], object], stream: Any, cuda: Any = None) -> Runner:
    """Runner timing each of n calls of `step` (a graph replay) on `stream` between CUDA events."""
    cuda = cuda or _torch_cuda()

    def timed(n: int) -> list[float]:
        with cuda.stream(stream):
            starts = [cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [cuda.Event(enable_timing=True) for _ in range(n)]
            for start, end in zip(starts, ends):
                start.record(stream)
                step()
                end.record(stream)
            ends[-1].synchronize()
            return [float(start.elapsed_time(end)) for start, end in zip(starts, ends)]

    return timed
