"""Bad inputs around seeded starts, the random_reward control and the MDE columns: each fails
as one line naming the key (or is handled as stated), with nothing written."""

import subprocess
import sys

import pandas as pd
import pytest

from evals.claims import judge
from grpo_core.config import Claim, load_config
from grpo_core.errors import UserError


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "grpo_core.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_seeded_start_must_be_a_boolean():
    with pytest.raises(UserError, match=r"key 'workflow.seeded_start'.*valid boolean"):
        load_config("grpo", "smoke", ["workflow.seeded_start=sometimes"])


def test_prepare_seed_must_be_an_integer(tmp_path):
    r = _cli("prepare", "--profile", "smoke", "--seed", "one", f"run.results_dir={tmp_path}")
    assert r.returncode == 2 and "--seed: invalid int value: 'one'" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing built


def test_random_reward_bad_params_are_a_user_error():
    from grpo_core.config import RewardTerm
    from grpo_core.rewards import GroupContext, compute_rewards
    from grpo_core.tasks import Problem

    class T:
        def grade(self, a, p):
            return 1.0

    ctx = GroupContext(
        ["1"] * 4,
        [Problem(id="p", question="q", answer="1")] * 4,
        ["stop"] * 4,
        [1] * 4,
        4,
        4,
        task=T(),
    )
    with pytest.raises(UserError, match=r"rewards\[0\] \(random_reward\): bad params \{'p': 0.5\}"):
        compute_rewards([RewardTerm(name="random_reward", params={"p": 0.5})], ctx)


def test_claims_from_a_summary_without_mde_column_are_judged_with_mde_nan():
    """An older summary.csv (before the mde column) still gives verdicts; the MDE is n/a."""
    row = {
        "reproduction": "a",
        "benchmark": "arith_mix",
        "metric": "avg@4",
        "mean": 0.5,
        "std": 0.01,
        "ci_low": 0.4,
        "ci_high": 0.6,
        "n_seeds": 3,
        "delta_vs_grpo": 0.01,
        "delta_ci_low": -0.02,
        "delta_ci_high": 0.04,
    }
    (v,) = judge(pd.DataFrame([row]), {"a": [Claim(text="x")]})
    assert v.verdict == "inconclusive" and v.note == "CI contains 0" and v.mde != v.mde
