"""The SLURM profile: a dry run of the paper grid resolves offline with GPU resources."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("snakemake_executor_plugin_slurm")
ROOT = Path(__file__).resolve().parents[1]


def test_paper_grid_dry_run_on_slurm_profile(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm",
           "--config", "profile=paper", "--directory", str(tmp_path), "--snakefile",
           str(ROOT / "Snakefile")]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    # 5 reproductions x 3 seeds, each trained and evaluated, + the start checkpoint's eval
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts["train"] == "15" and counts["evaluate"] == "15"
    assert counts["evaluate_start"] == "1"
    # 7 real benchmarks x 3 eval seeds for the 15 runs and the start model (16 x 7 x 3 = 336),
    # merged over eval seeds once per (run, benchmark): 16 x 7 = 112; total 35 + 336 + 112
    assert counts["evaluate_benchmark"] == "336" and counts["merge_eval_seeds"] == "112"
    assert counts["total"] == "483"
    train = [b for b in out.split("\n\n") if "rule train:" in b]
    assert len(train) == 15
    for block in train:  # one GPU, tasks=0 (no --ntasks-per-gpu double launch), paper budget
        assert re.search(r"gpu=1\b", block) and re.search(r"tasks=0\b", block)
        assert "runtime=1440" in block and "mem_mb=64000" in block
