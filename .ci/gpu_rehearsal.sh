#!/usr/bin/env bash
# The prepared GPU run rehearsed on CPU, the way the GPU machine will run it, with three differences:
# the wheels bench/gpu_wheels.py makes are for this Python (the image's is 3.12), torch is the CPU
# build (the image's is CUDA 2.11), and the image's packages that actsweep needs (bench/gpu_image.txt)
# come from the registry at its versions, not the image's. Then bench/gpu_device.sh, shrunk.
# A wheel the image lacks and the list leaves out fails here, not in the GPU's few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=$(python -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
python bench/gpu_wheels.py --python "$python" --dest "$work/wheels" >/dev/null
# shellcheck source=.ci/venv.sh
source .ci/venv.sh
cpu_venv "$work/image"
# shellcheck disable=SC2046
"$work/image/bin/python" -m pip install -q $(python bench/gpu_wheels.py --python "$python" --image-packages)
if "$work/image/bin/python" -c "import jsonargparse" 2>/dev/null; then
  echo "the rehearsal's image holds jsonargparse: it would not show a missing wheel" >&2; exit 1
fi
PATH="$work/image/bin:$PATH" GPU_SITE="$work/site" bash bench/gpu_device.sh "$work/wheels" --shrink --out "$work/gpu.md"
grep -q "Entropy probe" "$work/gpu.md"
echo "the GPU run's rehearsal: $(ls "$work/wheels" | wc -l) wheels carried, the shrunk benchmark ran"
