#!/usr/bin/env bash
# Set up (idempotent) and run the main job: the Snakemake default target (tiny profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
snakemake --cores "${CORES:-2}" "$@"
