"""Bad inputs of the w2misc components (issue 16): geo_angles task params and gcpo reward
params that do not fit are refused at load with the key named; the CLI prints one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core.config import load_config
from grpo_core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "params, fragment",
    [
        ('{"levels": {"pent": 1}}', "levels"),
        ('{"levels": {"tri": 0, "quad": 0}}', "add up to 0"),
        ('{"min_angle": 120, "max_angle": 60}', "min_angle 120 > max_angle 60"),
        ('{"aux_frac": 1.5}', "aux_frac"),
        ('{"aux_fraction": 0.5}', "aux_fraction"),
    ],
)
def test_geo_angles_params_refused_at_load(params, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config("gcpo", "tiny_geo", [f"task.params={params}"])


def test_geo_angles_too_few_distinct_problems_names_the_fix():
    from grpo_core.schema import TaskCfg
    from grpo_core.tasks import make_task

    task = make_task(
        TaskCfg(name="geo_angles", n_train=500, n_test=10,
                params={"levels": {"tri": 1}, "min_angle": 20, "max_angle": 24})
    )  # fmt: skip
    with pytest.raises(UserError, match="only 25 distinct problems .* widen task.params"):
        task.train()


@pytest.mark.parametrize(
    "params, fragment",
    [
        ('{"eta": 1.0}', "eta"),
        ('{"w_aux": -1}', "w_aux"),
        ('{"len_on": "wrong"}', "len_on"),
        ('{"open_tag": ""}', "open_tag"),
        ('{"thresh": 0.1}', "thresh"),
    ],
)
def test_gcpo_reward_params_refused_at_load(params, fragment):
    rewards = f'[{{"name": "correctness"}}, {{"name": "gcpo", "params": {params}}}]'
    with pytest.raises(UserError, match=fragment):
        load_config("gcpo", "tiny_geo", [f"rewards={rewards}"])


def test_cli_prints_one_line_and_exits_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "grpo_core.cli", "train", "gcpo", "--profile", "tiny_geo",
         f"run.results_dir={tmp_path}", 'task.params={"aux_frac": 2}'],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "aux_frac" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "params, fragment",
    [
        ('{"tasks": {"months": 1}}', "tasks"),
        ('{"tasks": {"stage": 0}}', "add up to 0"),
        ('{"tasks": {"stage": -1}}', "weights >= 0"),
    ],
)
def test_clinic_mix_params_refused_at_load(params, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config("oncoreason", "tiny_clinic", [f"task.params={params}"])


def test_oncoreason_reward_needs_expert_rationales():
    import torch  # noqa: F401

    from grpo_core.rewards import REWARDS, GroupContext
    from grpo_core.tasks import Problem

    ctx = GroupContext(["12"], [Problem("add2-3", "5+7=", "12")], ["stop"], [2], [1], 6, None)
    with pytest.raises(UserError, match="needs problems with an expert rationale .* add2-3"):
        REWARDS.get("oncoreason")(ctx)
    with pytest.raises(UserError, match="w_rationale"):
        load_config("oncoreason", "tiny_clinic",
                    ['rewards=[{"name": "oncoreason", "params": {"w_rationale": -0.5}}]'])  # fmt: skip


def test_clinic_mix_too_few_distinct_problems_names_the_fix():
    from grpo_core.schema import TaskCfg
    from grpo_core.tasks import make_task

    # one task: 60 ages x 7 sizes x 10 node counts x 3 grades = 12600 distinct records
    task = make_task(TaskCfg(name="clinic_mix", n_train=13000, n_test=10,
                             params={"tasks": {"stage": 1}}))  # fmt: skip
    with pytest.raises(UserError, match="only .* distinct problems .* ask for fewer"):
        task.train()


@pytest.mark.parametrize(
    "params, fragment",
    [
        ('{"w_plan": -1}', "w_plan"),
        ('{"close_tag": ""}', "close_tag"),
        ('{"plan_tag": "<plan>"}', "plan_tag"),
    ],
)
def test_pta_plan_params_refused_at_load(params, fragment):
    rewards = f'[{{"name": "correctness"}}, {{"name": "pta_plan", "params": {params}}}]'
    with pytest.raises(UserError, match=fragment):
        load_config("pta_grpo", "tiny_clinic", [f"rewards={rewards}"])


def test_pta_plan_without_plans_scores_zero():
    """Completions without a leading plan span (the arithmetic task's) earn no plan term and
    no format term: the reward is 0, with 0 plans per group."""
    from grpo_core.rewards import REWARDS, GroupContext
    from grpo_core.schema import TaskCfg
    from grpo_core.tasks import make_task

    task = make_task(TaskCfg(name="clinic_mix", n_train=2, n_test=1))
    from grpo_core.tasks import Problem

    p = Problem("cl-risk-0", "risk: age 40 size 1 nodes 0 grade 1", "low", {"task": "risk"})
    texts = ["low", "x <why>none</why>low", "<why>none low"]
    ctx = GroupContext(texts, [p] * 3, ["stop"] * 3, [2] * 3, [3], 12, task)
    r, logs = REWARDS.get("pta_plan")(ctx)
    assert r.tolist() == [0.0, 0.0, 0.0]
    assert logs["plans_per_group"] == 0
