#!/usr/bin/env bash
# The structured benchmark (benchmarks/structured.py) trained on an H100 or H200, in one run of at most
# 10 minutes; its engines are timed back here, on the CPU whose LUT set the budgets.
#
# Copied along (git-ignored, see `make gpu-carry-structured`): .whl/ (the wheels the image lacks) and
# .gpu-data/structured/ (the CIFAR-10 subset's JPEG tree and this machine's `cpu` LUT of resnet20, laid
# out as benchmarks/.cache holds them; copied there first).
#
# Stages, within SECONDS seconds in all (finished runs are never redone; a run stopped by the deadline
# checkpoints on SIGTERM and resumes when the script is called again on the same warm machine):
#   1. the wheels and MPS (tools/gpu_setup.sh);
#   2. `benchmarks.structured --device cuda --train-only` with DENSE_EPOCHS and EPOCHS: the dense model,
#      then the pretrained, scratch, and plateau + equal-FLOPs phases, JOBS runs at a time;
#   3. the run folders' small files and final models (no checkpoints) into $OUT/runs-*.tgz (at most
#      15 MiB each, so that each file copies back whole), the log beside them.
# Here, afterwards: `make gpu-structured-back FROM=<the folder OUT was copied back to>` unpacks them into runs/, and the
# same benchmark command without --train-only times the engines and writes the results.
#
# Usage: tools/gpu_structured.sh [DENSE_EPOCHS [EPOCHS [SECONDS [JOBS]]]]   (defaults 60 30 540 13)
# DEVICE=cpu PY=.venv/bin/python runs the same stages here on the CPU (a dry run: add QUICK=1 for minutes,
# and RUNS=runs/<a new folder>, since every run folder under RUNS is packed).
set -uo pipefail
DENSE_EPOCHS=${1:-60}
EPOCHS=${2:-30}
BUDGET=${3:-540}
JOBS=${4:-13}
OUT=${OUT:-runs/gpu-structured-out}
RUNS=${RUNS:-runs/bench_structured}  # relative: the tarballs unpack into the same place here
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
LOG=gpu_structured.log
# shellcheck source=tools/gpu_setup.sh
source tools/gpu_setup.sh

mkdir -p benchmarks/.cache
[ ! -d .gpu-data/structured ] || cp -r .gpu-data/structured/. benchmarks/.cache/
args=(--device "$DEVICE" --runs "$RUNS" --train-only --jobs "$JOBS" --dense-epochs "$DENSE_EPOCHS" --epochs "$EPOCHS")
[ -z "${QUICK:-}" ] || args+=(--quick)
echo "== $(date -u +%FT%TZ) structured ${args[*]} ($(left) s left)"
timeout -s TERM "$(left)" "$PY" -m benchmarks.structured "${args[@]}"
rc=$?
echo "== $(date -u +%FT%TZ) done, exit $rc"
tar czf - --exclude=checkpoint.pt --exclude="*-engine" "$RUNS" | split -b 15m -d - "$OUT/runs-structured.tgz."
ls -la "$OUT"
exit "$rc"
