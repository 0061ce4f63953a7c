#!/usr/bin/env bash
# On the GPU machine: put what its image lacks on the path from carried wheels (made here by
# `python bench/gpu_wheels.py`, for its Python 3.12), check every requirement, then run the benchmark.
#   bash bench/gpu_device.sh [wheels-folder (default .whl)] [bench/gpu.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-.whl}"; shift || true
# On the device tool's machine only what is under $OUT comes back: the whole log and RESULTS.md, even
# when the install or the check fails.
if [ -n "${OUT:-}" ]; then
  exec > >(tee "$OUT/gpu.log") 2>&1
  trap 'cp bench/RESULTS.md "$OUT/" 2>/dev/null || true' EXIT
fi
SITE="${GPU_SITE:-/tmp/site}"
# --no-index: the device machine reaches no registry; --target: the image's own environment is left as it is.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$PWD"   # actsweep from this checkout, no install
python3 bench/gpu_wheels.py --check   # fails in seconds, naming what is missing, before any GPU time is spent
PYTHONUNBUFFERED=1 timeout 560 python3 bench/gpu.py "$@"
