"""Bad inputs of the agents3 reproduction m_grpo (tiny_tools): each a one-line UserError
naming the key and what would be right."""

import pytest
import torch

from grpo_core.advantages import compute_advantages_logged
from grpo_core.config import load_config
from grpo_core.errors import UserError
from grpo_core.schema import AdvantageCfg

CONFIG_CASES = [
    (
        "advantage.params.sub_slots=0",
        "command line (advantage.params.sub_slots=0): key 'advantage.params.sub_slots': Input "
        "should be greater than or equal to 1 (got 0)",
    ),
    (
        "advantage.params.sub_slot=2",
        "command line (advantage.params.sub_slot=2): unknown key 'advantage.params.sub_slot'; "
        "did you mean 'sub_slots'?",
    ),
    (
        "loss.name=policy_shaping",
        "command line (loss.name=policy_shaping): key 'loss.name': 'policy_shaping' takes one "
        "advantage per sequence, but advantage 'm_grpo' gives one per turn; want one of "
        "['ppo_clip', 'gspo', 'reinforce']",
    ),
]


@pytest.mark.parametrize("override,msg", CONFIG_CASES)
def test_config_cases(override, msg):
    with pytest.raises(UserError) as e:
        load_config("m_grpo", "tiny_tools", [override])
    assert str(e.value) == msg and "\n" not in str(e.value)


def test_m_grpo_without_episodes():
    # a single-turn task (no env): the estimator has no turns to split into roles
    with pytest.raises(UserError) as e:
        compute_advantages_logged(torch.tensor([1.0, 0.0]), 2, AdvantageCfg(name="m_grpo"))
    assert str(e.value) == (
        "advantage m_grpo needs the episodes of the batch (per-turn rewards and observations); "
        "the trainer attaches them to its group context"
    )
