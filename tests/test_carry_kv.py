"""rollout.carry_kv (grpo_core.decode.KVCarry): multi-turn episodes keep each row's K/V between
turns and prefill only what is new. The prefix match on hand-written ids; later turns through a
carried cache against the same rows prefilled whole (same tokens, log-probs within 1e-5, with
sdpa and eager attention, greedy and sampled, rows reordered and dropped between turns); whole
episodes of a multi-turn env with and without it; the trainer with it on; the config check."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_core.decode import KVCarry
from grpo_core.errors import UserError
from grpo_core.rollout import HFStaticEngine, SamplingParams
from tests.test_decode_loop import _rig_eos, _tiny
from tests.test_episodes import guess_number

PROMPTS = ["1+2=", "hello world, 33", "x", "12345678+9=", "ab", "7*8=?"]


def _entry(ids):
    kv = [(torch.zeros(1, len(ids), 2), torch.zeros(1, len(ids), 2))]
    return torch.tensor(ids), kv


def test_match_is_the_longest_common_prefix_capped_below_the_row_length():
    c = KVCarry()
    for ids in ([1, 2, 3, 4], [1, 2, 9], [7, 7]):
        c.add(*_entry(ids))
    assert c.match([torch.tensor([1, 2, 3])]) == ([-1], [0])  # nothing committed yet
    c.commit()
    rows = [
        torch.tensor([1, 2, 3, 4, 5, 6]),  # entry 0 whole: reuse 4
        torch.tensor([1, 2, 9, 9]),  # entry 1 whole: 3
        torch.tensor([1, 2, 3]),  # entry 0's prefix, capped at len - 1 = 2
        torch.tensor([7, 7]),  # entry 2 equals the row: len - 1 = 1
        torch.tensor([5, 1, 2]),  # no common prefix
    ]
    entry, reuse = c.match(rows)
    assert reuse == [4, 3, 2, 1, 0]
    assert entry[:4] == [0, 1, 0, 2] and entry[4] == -1
    # the next call's rows replace the entries
    c.add(*_entry([5, 1]))
    c.commit()
    assert c.match([torch.tensor([1, 2, 3, 4, 5])]) == ([-1], [0])
    assert c.match([torch.tensor([5, 1, 2])]) == ([0], [2])


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def rigged(request):
    model, tok = _tiny(attn=request.param)
    prompts = [tok.encode(s) for s in PROMPTS for _ in range(2)]
    _rig_eos(model, tok, prompts)  # rows stop at different steps (compaction keeps some)
    return model, tok, prompts


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_carried_turns_match_the_whole_prefill(rigged, temperature):
    model, tok, prompts = rigged
    eng = HFStaticEngine(model, tok, cfg=None, model_path=None)
    eng.return_logprobs = True
    carry = eng.new_carry()
    assert isinstance(carry, KVCarry)
    ro = eng.generate(
        prompts, SamplingParams(temperature=temperature, max_new_tokens=8), carry=carry
    )
    rows = prompts
    for turn in range(3):
        nxt = []
        for j, p in enumerate(rows):
            m = int(ro.completion_mask[j].sum())
            nxt.append(p + ro.completion_ids[j, :m].tolist() + tok.encode(f" ok{j % 3} "))
        nxt = nxt[::-1][: len(nxt) - turn]  # another order, and rows leave
        params = SamplingParams(temperature=temperature, max_new_tokens=8, seed=10 + turn)
        hits, reused, prefilled = carry.hits, carry.reused, carry.prefilled
        got = eng.generate(nxt, params, carry=carry)
        want = eng.generate(nxt, params)
        assert torch.equal(got.completion_ids, want.completion_ids)
        assert torch.equal(got.completion_mask, want.completion_mask)
        assert got.texts == want.texts
        diff = (got.sampler_logp - want.sampler_logp).abs().max().item()
        assert diff < 1e-5, diff
        # every row found its previous turn; only the new tokens were prefilled
        assert carry.hits - hits == len(nxt)
        new_tokens = carry.prefilled - prefilled
        assert new_tokens < carry.reused - reused
        assert new_tokens + carry.reused - reused == sum(len(x) for x in nxt)
        ro, rows = got, nxt


def _guess_problems(n):
    from grpo_core.tasks import Problem

    return [Problem(f"g{i}", "Guess the number from 1 to 9.", str(1 + i % 9)) for i in range(n)]


def test_episodes_with_a_carry_equal_episodes_without(rigged):
    from grpo_core.episodes import chat_ids, make_envs, run_episodes

    model, tok, _ = rigged

    class Env:
        name, params = "guess_number", {}

    def play(carry_kv):
        problems = _guess_problems(6)
        envs = make_envs(Env, None, "plain", len(problems))
        prompts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
        eng = HFStaticEngine(model, tok, cfg=None, model_path=None)
        eng.carry_kv = carry_kv
        made = []
        orig = eng.new_carry
        eng.new_carry = lambda: made.append(orig()) or made[-1]
        ro, ep = run_episodes(
            envs,
            problems,
            [0] * 6,
            prompts,
            eng,
            tok,
            # sampled, stopped at a digit (a guess): the random model plays several turns
            SamplingParams(temperature=1.0, max_new_tokens=16, stop=list("0123456789"), seed=5),
            max_turns=4,
        )
        return ro, ep, made

    a, ep_a, made = play(True)
    b, ep_b, none = play(False)
    assert none == [] and len(made) == 1 and made[0].hits > 0
    assert max(ep_a.n_turns) > 1  # the untrained model guesses wrong: several turns
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.loss_mask, b.loss_mask) and torch.equal(a.turn_ids, b.turn_ids)
    assert ep_a.turn_texts == ep_b.turn_texts and ep_a.n_turns == ep_b.n_turns


def test_the_trainer_runs_a_multi_turn_env_with_carry_kv(smoke_cfg, tmp_path):
    import json

    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("grpo", [*guess_number(), "train.steps=2", "rollout.carry_kv=true"])
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.engine.carry_kv
    carries = []
    orig = tr.engine.new_carry
    tr.engine.new_carry = lambda: carries.append(orig()) or carries[-1]
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert len(carries) >= 2 and sum(c.hits for c in carries) > 0


def test_carry_kv_needs_the_hf_static_engine():
    from grpo_core.config import load_config

    with pytest.raises(UserError, match="rollout.carry_kv.*hf_static"):
        load_config("grpo", "smoke", ["rollout.carry_kv=true", "rollout.engine=hf"])
    assert load_config("grpo", "smoke", ["rollout.carry_kv=true"]).rollout.carry_kv
    assert not load_config("grpo", "smoke", []).rollout.carry_kv
