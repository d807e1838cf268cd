"""Asynchronous rollouts (rollout.max_staleness) vs the synchronous loop: steps/s of a short run.

Trains grpo for ``--steps`` steps of a profile (default tiny) from a given start model, once
per staleness in ``--staleness`` and ``--repeat`` times in turn (0, 1, 0, 1, ...: the shared
machine's load drifts), one process at a time in this process. Per run: the wall time of
``Trainer.train`` (worker start and the final drain included), steps/s from it, the process's
CPU seconds per wall second (above 1: the threads ran at the same time), and the mean of
the logged ``step_s`` / ``rollout_s`` (for a stale run rollout_s is the wait for the worker's
batch) / ``logprob_s`` / ``train_s`` without the first step. Both runs use
``train.reuse_old_logprobs=auto`` and no curve / checkpoints. Not a test; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/offpolicy_rollouts.py --model results/tiny/base/seed0/model \
        [--profile tiny --steps 12 --staleness 0 1 --repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run(profile: str, model: str, steps: int, k: int, out: Path, threads: int) -> dict:
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    ov = [
        f"model.name_or_path={model}",
        f"train.steps={steps}",
        f"run.threads={threads}",
        f"rollout.max_staleness={k}",
        "rollout.is_correction=token",
        "eval.curve=null",
        "train.checkpoint_every=0",
        # (both runs: stale batches then take their old log-probs from the gradient pass; the
        # synchronous run has no separate old-log-prob pass to save in this config)
        "train.reuse_old_logprobs=auto",
    ]
    cfg = load_config("grpo", profile, ov)
    t = Trainer(cfg, out, resume=False)
    t0, c0 = time.perf_counter(), time.process_time()
    t.train(progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    later = rows[1:] or rows
    return {
        "k": k,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        # CPU seconds of this process (all threads) per wall second: 1 = one core's worth
        "cpu_per_wall": cpu / wall,
        "step_s": statistics.mean(r["step_s"] for r in later),
        "rollout_s": statistics.mean(r["rollout_s"] for r in later),
        "train_s": statistics.mean(r["train_s"] for r in later),
        "logprob_s": statistics.mean(r["logprob_s"] for r in later),
        "reward_mean": statistics.mean(r["reward_mean"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the start model's directory (an SFT start)")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    res = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.repeat):
            for k in a.staleness:
                row = run(a.profile, a.model, a.steps, k, Path(d) / f"k{k}_r{r}", a.threads)
                res.append(row)
                print(json.dumps({kk: round(v, 4) for kk, v in row.items()}), flush=True)
    for k in a.staleness:
        mine = [x for x in res if x["k"] == k]
        sps = statistics.median(x["steps_per_s"] for x in mine)
        print(f"max_staleness={k}: median {sps:.3f} steps/s over {len(mine)} runs")
    base = statistics.median(x["steps_per_s"] for x in res if x["k"] == a.staleness[0])
    for k in a.staleness[1:]:
        sps = statistics.median(x["steps_per_s"] for x in res if x["k"] == k)
        print(f"RATIO steps/s max_staleness={k} / {a.staleness[0]} = {sps / base:.3f}")


if __name__ == "__main__":
    main()
