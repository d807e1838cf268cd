"""benchmarks/gpu_step.py runs (tiny shape, CPU) and the memory estimate's arithmetic."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from grpo_core.config import load_config
from grpo_core.models import memory_estimate

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_runs_on_cpu_with_a_tiny_shape(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPO_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--tiny", "--device", "cpu",
           "--prompts", "2", "--group", "2", "--prompt-len", "8", "--completion-len", "8",
           "--micro-batch", "2", "--steps", "1"]  # fmt: skip
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["tokens_per_s"] > 0 and out["mfu"] is None  # no peak FLOP/s for a CPU
    assert out["batch"] == "2x2 sequences of 8+8"


def test_memory_estimate_arithmetic():
    # nn.Linear(1024, 1024): 1024*1024 + 1024 = 1,049,600 float32 params = 4.0039 MiB of
    # weights, the same of gradients, 8 bytes per param of Adam moments = 8.0078 MiB; no config
    # (hidden size / vocab 0) -> 0 activations; total 16.0156 MiB
    lin = torch.nn.Linear(1024, 1024)
    msg = memory_estimate(lin, load_config(None, "smoke"))
    assert "(MiB, per process): weights 4.00, grads 4.00, adam 8.01, activations 0.00" in msg
    assert re.search(r"total ~16\.02", msg)
    lin.weight.requires_grad_(False)  # frozen weights: no gradient, no Adam state
    msg = memory_estimate(lin, load_config(None, "smoke"))
    assert "grads 0.00, adam 0.01" in msg
