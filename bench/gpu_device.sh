#!/usr/bin/env bash
# On the GPU machine: put what its image lacks on the path from carried wheels (made here by
# `python bench/gpu_wheels.py`, for its Python 3.12), check every requirement, then run the benchmark.
#   bash bench/gpu_device.sh [wheels-folder (default .whl)] [bench/gpu.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-.whl}"; shift || true
SITE="${GPU_SITE:-/tmp/site}"
# --no-index: the device machine reaches no registry; --target: the image's own environment is left as it is.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$PWD"   # actsweep from this checkout, no install
python3 bench/gpu_wheels.py --check   # fails in seconds, naming what is missing, before any GPU time is spent
# On the device tool's machine only what is under $OUT comes back: the log and RESULTS.md, even on a failure.
if [ -n "${OUT:-}" ]; then
  trap 'cp bench/RESULTS.md "$OUT/" 2>/dev/null || true' EXIT
  timeout 560 python3 -u bench/gpu.py "$@" 2>&1 | tee "$OUT/gpu.log"
else
  timeout 560 python3 bench/gpu.py "$@"
fi
