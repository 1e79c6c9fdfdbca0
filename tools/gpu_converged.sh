#!/usr/bin/env bash
# The converged unstructured benchmark with every arm on an H100 or H200, in one run of at most 10 minutes.
#
# Copied along (git-ignored, see `make gpu-carry`): .whl/ (the wheels the image lacks) and .gpu-data/data/
# (Fashion-MNIST's raw files, read through IEE_SHARED exactly as ../shared/data is here).
#
# Stages, within SECONDS seconds in all (a finished stage's runs are never redone; a run stopped by the
# deadline checkpoints on SIGTERM and resumes when the script is called again on the same warm machine):
#   1. the wheels and MPS (tools/gpu_setup.sh);
#   2. the quick mode on cuda: every arm's pipeline on the GPU in a minute (runs/bench_converged/quick-cuda),
#      beside tests/test_gpu.py's two tests of the cuda training path (pytest_gpu.log);
#   3. the full mode at EPOCHS epochs: the plateau check's 10 runs first; if static has plateaued, the
#      other 75 runs. If it has not, the same at FALLBACK epochs (every arm gets it) with the time left.
#      The full mode's default, 96 epochs on 2,000 images, passed the check on the CPU
#      (benchmarks/results/converged-plateau.md); on CUDA (bf16 autocast) the script checks its own plateau.
#      Not timed on a GPU yet: ten 48-epoch runs of the earlier setting (7,488 steps each) took 126 s
#      each on an H100; a run here has 2,976 steps, so all 85 may fit one 10-minute run (an estimate).
# Everything useful comes back under $OUT: the results files, the log, and the run folders' small files.
#
# Usage: tools/gpu_converged.sh [EPOCHS [FALLBACK [SECONDS [JOBS]]]]   (defaults 96 128 540 14)
# DEVICE=cpu PY=.venv/bin/python runs the same stages here on the CPU (a dry run of the script; `make gpu-dry-run`).
set -uo pipefail
EPOCHS=${1:-96}
FALLBACK=${2:-128}
BUDGET=${3:-540}
JOBS=${4:-14}
OUT=${OUT:-runs/gpu-converged-out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
LOG=gpu_converged.log
# shellcheck source=tools/gpu_setup.sh
source tools/gpu_setup.sh

bench() {  # bench ARGS...: the benchmark with the time left; its exit status
    local t
    t=$(left)
    [ "$t" -gt 20 ] || { echo "deadline: no time left for: $*"; return 124; }
    echo "== $(date -u +%FT%TZ) converged $* (${t} s left)"
    timeout -s TERM "$t" "$PY" -m benchmarks.converged --device "$DEVICE" --jobs "$JOBS" "$@"
}

# the GPU tests of the training path used here (device loader = the CPU's batches; a finished cuda run), beside stage 2
tests=""
if [ "$DEVICE" != cpu ]; then
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "device_loader or training_on_cuda" \
        > "$OUT/pytest_gpu.log" 2>&1 &
    tests=$!
fi
bench --quick || { echo "the quick mode failed on $DEVICE: see above"; rc=1; }
if [ -z "${rc:-}" ]; then
    bench --epochs "$EPOCHS"
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q "static has not plateaued at E = $EPOCHS" "$OUT/gpu_converged.log"; then
        bench --epochs "$FALLBACK"
        rc=$?
    fi
fi
[ -z "$tests" ] || wait "$tests"  # that pid only: a bare `wait` also waits for the log's tee, which never ends
echo "== $(date -u +%FT%TZ) done, exit $rc"
tar czf "$OUT/runs.tgz" --exclude='*.pt' runs/bench_converged 2>/dev/null
tar czf "$OUT/results.tgz" benchmarks/results/converged*-cuda.* 2>/dev/null
ls -la "$OUT"
exit "$rc"
