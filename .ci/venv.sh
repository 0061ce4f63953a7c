# Sourced by .ci/run and .ci/gpu_rehearsal.sh: one way to make a new virtual environment from nothing
# (no system site packages) with PyTorch's CPU build from this machine's disk; an unpinned torch
# would pull a CUDA build.
cpu_venv() {
  python3 -m venv "$1"
  "$1/bin/python" -m pip install -q torch==2.13.0
  cpu_torch_only "$1/bin/python"
}

# Fails when what was installed since replaced the CPU build with a CUDA one.
cpu_torch_only() {
  "$1" -c "import sys, torch; sys.exit(f'a CUDA torch {torch.__version__} was installed' if torch.version.cuda else 0)"
}
