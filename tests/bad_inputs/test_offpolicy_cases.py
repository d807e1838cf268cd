"""Bad inputs of rollout.max_staleness (asynchronous rollouts): out of range, with another
engine, without the importance-sampling correction, with FSDP; the CLI prints one line and
exits 2 without creating the run directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grpo_core.config import load_config
from grpo_core.errors import UserError

KEY = "key 'rollout.max_staleness'"


@pytest.mark.parametrize(
    "value,msg",
    [("-1", "greater than or equal to 0"), ("5", "less than or equal to 4"), ("one", "integer")],
)
def test_max_staleness_range(value, msg):
    with pytest.raises(UserError, match=f"{KEY}: .*{msg}"):
        load_config("grpo", "smoke", [f"rollout.max_staleness={value}"])


@pytest.mark.parametrize(
    "overrides,msg",
    [
        (
            ["rollout.is_correction=token", "rollout.engine=vllm"],
            r"run the hf \(or hf_static\) engine",
        ),
        ([], "needs the importance-sampling correction; set rollout.is_correction: token"),
        (["rollout.is_correction=none"], "needs the importance-sampling correction"),
        (["rollout.is_correction=sequence", "train.fsdp=true"], "not supported with train.fsdp"),
    ],
)
def test_max_staleness_combinations_refused(overrides, msg):
    ok = load_config("grpo", "smoke", ["rollout.max_staleness=1", "rollout.is_correction=token"])
    assert ok.rollout.max_staleness == 1
    with pytest.raises(UserError, match=f"command line .*: {KEY}: .*{msg}"):
        load_config("grpo", "smoke", ["rollout.max_staleness=1", *overrides])
    # (with max_staleness 0 the same keys are fine: nothing changes for them)
    load_config("grpo", "smoke", ["rollout.max_staleness=0", *overrides])


def test_cli_train_prints_one_line_and_exits_2(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo_core.cli",
            "train",
            "grpo",
            "--profile",
            "smoke",
            "--out",
            str(out),
            "rollout.max_staleness=1",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and KEY in lines[0] and "is_correction" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
