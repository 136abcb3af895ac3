#!/usr/bin/env bash
# Install prefix-rft into the active Python environment (or ./.venv, created if no venv is active).
#   bash scripts/install.sh            # core
#   bash scripts/install.sh dev        # core + test tools
# torch: an existing install is kept; otherwise a CPU-only build on machines without an NVIDIA GPU
# (PyPI's default Linux wheel pulls GBs of CUDA libraries), the default build where `nvidia-smi` works.
# The CPU wheel comes from the configured indexes / find-links when they have it (a local mirror, CI), else
# from PyTorch's index, and alone (--no-deps): its dependencies and the rest come from the ordinary index in
# the next call, so pip never asks PyTorch's index (unreachable on some machines) for anything but torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
PY=python
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
if $PY -c "import torch" 2>/dev/null; then
  echo "install: keeping torch $($PY -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  $PY -m pip install "torch==${TORCH_VERSION}"
elif $PY -m pip install --no-deps "torch==${TORCH_VERSION}+cpu" 2>/dev/null; then
  echo "install: torch ${TORCH_VERSION}+cpu from the configured package sources"
else
  echo "install: torch ${TORCH_VERSION}+cpu from https://download.pytorch.org/whl/cpu"
  $PY -m pip install --no-deps "torch==${TORCH_VERSION}+cpu" --index-url https://download.pytorch.org/whl/cpu
fi
if [ -n "$extras" ]; then
  $PY -m pip install -e ".[${extras}]"
else
  $PY -m pip install -e .
fi
