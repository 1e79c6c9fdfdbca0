"""The toolkit's GPU paths on a real CUDA device; every test here skips on a machine without one.

`pytest -m gpu tests/test_gpu.py` selects them; `benchmarks/gpu_check.py` runs them first on an
H100/H200. Elsewhere these paths are tested only against stand-ins for `torch.cuda` (see
test_profiler_backends.py and test_deploy_engines.py), so this file is where the real thing is
checked: CUDA profiling (cuDNN autotuning, CUDA graphs, CUDA events), the torch-cuda engine, the
trainer on the GPU, NCCL, and the GPU data path giving the same batches as on the CPU.
"""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_cli
from deploy_runs import make_structured_run

FORCED_HOST = os.environ.get("IEE_TEST_HOST", "")
"""Set when the suite fakes its host (`make test-gpu-host`): a forced `cuda.is_available` has no device behind it."""

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(bool(FORCED_HOST), reason=f"IEE_TEST_HOST={FORCED_HOST} fakes the host; these "
                                 "tests need a real CUDA GPU"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/gpu_check.py)")]

FAST = ("--warmup-s", "0.05", "--min-iters", "20", "--min-seconds", "0.3")


@pytest.fixture(scope="module")
def any_gpu_target(tmp_path_factory) -> Path:
    """The h100 target with a device pattern that matches this machine's GPU, whatever it is."""
    data = yaml.safe_load((ROOT / "targets" / "h100.yaml").read_text())
    data.update(name="this-gpu", description="this machine's GPU (tests)", batch=32)
    data["device"]["name"] = "."
    data["timing"].update(warmup=3, repeats=10, network_repeats=10)
    path = tmp_path_factory.mktemp("target") / "this-gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cuda_profile_and_validate_lut(any_gpu_target, tmp_path):
    lut = tmp_path / "lut.csv"
    args = ("--model", "resnet20", "--num-classes", "10", "--resolution", "32")
    result = run_cli("profile", "--target", str(any_gpu_target), *args, "--backend", "torch", "--step", "32",
                     "--out", str(lut))
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads(lut.with_suffix(".json").read_text())
    assert meta["backend"] == "torch" and meta["precision"] == "fp16" and meta["complete"]
    assert meta["device"] == torch.cuda.get_device_name(0) and meta["rows_done"] == meta["rows_planned"]
    assert meta["calibration"]["a"] > 0
    report = tmp_path / "validate.json"
    result = run_cli("validate-lut", "--lut", str(lut), *args, "--samples", "4", "--json", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert all(s["measured_ms"] > 0 and s["predicted_ms"] > 0 for s in data["samples"])
    assert 0 <= data["mape_pct"] < 100  # a tiny model at batch 32 is launch-bound: the accuracy figure is gpu_check's


def test_torch_cuda_engine_builds_times_and_validates(tmp_path):
    run = make_structured_run(tmp_path / "run", keep=0.5, budget_ms=1000.0, predicted_latency_ms=1.0)
    engine = tmp_path / "engine"
    result = run_cli("build-engine", "--run", str(run), "--backend", "torch-cuda", "--batch", "16", *FAST,
                     "--out", str(engine))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((engine / "engine.json").read_text())
    assert report["spec"]["precision"] == "fp16" and report["backend"] == "torch-cuda"
    assert report["pruned"]["params"] < report["dense"]["params"]
    assert report["pruned"]["timing"]["median_ms"] > 0 and report["speedup"] > 0
    result = run_cli("validate", "--engine", str(engine), "--subset", "250", *FAST)
    checks = {c["name"]: c for c in json.loads((engine / "validation.json").read_text())["checks"]}
    assert checks["engine-vs-pytorch"]["status"] == "pass", checks  # fp16 logits within 1% of the largest
    assert checks["latency-budget"]["status"] == "pass", checks
    assert result.returncode == 0, result.stderr[-3000:]


def test_training_on_cuda_writes_a_finished_run(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--model", "resnet20", "--subset", "128", "--batch-size", "32", "--epochs", "2",
                     "--method", "iee", "--hjq", "1,1,1", "--device", "cuda", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["sparsity"]["achieved"] == pytest.approx(0.9, abs=0.01)
    assert torch.load(out / "final_model.pt")["conv1.weight"].device.type == "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nccl_process_group_and_ddp_step():
    """One rank over NCCL (two ranks need two GPUs): collectives and a DistributedDataParallel step on the GPU."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from iee_deploy.models import build_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        x = torch.arange(4.0, device="cuda")
        dist.all_reduce(x)
        dist.broadcast(x, 0)
        assert torch.equal(x.cpu(), torch.arange(4.0))
        model = DistributedDataParallel(build_model("resnet20", 10, 32).cuda(), device_ids=[0])
        loss = model(torch.randn(8, 3, 32, 32, device="cuda")).square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        dist.destroy_process_group()


def test_device_loader_on_cuda_gives_the_cpu_batches():
    """Crop/flip parameters come from a CPU generator: the GPU crops and flips equal the CPU ones exactly.

    The normalised floats agree to float32 rounding, not bit for bit: on the H100 (2026-11-26) an exact
    comparison failed while the printed values agreed. CUDA divides by the scalar 255 as a multiply by
    its reciprocal, the CPU truly divides, and the two can differ in the last bit.
    """
    from iee_deploy.data.sources import TensorImageDataset
    from iee_deploy.train.data import ResumableBatchSampler
    from iee_deploy.train.device_data import DeviceImages, DeviceTrainLoader, crop_flip, device_train_loader

    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    data = TensorImageDataset(images, torch.arange(64) % 10, (0.5,) * 3, (0.25,) * 3, train=True, pad=4)
    sampler = ResumableBatchSampler(64, 16, seed=2)
    gpu = device_train_loader(data, sampler, torch.device("cuda"), seed=2)
    cpu = DeviceTrainLoader(DeviceImages.from_dataset(data, torch.device("cpu")), sampler, seed=2)
    assert gpu is not None
    sampler.set_position(1, 0)
    (order_g, offsets_g, flips_g), (order_c, offsets_c, flips_c) = gpu.epoch_plan(), cpu.epoch_plan()
    assert torch.equal(order_g.cpu(), order_c) and torch.equal(offsets_g.cpu(), offsets_c)
    assert torch.equal(flips_g.cpu(), flips_c)
    for index in order_c:  # the uint8 crops and flips: integer gathers, exact on any device
        cropped = crop_flip(gpu.data.images[index.cuda()], offsets_g[index.cuda()], flips_g[index.cuda()], 4)
        assert torch.equal(cropped.cpu(), crop_flip(images[index], offsets_c[index], flips_c[index], 4))
    batches = 0
    for (xg, yg), (xc, yc) in zip(list(gpu), list(cpu)):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc, rtol=1e-6, atol=1e-6)
        assert torch.equal(yg.cpu(), yc)
        batches += 1
    assert batches == len(cpu) == 4
