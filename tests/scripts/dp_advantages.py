"""Batch-scaled advantages under data parallel: run with torchrun --nproc-per-node 2; each rank
writes the advantages of its own rows to OUT_DIR/rank<r>.json."""

import json
import sys
from pathlib import Path

import torch

from grpo_core import distributed as dist
from grpo_core.advantages import compute_advantages
from grpo_core.config import AdvantageCfg

dist.init("cpu")
# rank 0 holds the group [1, 0], rank 1 the group [1, 1] (G = 2)
rewards = torch.tensor([1.0, 0.0]) if dist.rank() == 0 else torch.tensor([1.0, 1.0])
out = {
    "world": dist.world(),
    "grpo_batch": compute_advantages(
        rewards, 2, AdvantageCfg(name="grpo", scale="batch", std="unbiased", eps=0.0)
    ).tolist(),
    "rpp": compute_advantages(
        rewards, 2, AdvantageCfg(name="reinforce_pp_baseline", std="unbiased", eps=0.0)
    ).tolist(),
}
Path(sys.argv[1], f"rank{dist.rank()}.json").write_text(json.dumps(out))
