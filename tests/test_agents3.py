"""Agent reproduction m_grpo (M-GRPO: main-agent and sub-agent advantages, each role's turns
normalised in its own group, the sub-agent calls aligned to D slots per trajectory):
hand-computed tensors (numbers worked out in the comments) and a smoke training on a shrunken
tiny_tools."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from test_agents2 import _tools_cfg
from test_episodes import scripted_rollouts

from grpo_core.advantages import TurnAdvantages, compute_advantages_logged
from grpo_core.config import load_config
from grpo_core.episodes import Episodes
from grpo_core.rewards import GroupContext
from grpo_core.rollout import RolloutEngine

TOL = 1e-5


def _mgrpo(rewards: list[float], turns: list[int], **params) -> tuple[TurnAdvantages, dict]:
    n = len(rewards)
    ep = Episodes(
        [[None] * (t - 1) + [r] for r, t in zip(rewards, turns)],
        turns,
        [{}] * n,
        [[f"a{i}{t}" for t in range(k)] for i, k in enumerate(turns)],
        ["done"] * n,
        [],
        [[f"o{i}{t}" for t in range(k)] for i, k in enumerate(turns)],
    )
    ctx = GroupContext(
        texts=[""] * n,
        problems=[None] * n,
        finish_reasons=["stop"] * n,
        lengths=[1] * n,
        group_sizes=[n],
        max_new_tokens=4,
        task=None,
        episodes=ep,
    )
    cfg = load_config("m_grpo", "tiny_tools", []).advantage
    cfg = cfg.model_copy(update={"params": {**cfg.params, **params}})
    return compute_advantages_logged(torch.tensor(rewards, dtype=torch.float32), n, cfg, ctx)


def test_m_grpo_config():
    cfg = load_config("m_grpo", "tiny_tools", [])
    assert cfg.advantage.name == "m_grpo" and cfg.advantage.params == {"sub_slots": None}
    assert cfg.loss.name == "ppo_clip" and cfg.advantage.std == "unbiased"


def test_m_grpo_by_hand_main_and_aligned_sub_groups():
    # rewards [1, 0, 0, 1], turns [2, 1, 3, 2]: sub-agent calls d = [1, 0, 2, 1] (all turns but
    # the last), D = max d = 2.
    # main (the last turn): grpo over the 4 episodes: mean .5, unbiased std sqrt(4 * .25 / 3)
    # = .57735 -> +-.866025.
    # sub: the 3 episodes with calls fill 2 slots each (episodes 0 and 3 pad one copy):
    # [1, 1, 0, 0, 1, 1]: mean 2/3, unbiased std sqrt((4 * (1/3)^2 + 2 * (2/3)^2) / 5) =
    # sqrt(.266667) = .516398 -> R 1: (1/3) / .516398 = .645497; R 0: -1.290994.
    # (per-call statistics without alignment, [1, 0, 0, 1], would give +-.866025)
    ta, logs = _mgrpo([1, 0, 0, 1], [2, 1, 3, 2])
    want = [
        [0.645497, 0.866025, 0],
        [-0.866025, 0, 0],
        [-1.290994, -1.290994, -0.866025],
        [0.645497, 0.866025, 0],
    ]
    assert torch.allclose(ta.values, torch.tensor(want), atol=TOL)
    assert ta.n_turns == [2, 1, 3, 2]
    # 4 calls over 4 episodes, none dropped, 2 padded slots over 4 episodes
    assert logs["adv/sub_calls_mean"] == 1.0 and logs["adv/sub_dropped_frac"] == 0.0
    assert logs["adv/sub_padded_slots"] == 0.5
    assert logs["adv/main_abs"] == pytest.approx(0.866025, abs=TOL)
    # sub |A| over the 4 kept calls: (2 * .645497 + 2 * 1.290994) / 4 = .968246
    assert logs["adv/sub_abs"] == pytest.approx(0.968246, abs=TOL)


def test_m_grpo_by_hand_fixed_slots_drop_extra_calls():
    # sub_slots 1: episode 2 keeps its first call, the second is dropped (advantage 0);
    # slots [1, 0, 1]: mean 2/3, unbiased std sqrt((2 * (1/3)^2 + (2/3)^2) / 2) = .57735 ->
    # R 1: .57735, R 0: -1.154701; main as before
    ta, logs = _mgrpo([1, 0, 0, 1], [2, 1, 3, 2], sub_slots=1)
    want = [
        [0.57735, 0.866025, 0],
        [-0.866025, 0, 0],
        [-1.154701, 0, -0.866025],
        [0.57735, 0.866025, 0],
    ]
    assert torch.allclose(ta.values, torch.tensor(want), atol=TOL)
    assert logs["adv/sub_dropped_frac"] == 0.25 and logs["adv/sub_padded_slots"] == 0.0


def test_m_grpo_one_turn_each_is_grpo_and_a_lone_caller_gets_no_sub_signal():
    # one turn each: only the main agent, grpo's values
    ta, _ = _mgrpo([1, 0, 0, 1], [1, 1, 1, 1])
    assert torch.allclose(ta.values[:, 0], torch.tensor([0.866025, -0.866025] * 2)[[0, 1, 1, 0]])
    # one episode with a call: no sub-agent group (A_S = 0); main: mean .5, unbiased std
    # sqrt(.5) = .707107 -> +-.707107
    ta, _ = _mgrpo([1, 0], [2, 1])
    assert torch.allclose(ta.values, torch.tensor([[0, 0.707107], [-0.707107, 0]]), atol=TOL)
    # onto tokens: the call's tokens carry A_S, the answer's A_M, observations 0
    ta, _ = _mgrpo([1, 0, 0, 1], [2, 1, 3, 2])
    turn_ids = torch.tensor([[0, 0, -1, 1, 1]])
    tok = TurnAdvantages(ta.values[:1], [2]).to_tokens(turn_ids, (turn_ids >= 0).long())
    assert torch.allclose(tok[0], torch.tensor([0.645497, 0.645497, 0, 0.866025, 0.866025]))


class CallerEngine(RolloutEngine):
    """Scripted tools-env policy over groups of 4: on the first generate call rows 0 and 2 of
    each group call the calculator, row 1 answers right, row 3 answers 0; on the second call
    (the callers, with the result) the first caller of each group answers right, the second
    0. Rewards per group [1, 1, 0, 0], turns [2, 1, 2, 1]."""

    def __init__(self, tokenizer):
        self.tok, self.calls = tokenizer, 0

    def generate(self, prompts, params):
        texts = []
        for r, p in enumerate(prompts):
            q = self.tok.decode(p, skip_special_tokens=True)
            a, op, b = re.findall(r"(\d+)\s*([*+])\s*(\d+)", q)[0]
            right = int(a) * int(b) if op == "*" else int(a) + int(b)
            if self.calls == 0:
                call = f'<tool name="calculator">{a}{op}{b}</tool>'
                texts.append([call, str(right), call, "0"][r % 4])
            else:
                texts.append(str(right) if r % 2 == 0 else "0")
        self.calls += 1
        return scripted_rollouts(self.tok, prompts, texts)

    def sync_weights(self, model) -> None:
        pass

    def close(self) -> None:
        pass


def test_m_grpo_smoke_training_separates_the_roles(tmp_path):
    import grpo_core.trainer as T
    from grpo_core.prepare import prepare

    cfg = _tools_cfg(tmp_path, "m_grpo", ["train.steps=1"])
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
    # the main agent's values: grpo over each group of 4 (unbiased std, eps 1e-6)
    r = b.rewards.view(-1, 4)
    main = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)
    pol = ro.policy_mask.bool()
    for i, n in enumerate(n_turns):
        v = b.token_advantages[i][(ro.turn_ids[i] == n - 1) & pol[i]]  # the answer turn: A_M
        assert v.numel() and torch.allclose(v, main[i].expand_as(v), atol=TOL)
        s = b.token_advantages[i][(ro.turn_ids[i] >= 0) & (ro.turn_ids[i] < n - 1) & pol[i]]
        # the calls: sub-agent group of the 2 callers, slots [1, 0]: mean .5, unbiased std
        # .707107 -> +-.707107
        want = {2: 0.707107 if b.rewards[i] > 0 else -0.707107, 1: None}[n]
        assert (s.numel() > 0) == (want is not None)
        if want is not None:
            assert torch.allclose(s, torch.full_like(s, want), atol=TOL)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["loss"]) and "adv/sub_calls_mean" in row
