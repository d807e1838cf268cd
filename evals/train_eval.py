"""The task evaluation of a finished run, made inside its train job (``grpo train --eval``).

An evaluation job is mostly process start-up: on the tiny profile `grpo eval` takes ~7 s, of
which the evaluation itself (200 problems x 4 samples) is ~0.4 s; the rest is importing torch,
transformers and the task's generator, which the train job has already paid. With ``--eval``
the train job evaluates its final checkpoint with :func:`evals.evaluate.evaluate` (the same
function, the checkpoint loaded from disk as `grpo eval` loads it) into ``<run>/.train_eval/``
and stamps it with :func:`eval_key`; `grpo eval` (the workflow's evaluate rule) then finds the
stamp, checks the key and copies the files into ``<run>/eval/`` without importing torch.

The key covers everything the evaluation reads: the resolved config (eval settings, task,
model, threads, seed, ...), the checkpoint's files (name, size, modification time) and the
source of ``grpo_core`` and ``evals``. Anything else (another eval setting, a retrained or
edited checkpoint, changed code) misses the stash and `grpo eval` evaluates as before.

This module imports no torch: the copy is the whole of an evaluate job that finds its stash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

STASH = ".train_eval"
STAMP = "stamp.json"
_CODE = [Path(__file__).resolve().parents[1] / d for d in ("grpo_core", "evals")]


def _code_digest() -> str:
    h = hashlib.sha256()
    for root in _CODE:
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def eval_key(cfg, checkpoint: str | Path) -> str:
    """What an evaluation of ``checkpoint`` under ``cfg`` depends on, as one hex digest."""
    ck = Path(checkpoint)
    files = sorted(p for p in ck.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no checkpoint files under {ck}")
    state = [(str(p.relative_to(ck)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps(
        {
            "config": cfg.model_dump(mode="json"),
            "checkpoint": [str(ck.resolve()), state],
            "code": _code_digest(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def applies(cfg) -> str | None:
    """None when the train job can evaluate its run in process, else why not."""
    if cfg.eval.vm_mcts is not None:
        return "eval.vm_mcts: the value model is trained after the run (rule value_model)"
    return None


def evaluate_in_train(cfg, run_dir: Path, threads: int | None, log=print) -> bool:
    """After training: evaluate ``run_dir/checkpoint`` into the stash and stamp it. An error
    is logged, not raised: the run is finished and `grpo eval` then evaluates it itself (and
    shows the error where it belongs). Returns whether the stash was written."""
    why = applies(cfg)
    if why is not None:
        log(f"no in-process evaluation ({why}); `grpo eval` evaluates the run")
        return False
    stash = Path(run_dir) / STASH
    ckpt = Path(run_dir) / "checkpoint"
    try:
        key = eval_key(cfg, ckpt)
        if stashed_key(stash) == key:
            return True
        from evals.evaluate import evaluate

        shutil.rmtree(stash, ignore_errors=True)
        res = evaluate(
            cfg, ckpt, stash, reproduction=cfg.reproduction, seed=cfg.run.seed, threads=threads
        )
        (stash / STAMP).write_text(json.dumps({"key": key, "benchmark": res["benchmark"]}))
    except Exception as e:  # noqa: BLE001 - the run is done; the eval job reports it
        log(f"in-process evaluation failed ({type(e).__name__}: {e}); `grpo eval` will run it")
        shutil.rmtree(stash, ignore_errors=True)
        return False
    m = res["metrics"]
    log(
        f"evaluated in process: {res['benchmark']}: "
        + ", ".join(f"{k}={v:.3f}" for k, v in m.items())
    )
    return True


def _stamp(stash: Path) -> dict | None:
    try:
        meta = json.loads((Path(stash) / STAMP).read_text())
        return meta if isinstance(meta, dict) and "key" in meta else None
    except (OSError, ValueError):
        return None


def stashed_key(stash: Path) -> str | None:
    meta = _stamp(stash)
    return None if meta is None else meta["key"]


def take_stashed(cfg, run_dir: Path, out_dir: Path) -> dict | None:
    """The stashed evaluation of ``run_dir`` copied into ``out_dir`` when its key is this
    config's, checkpoint's and code's; its result dict. None (nothing copied) otherwise."""
    stash = Path(run_dir) / STASH
    meta = _stamp(stash)
    ckpt = Path(run_dir) / "checkpoint"
    # (no stash is written where the in-process evaluation does not apply: see applies)
    if meta is None or not ckpt.is_dir() or meta["key"] != eval_key(cfg, ckpt):
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result_file = None
    for f in sorted(stash.iterdir()):
        if f.name == STAMP or not f.is_file() or f.name.endswith(".tmp"):
            continue
        tmp = out / (f.name + ".tmp")
        shutil.copyfile(f, tmp)
        tmp.replace(out / f.name)
        if f.name == f"{meta['benchmark']}.json":
            result_file = out / f.name
    if result_file is None:
        return None
    return json.loads(result_file.read_text())
