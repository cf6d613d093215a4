#!/usr/bin/env bash
# The PyTorch reference (tests and benchmarks only): a venv under ~/.cache/collapse-lab with
# torch, torchvision, safetensors and numpy from PyPI (~5 GB, ~3 min once; cached). Prints its
# python.
set -euo pipefail
venv="${COLLAPSE_LAB_TORCH_VENV:-$HOME/.cache/collapse-lab/torch-venv}"
if ! "$venv/bin/python" -c "import torch, torchvision, safetensors, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch torchvision safetensors numpy
fi
echo "$venv/bin/python"
