"""Data-parallel training over gloo: two CPU processes give the loss and gradients of one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_core import distributed as dist

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "dp_step.py"


def test_shard_range_covers_everything_once(monkeypatch):
    # 10 items over 4 ranks: sizes 3, 3, 2, 2 -> [0,3) [3,6) [6,8) [8,10)
    monkeypatch.setattr(dist, "world", lambda: 4)
    got = []
    for r in range(4):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        got.append(dist.shard_range(10))
    assert got == [(0, 3), (3, 6), (6, 8), (8, 10)]


def test_helpers_are_identities_in_one_process():
    assert (dist.world(), dist.rank(), dist.is_main()) == (1, 0, True)
    assert dist.all_sum(2.5) == 2.5 and dist.all_min(3) == 3
    x = torch.arange(4)
    assert torch.equal(dist.gather_cat(x), x)


def _run(cmd, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


# grpo: seq_mean_token_mean + k3 KL in the loss; dapo: token_mean (global token count);
# dr_grpo: seq_mean_token_sum_norm
@pytest.mark.parametrize("repro", ["grpo", "dapo", pytest.param("dr_grpo", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one(smoke_results, tmp_path, repro):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _run([sys.executable, str(SCRIPT), str(smoke_results), repro, str(one)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(29500 + os.getpid() % 1000),
            str(SCRIPT),
            str(smoke_results),
            repro,
            str(two),
        ],
        tmp_path,
    )
    a, b = torch.load(one), torch.load(two)
    assert (a["world"], b["world"]) == (1, 2)
    assert b["n_local"] == 8  # rank 0 trained on half of the 16 sequences
    assert a["loss"] != 0.0
    assert abs(a["loss"] - b["loss"]) < 1e-6 * max(1.0, abs(a["loss"]))
    assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * a["grad_norm"]
    assert a["grads"].keys() == b["grads"].keys() and len(a["grads"]) > 0
    for k in a["grads"]:
        torch.testing.assert_close(b["grads"][k], a["grads"][k], rtol=1e-5, atol=1e-7)
