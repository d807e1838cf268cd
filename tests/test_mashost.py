"""Agent reproduction mashost (MasHost's HRPO read onto tool-use episodes: group-relative
advantages of the whole construction, its reward lowered by the components it used, plus an
action-wise reward for each component's rationality): hand-computed tensors (numbers worked
out in the comments) and a smoke training on a shrunken tiny_tools."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_agents2 import _tools_cfg
from test_agents3 import CallerEngine
from test_var_agent import _ctx

from grpo_core.advantages import compute_advantages_logged, rational_calls
from grpo_core.config import load_config
from grpo_core.episodes import Episodes

TOL = 1e-5
CALL = '<tool name="calculator">{}</tool>'


def _episodes():
    """One group of 4 on 36*32 = 1152:
    0: a call (result 1152), answer 1152: right, 1 component, rational;
    1: answer 1152 at once: right, 0 components;
    2: a call (result 1152), answer 1000: wrong, 1 component, its result unused (irrational);
    3: a call 36+32 (result 68), the same call again, answer 68: wrong, 2 components, the
       first rational (its result is the answer), the repeat not."""
    turns = [
        [CALL.format("36*32"), "1152"],
        ["1152"],
        [CALL.format("36*32"), "1000"],
        [CALL.format("36+32"), CALL.format("36+32"), "68"],
    ]
    obs = [
        ["36*32=", "<result>1152</result>"],
        ["36*32="],
        ["36*32=", "<result>1152</result>"],
        ["36*32=", "<result>68</result>", "<result>68</result>"],
    ]
    rewards = [1.0, 1.0, 0.0, 0.0]
    n_turns = [len(t) for t in turns]
    ep = Episodes(
        [[0.0] * (k - 1) + [r] for r, k in zip(rewards, n_turns)],
        n_turns,
        [{"tool_calls": c} for c in (1, 0, 1, 2)],
        turns,
        ["done"] * 4,
        [],
        obs,
    )
    return rewards, ep


def _hrpo(rewards, ep, **params):
    n = len(rewards)
    ctx = _ctx(ep)
    cfg = load_config("mashost", "tiny_tools", []).advantage
    cfg = cfg.model_copy(update={"params": {**cfg.params, **params}})
    return compute_advantages_logged(torch.tensor(rewards, dtype=torch.float32), n, cfg, ctx)


def test_mashost_config_is_grpo_with_the_hrpo_estimator():
    cfg = load_config("mashost", "tiny_tools", [])
    base = load_config("grpo", "tiny_tools", [])
    assert cfg.advantage.name == "hrpo"
    assert cfg.advantage.params == {
        "call_cost": 0.1,
        "action_reward": 1.0,
        "action_weight": 0.5,
        "action_norm": "none",
    }
    assert cfg.loss == base.loss and cfg.advantage.std == base.advantage.std


def test_rational_calls_by_hand():
    _, ep = _episodes()
    got = [rational_calls(t, o, True) for t, o in zip(ep.turn_texts, ep.obs_texts)]
    assert got == [[True, None], [None], [False, None], [True, False, None]]
    # an episode cut at max_turns without an answer: every turn is a component, none used;
    # a bad action and a failed tool are not rational
    assert rational_calls(
        [CALL.format("2*3"), CALL.format("2*3")], ["q", "<result>6</result>"], False
    ) == [False, False]
    assert rational_calls(["<tool>2*3", "6"], ["q", "<error>unparseable</error>"], True) == [
        False,
        None,
    ]
    assert rational_calls(
        [CALL.format("2/0"), "0"], ["q", "<error>calculator error</error>"], True
    ) == [False, None]


def test_hrpo_by_hand_trajectory_plus_action_rewards():
    # components c = [1, 0, 1, 2]; R' = R - 0.1 c = [0.9, 1.0, -0.1, -0.2]: mean 0.4,
    # deviations [.5, .6, -.5, -.6], unbiased std sqrt(1.22 / 3) = .637704 (+ eps 1e-6)
    # -> A_G = [.784063, .940875, -.784063, -.940875] on every turn of the episode.
    # Action rewards +-1 x w 0.5 on the components: ep 0 call +.5, ep 2 call -.5, ep 3 first
    # call +.5, its repeat -.5; answer turns 0.
    rewards, ep = _episodes()
    ta, logs = _hrpo(rewards, ep)
    want = [
        [1.284063, 0.784063, 0],
        [0.940875, 0, 0],
        [-1.284063, -0.784063, 0],
        [-0.440875, -1.440875, -0.940875],
    ]
    assert torch.allclose(ta.values, torch.tensor(want), atol=TOL)
    assert ta.n_turns == [2, 1, 2, 3]
    # 4 components over 4 episodes, 2 of them rational
    assert logs["adv/components_mean"] == 1.0 and logs["adv/rational_frac"] == 0.5
    assert logs["adv/traj_abs"] == pytest.approx((0.784063 + 0.940875) / 2, abs=TOL)


def test_hrpo_refuses_episodes_without_tool_calls():
    from grpo_core.errors import UserError

    rewards, ep = _episodes()
    ep.infos = [{}] * 4  # a text game's infos: no tool calls to judge
    with pytest.raises(UserError, match="env tools"):
        _hrpo(rewards, ep)


def test_hrpo_group_normalised_action_rewards_and_the_grpo_limit():
    rewards, ep = _episodes()
    # action_norm group: the 4 component rewards [+1, -1, +1, -1]: mean 0, unbiased std
    # sqrt(4 / 3) = 1.154701 -> +-.866025, x w 0.5 = +-.433013
    ta, _ = _hrpo(rewards, ep, action_norm="group")
    want = [
        [0.784063 + 0.433013, 0.784063, 0],
        [0.940875, 0, 0],
        [-0.784063 - 0.433013, -0.784063, 0],
        [-0.940875 + 0.433013, -0.940875 - 0.433013, -0.940875],
    ]
    assert torch.allclose(ta.values, torch.tensor(want), atol=TOL)
    # no cost and no action term: grpo's advantage on every turn (R = [1, 1, 0, 0]: +-.866025)
    ta, _ = _hrpo(rewards, ep, call_cost=0.0, action_weight=0.0)
    g = torch.tensor([0.866025, 0.866025, -0.866025, -0.866025])
    for i, k in enumerate(ta.n_turns):
        assert torch.allclose(ta.values[i, :k], g[i].expand(k), atol=TOL)
        assert not ta.values[i, k:].any()


def test_mashost_smoke_training_puts_the_action_term_on_call_tokens(tmp_path):
    """CallerEngine: per group rows 0 and 2 call the calculator (row 0 then answers right:
    a rational call; row 2 answers 0: its result unused), row 1 answers right at once, row 3
    answers 0. R = [1, 1, 0, 0], components [1, 0, 1, 0]: R' = [.9, 1, -.1, 0], mean .45,
    unbiased std sqrt(1.01 / 3) = .580230 -> A_G = [.775554, .947900, -.947900, -.775554];
    the calls get +-.5 on top: row 0 1.275554, row 2 -1.447900."""
    import grpo_core.trainer as T
    from grpo_core.prepare import prepare

    cfg = _tools_cfg(tmp_path, "mashost", ["train.steps=1"])
    prepare(cfg, threads=1, log=lambda *a: None)
    tr = T.Trainer(cfg, tmp_path / "run")
    tr.engine = CallerEngine(tr.tok)
    seen = []
    orig = tr.score

    def spy(batch, step, stats):
        out = orig(batch, step, stats)
        seen.append(batch)
        return out

    tr.score = spy
    tr.train(progress=False)
    (b,) = seen
    ro, n_turns = b.rollouts, b.episodes.n_turns
    assert b.rewards.tolist() == [1.0, 1, 0, 0] * 2 and n_turns == [2, 1, 2, 1] * 2
    a_g = [0.775554, 0.947900, -0.947900, -0.775554] * 2
    call = {0: 1.275554, 2: -1.447900}
    pol = ro.policy_mask.bool()
    for i, n in enumerate(n_turns):
        v = b.token_advantages[i][(ro.turn_ids[i] == n - 1) & pol[i]]  # the answer turn
        assert v.numel() and torch.allclose(v, torch.full_like(v, a_g[i]), atol=TOL)
        s = b.token_advantages[i][(ro.turn_ids[i] >= 0) & (ro.turn_ids[i] < n - 1) & pol[i]]
        want = call.get(i % 4)
        assert (s.numel() > 0) == (want is not None)
        if want is not None:
            assert torch.allclose(s, torch.full_like(s, want), atol=TOL)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["loss"]) and row["adv/rational_frac"] == 0.5
    assert row["adv/components_mean"] == 0.5
