#!/usr/bin/env bash
# Set up (idempotent) and run the test suite, then the smoke workflow through Snakemake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
