#!/usr/bin/env bash
# Create .venv and install the project with its dev extras. torch is installed first, pinned:
# a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev]"
python -c "import torch, transformers, snakemake, reasoning_gym; print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__)"
