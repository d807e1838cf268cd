"""Bad inputs of the agents2 reproductions (arpo, flow_grpo on tiny_tools): each a one-line
UserError naming the key and what would be right."""

import pytest
import torch

from grpo_core.config import load_config
from grpo_core.errors import UserError

CONFIG_CASES = [
    (
        "arpo",
        "sampler.params.buffer_size=0",
        "command line (sampler.params.buffer_size=0): key 'sampler.params.buffer_size': Input "
        "should be greater than or equal to 1 (got 0)",
    ),
    (
        "arpo",
        "sampler.params.importance=behaviour",
        "command line (sampler.params.importance=behaviour): key 'sampler.params.importance': "
        "Input should be 'stored' or 'recompute' (got 'behaviour')",
    ),
    (
        "arpo",
        "sampler.params.n_replya=2",
        "command line (sampler.params.n_replya=2): unknown key 'sampler.params.n_replya'; did "
        "you mean 'n_replay'?",
    ),
    (
        "flow_grpo",
        "loss.name=policy_shaping",
        "command line (loss.name=policy_shaping): key 'loss.name': 'policy_shaping' takes one "
        "advantage per sequence, but advantage 'gigpo' gives one per turn; want one of "
        "['ppo_clip', 'gspo', 'reinforce']",
    ),
    (
        "flow_grpo",
        "advantage.params.step_weght=0",
        "command line (advantage.params.step_weght=0): unknown key 'advantage.params.step_weght'; "
        "did you mean 'step_weight'?",
    ),
]


@pytest.mark.parametrize("repro,override,msg", CONFIG_CASES)
def test_config_cases(repro, override, msg):
    with pytest.raises(UserError) as e:
        load_config(repro, "tiny_tools", [override])
    assert str(e.value) == msg and "\n" not in str(e.value)


def _round(n_replay: int, media=None):
    """The trainer's replay round on one failed group of 4 whose task has a stored success."""
    from types import SimpleNamespace

    import grpo_core.trainer as T
    from grpo_core.rollout import Rollouts
    from grpo_core.samplers import ArpoSampler
    from grpo_core.schema import SamplerCfg

    s = ArpoSampler(4, SamplerCfg(name="arpo", params={"n_replay": n_replay}), seed=0)
    s.store(0, {"reward": 1.0})
    ro = Rollouts(
        torch.ones(4, 2, dtype=torch.long),
        torch.ones(4, 2, dtype=torch.long),
        torch.ones(4, 2, dtype=torch.long),
        torch.ones(4, 2, dtype=torch.long),
        ["stop"] * 4,
        ["0"] * 4,
        media=media,
    )
    batch = T.Batch(ro, [None] * 4, torch.zeros(4), torch.empty(0), None, None)
    batch.group_sizes, batch.indices = [4], [0] * 4
    fake = SimpleNamespace(cfg=SimpleNamespace(sampler=SimpleNamespace(name="arpo")))
    return T.Trainer._replay_round(fake, batch, 0, s.extra_round(0))


def test_n_replay_not_below_the_group_size():
    with pytest.raises(UserError) as e:
        _round(4)
    assert str(e.value) == (
        "sampler.params.n_replay 4: must be below the group size 4 (rollout.group_size): a "
        "replayed group keeps at least one on-policy row"
    )


def test_no_replay_of_rows_with_media():
    with pytest.raises(UserError) as e:
        _round(1, media=[None] * 4)
    assert str(e.value) == "sampler 'arpo': no replay of rows with media"
