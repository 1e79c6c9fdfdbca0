# Two commands on a fresh clone: `make demo` (the main job, offline) and `make test` (the suite).
# Both create .venv and install what they need from the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-gpu-host lint typecheck clean bench-quick

install: $(STAMP)

$(STAMP): pyproject.toml tools/fix_trt_stubs.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 are the pair that imports and runs on CPU here (see README).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	# TensorRT itself cannot be installed here; its stubs let mypy check the TensorRT backend.
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	$(PY) tools/fix_trt_stubs.py
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/iee-deploy demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# The suite as if on a GPU machine with TensorRT (forced CUDA, fake tensorrt; tests/hosts/sitecustomize.py).
test-gpu-host: $(STAMP)
	IEE_TEST_HOST=gpu $(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
