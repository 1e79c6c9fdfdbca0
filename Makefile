# Two commands on a fresh clone: `make demo` (the main job, offline) and `make test` (the suite).
# Both create .venv and install what they need from the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-gpu-host lint typecheck clean bench-quick gpu-carry gpu-check gpu-paper gpu-converged gpu-dry-run gpu-carry-structured gpu-structured gpu-structured-back

install: $(STAMP)

$(STAMP): pyproject.toml tools/fix_trt_stubs.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 are the pair that imports and runs on CPU here (see README).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,timm,hf]'
	# TensorRT itself cannot be installed here; its stubs let mypy check the TensorRT backend.
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	$(PY) tools/fix_trt_stubs.py
	touch $(STAMP)

# `make demo PRECISION=int8`: an int8 LUT, budget and ONNX Runtime engine
demo: $(STAMP)
	$(VENV)/bin/iee-deploy demo --out runs/demo $(if $(PRECISION),--precision $(PRECISION))

# Two pytest workers (one per core); a test file stays on one worker, so its fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# The whole suite again, as if on a GPU machine with TensorRT: torch.cuda forced available and a fake
# tensorrt, in pytest and in every CLI subprocess (tests/hosts/sitecustomize.py, tests/test_hosts.py).
test-gpu-host: $(STAMP)
	IEE_TEST_HOST=gpu $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache

# GPU checks (docs/gpu.md): on a machine with an NVIDIA GPU, `make gpu-check OUT=dir`, then copy OUT back.
# That machine may have no package registry: `make gpu-carry` here puts the wheels its image lacks in .whl/,
# the CIFAR-10 copies in .gpu-data/ and Fashion-MNIST's raw files in .gpu-data/data/ (all git-ignored; copy
# them along with the tree). There, `make gpu-check`, `make gpu-paper` and `make gpu-converged` use its own
# python3 (torch 2.11, CUDA 13), not .venv, and write into $(OUT).
GPU_OUT ?= $(if $(OUT),$(OUT),runs/gpu)

gpu-carry:
	tools/fetch_gpu_wheels.sh
	mkdir -p .gpu-data/data/FashionMNIST/raw && cp ../shared/data/cifar10-jpeg.tar.gz .gpu-data/
	cp ../shared/data/FashionMNIST/raw/*.gz .gpu-data/data/FashionMNIST/raw/ && chmod -R u+w .gpu-data

# the converged benchmark, every arm trained on the GPU (copy .whl and .gpu-data/data along: not the CIFAR copy, too big)
gpu-converged:
	OUT=$(GPU_OUT) tools/gpu_converged.sh

# the structured benchmark, trained on the GPU (copy .whl and .gpu-data/structured along: its CIFAR-10
# subset and this machine's cpu LUT); its engines are timed here afterwards, on the LUT's CPU:
# make gpu-structured-back FROM=<the folder OUT was copied back to>, then the benchmark without --train-only
gpu-carry-structured: $(STAMP)
	PYTHONPATH=. $(PY) -m benchmarks.structured --carry .gpu-data/structured

gpu-structured:
	OUT=$(GPU_OUT) tools/gpu_structured.sh

gpu-structured-back:
	@test -n "$(FROM)" || { echo "error: give FROM=<the folder the GPU run's OUT was copied back to>"; exit 1; }
	cat $(FROM)/runs-structured.tgz.* | tar xzf -

gpu-check:
	PYTHONPATH=. PYTHONUNBUFFERED=1 $(PYTHON) -m benchmarks.gpu_check --wheels .whl --out $(GPU_OUT)

gpu-paper:
	PYTHONPATH=. PYTHONUNBUFFERED=1 $(PYTHON) -m benchmarks.gpu_paper --wheels .whl --data .gpu-data/cifar10-jpeg.tar.gz --out $(GPU_OUT)

gpu-dry-run: $(STAMP)
	PYTHONPATH=. $(PY) -m benchmarks.gpu_check --dry-run --out runs/gpu-dry-run/check
