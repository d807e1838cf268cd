#!/usr/bin/env bash
# Create .venv and install the pinned environment: torch first (a bare `torch` requirement would
# pull a multi-GB CUDA build), then the exact versions of requirements.lock (scripts/lock.sh
# writes it), then the project itself, editable, with --no-deps. Idempotent and fast when done:
# a stamp in .venv remembers the lock / pyproject / this script / checkout it installed, so a
# second run only checks that the project imports.
#   TORCH_VERSION=2.13.0+cu128 bash scripts/setup.sh   # another torch build (its line of the lock
#                                                     # is then left out)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python3}
LOCK=requirements.lock
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
STAMP=.venv/.grpo-setup-stamp
want=$({ cat "$LOCK" pyproject.toml setup.py scripts/setup.sh; pwd; python -V; echo "${TORCH_VERSION:-}"; } \
  | sha256sum | cut -d' ' -f1)
installed() { [ -x .venv/bin/grpo ] && (cd / && python -c "import grpo_core" 2>/dev/null); }
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || ! installed; then
  rm -f "$STAMP"
  lock_py=$(sed -n 's/.*python \([0-9]*\.[0-9]*\).*/\1/p' "$LOCK" | head -1)
  this_py=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$lock_py" = "$this_py" ] || echo "note: $LOCK was made on python $lock_py, this is $this_py"
  torch_pin=$(grep -E '^torch==' "$LOCK")
  reqs=$LOCK
  if [ -n "${TORCH_VERSION:-}" ]; then
    torch_pin="torch==$TORCH_VERSION"
    reqs=.venv/requirements.notorch.txt
    grep -v -E '^torch==' "$LOCK" > "$reqs"
  fi
  python -m pip install -q "$(grep -E '^pip==' "$LOCK")"
  python -m pip install -q "$torch_pin"
  python -m pip install -q -r "$reqs"
  # the project: editable for the developers, its dependencies are the lock's
  python -m pip install -q --no-deps --no-build-isolation -e .
  # textworld 1.7.0's wheel has a blank line before its Tag field, so `pip check` reports it
  # "not supported on this platform" (it is a manylinux x86_64 wheel and runs); only that line
  # is tolerated
  if ! chk=$(python -m pip check 2>&1); then
    rest=$(printf '%s\n' "$chk" | grep -v -x 'textworld 1.7.0 is not supported on this platform' || true)
    [ -z "$rest" ] || { printf '%s\n' "$chk"; exit 1; }
    echo "pip check: ok (textworld 1.7.0's malformed WHEEL tag line ignored)"
  fi
  python -c "import torch, transformers, snakemake, reasoning_gym; print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "$want" > "$STAMP"
else  # installed and checked before: the versions without importing (a second run is ~1 s)
  python -c "from importlib.metadata import version as v; print('setup ok (up to date): torch', v('torch'), 'transformers', v('transformers'))"
fi
echo "setup.sh: $(( $(date +%s) - start )) s"
