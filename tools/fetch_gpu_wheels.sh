#!/usr/bin/env bash
# Download into .whl/ (git-ignored) exactly the wheels the GPU machine's image lacks, for
# Python 3.12 on manylinux x86_64, and check that they stay well under 64 MiB, so that the whole
# tree copied to that machine stays small. The image already holds torch 2.11
# (CUDA 13), torchvision, numpy, onnx, onnxruntime (CPU), onnxscript, networkx, scipy, pandas,
# scikit-learn, matplotlib, click, tqdm, pyyaml, absl-py, pytest, pytest-timeout and hypothesis; it
# lacks OR-Tools (the knapsack solver) and OR-Tools' own needs:
#   ortools        solvers/ (CP-SAT knapsack)            immutabledict  ortools' dependency
#   protobuf       ortools needs a newer one than many images carry (one version only: it shadows the image's)
# Usage: tools/fetch_gpu_wheels.sh [DEST]   (DEST defaults to .whl; it is emptied first)
set -euo pipefail
DEST=${1:-.whl}
PY=${PYTHON:-python3}
LIMIT_MIB=40   # "well under" the 64 MiB the whole copied tree may take
WHEELS=(ortools==9.15.6755 immutabledict==4.3.1 protobuf==6.33.6)

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$DEST" "${WHEELS[@]}"
count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
    echo "error: expected ${#WHEELS[@]} wheels in $DEST, found $count" >&2
    exit 1
fi
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
ls -l "$DEST"
echo "$count wheels, $mib MiB in $DEST (limit $LIMIT_MIB MiB of the 64 MiB copied tree)"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
    echo "error: $DEST holds $mib MiB, over $LIMIT_MIB MiB" >&2
    exit 1
fi
