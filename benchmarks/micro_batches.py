"""train.micro_batches: by_length against in_order, on a tiny_agent training batch (the update
only: forward, backward and optimizer steps of grpo_core.trainer.Trainer.optimize). Not a test.

Plays one training batch of the tiny_agent profile from an SFT start (collect + score, once),
then runs the update with the rows in batch order at the batch's width and with the rows
longest first and each pass trimmed to the columns its rows use, ``--repeat`` times each in
turn, each from the same weights and optimizer state. Prints each run's wall time, the median
``RATIO by_length/in_order`` with its range, and the largest difference of the two updates'
losses and weights (the same sums in another order and width: equal within float rounding).

    OMP_NUM_THREADS=1 python benchmarks/micro_batches.py --model-dir results/tiny_agent/base/seed0/model
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from grpo_core.config import load_config
    from grpo_core.policy import trimmed
    from grpo_core.trainer import Trainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--profile", default="tiny_agent")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = ap.parse_args()
    cfg = load_config(  # (the trainer sets torch's threads from run.threads)
        "grpo",
        a.profile,
        [
            f"model.name_or_path={a.model_dir}",
            "train.micro_batches=in_order",
            f"run.threads={a.threads}",
        ],
    )
    tr = Trainer(cfg, Path(tempfile.mkdtemp()) / "run")
    batch, _ = tr.collect(0)
    tr.score(batch, 0, {})
    ro = batch.rollouts
    n_tok = (ro.prompt_mask.sum(1) + ro.completion_mask.sum(1)).float()
    print(
        f"{a.profile}: {len(ro)} rows, width {ro.prompt_ids.shape[1] + ro.completion_ids.shape[1]}"
        f", tokens per row mean {n_tok.mean():.0f} (min {n_tok.min():.0f}, max {n_tok.max():.0f})"
        f", micro_batch_size {cfg.train.micro_batch_size}, threads={a.threads}, CPU "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    model0 = copy.deepcopy(tr.model.state_dict())
    opt0 = copy.deepcopy(tr.opt.state_dict())
    plain = tr.policy.seq_logprobs
    times: dict[str, list[float]] = {"in_order": [], "by_length": []}
    result: dict[str, tuple] = {}
    for _ in range(a.repeat):
        for order in ("in_order", "by_length"):
            tr.model.load_state_dict(model0)
            tr.opt.load_state_dict(opt0)
            tr.cfg.train.micro_batches = order
            tr.policy.trim = order == "by_length"
            tr.policy.seq_logprobs = trimmed(plain) if tr.policy.trim else plain
            t0 = time.perf_counter()
            logs = tr.optimize(batch)
            wall = time.perf_counter() - t0
            times[order].append(wall)
            w = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
            result[order] = (logs["loss"], w)
            print(f"  {order:9s} {wall:7.2f} s  loss {logs['loss']:.8f}", flush=True)
    d_loss = abs(result["in_order"][0] - result["by_length"][0])
    d_w = float((result["in_order"][1] - result["by_length"][1]).abs().max())
    ratios = [b / i for i, b in zip(times["in_order"], times["by_length"])]
    print(f"max |loss difference| {d_loss:.2e}, max |weight difference| {d_w:.2e}")
    print(
        f"RATIO by_length/in_order {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}, {a.repeat} pairs)"
    )


if __name__ == "__main__":
    main()
