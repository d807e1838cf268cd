"""The smoke workflow end to end through Snakemake: prepare -> train -> eval -> aggregate -> report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_pipeline_through_snakemake(tmp_path):
    env = {
        **os.environ,
        "GRPO_ROOT": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--config",
        "profile=smoke",
        "reproductions=[grpo,dapo]",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    logs = (
        "".join(p.read_text()[-2000:] for p in (tmp_path / "results/smoke/logs").glob("*.log"))
        if r.returncode
        else ""
    )
    assert r.returncode == 0, r.stderr[-4000:] + logs
    res = tmp_path / "results" / "smoke"
    for repro in ("grpo", "dapo"):
        run = res / "runs" / repro / "seed0"
        assert (run / "metrics.jsonl").exists() and (run / "config.yaml").exists()
        assert list((run / "checkpoint").glob("*.safetensors"))
        assert (run / "eval" / "arith_mix.json").exists()
        assert (run / "eval" / "arith_mix.samples.jsonl").exists()
    # seeded starts (workflow.seeded_start in the smoke profile): seed 0's own SFT start,
    # evaluated as sft_start seed 0; no shared base/model
    assert (res / "base" / "seed0" / "model" / "config.json").exists()
    assert not (res / "base" / "model").exists()
    start = json.loads(
        (res / "runs" / "sft_start" / "seed0" / "eval" / "arith_mix.json").read_text()
    )
    assert start["model"].endswith("base/seed0/model")
    summary = pd.read_csv(res / "summary.csv")
    assert {"grpo", "dapo", "sft_start"} <= set(summary["reproduction"])
    assert "mde" in summary.columns
    assert list(summary.columns[:9]) == [
        "reproduction",
        "benchmark",
        "metric",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "n_seeds",
        "delta_vs_grpo",
    ]
    report = (res / "report.md").read_text()
    assert "dapo" in report and "arith_mix" in report
    # a rerun has nothing to do
    r2 = subprocess.run(cmd[:-1] + ["-n"], capture_output=True, text=True, env=env)
    assert "Nothing to be done" in r2.stdout + r2.stderr
