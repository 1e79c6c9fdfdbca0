# Sourced by the tools/gpu_*.sh benchmark scripts at the start of one run on the GPU machine: the log, the
# deadline, the carried wheels and MPS. Expects BUDGET (seconds for the whole run), OUT, DEVICE
# (cuda, or cpu for a dry run here), PY and LOG (the log's name under $OUT).
mkdir -p "$OUT"
exec > >(tee -a "$OUT/$LOG") 2>&1
deadline=$((SECONDS + BUDGET))
left() { echo $((deadline - SECONDS)); }

export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 IEE_SHARED=.gpu-data
if ! "$PY" -c "import ortools" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: the carried wheels in .whl/ did not install (run make gpu-carry here first)"; exit 1; }
fi
"$PY" -c "import torch, ortools; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1

# MPS (several processes share the GPU's multiprocessors) if the image has it and a CUDA context opens
# under it; otherwise plain time-slicing
if [ "$DEVICE" = cpu ]; then
    echo "DEVICE=cpu: a dry run of the stages on this machine's CPU"
elif command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    if timeout 60 "$PY" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        echo "MPS: on"
    else
        echo quit | nvidia-cuda-mps-control
        echo "MPS: a CUDA context did not open under it; off"
    fi
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "MPS: not available; the runs time-slice the GPU"
fi
