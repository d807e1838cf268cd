"""Envs and the episode runner (grpo_core.episodes): observation tokens, loss masks, turn ids
and env rewards of multi-turn trajectories against hand-written values; the log-probs of a
later turn see the whole conversation; a multi-turn env trains through the trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from grpo_core.episodes import (
    ENVS,
    GuessNumberEnv,
    SingleTurnEnv,
    chat_ids,
    make_envs,
    observation_ids,
    run_episodes,
)
from grpo_core.models import build_char_tokenizer
from grpo_core.rollout import RolloutEngine, Rollouts, SamplingParams, eos_token_ids, left_pad
from grpo_core.tasks import Problem


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


class ScriptedEngine(RolloutEngine):
    """Replies with the next scripted texts (one list per generate call), each ended by EOS;
    records the prompts it was given."""

    def __init__(self, tokenizer, script: list[list[str]]):
        self.tok, self.script, self.calls = tokenizer, list(script), []

    def generate(self, prompts, params):
        texts = self.script.pop(0)
        assert len(texts) == len(prompts)
        self.calls.append([list(p) for p in prompts])
        return scripted_rollouts(self.tok, prompts, texts)


def scripted_rollouts(tok, prompts: list[list[int]], texts: list[str]) -> Rollouts:
    """Rollouts whose completions are ``texts``, each ended by EOS (what an engine returns)."""
    eos = tok.eos_token_id
    rows = [tok.encode(t, add_special_tokens=False) + [eos] for t in texts]
    w = max(len(r) for r in rows)
    ids = torch.full((len(rows), w), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), w), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    return Rollouts(p_ids, p_mask, ids, mask, ["stop"] * len(rows), list(texts))


def _ids(tok, s: str) -> list[int]:
    return tok.encode(s, add_special_tokens=False)


def test_observation_tokens_of_the_tiny_chat_template(tok):
    # template: <|user|>content<|end|> ... <|assistant|>; the policy's turn ends with <|end|>,
    # so the next user turn is <|user|>higher<|end|><|assistant|>, nothing between
    got = observation_ids(tok, [{"role": "user", "content": "higher"}], eos_token_ids(tok))
    v = tok.get_vocab()
    want = [v["<|user|>"], *_ids(tok, "higher"), v["<|end|>"], v["<|assistant|>"]]
    assert got == want


def _guess_setup(tok, answers, script, max_turns=2):
    class Cfg:
        name, params = "guess_number", {}

    problems = [
        Problem(f"g{i}", "Guess the number from 1 to 9.", str(a)) for i, a in enumerate(answers)
    ]
    envs = make_envs(Cfg, None, "plain", len(problems))
    prompts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
    eng = ScriptedEngine(tok, script)
    ro, ep = run_episodes(
        envs, problems, [0] * len(problems), prompts, eng, tok, SamplingParams(), max_turns
    )
    return ro, ep, eng, prompts


def test_two_turn_guesses_hand_written(tok):
    # answers 5, 4, 9; turn 0 guesses 5 (right), 3 (low), 7 (low); turn 1 (the two still
    # running) guesses 4 (right) and 8 (low again, but max_turns = 2 ends it)
    ro, ep, eng, prompts = _guess_setup(tok, [5, 4, 9], [["5", "3", "7"], ["4", "8"]])
    v = tok.get_vocab()
    end, user, asst = v["<|end|>"], v["<|user|>"], v["<|assistant|>"]
    higher = [user, *_ids(tok, "higher"), end, asst]  # 9 tokens
    # episode 0: "5<|end|>" only; 1: "3<|end|>" + hint + "4<|end|>"; 2: "7<|end|>" + hint + "8<|end|>"
    want_ids = [
        _ids(tok, "5") + [end],
        _ids(tok, "3") + [end] + higher + _ids(tok, "4") + [end],
        _ids(tok, "7") + [end] + higher + _ids(tok, "8") + [end],
    ]
    w = 2 + 9 + 2
    assert ro.completion_ids.shape == (3, w)
    for i, ids in enumerate(want_ids):
        assert ro.completion_ids[i, : len(ids)].tolist() == ids
    assert ro.completion_mask.tolist() == [[1, 1] + [0] * 11, [1] * 13, [1] * 13]
    pol = [1, 1] + [0] * 9 + [1, 1]
    assert ro.loss_mask.tolist() == [[1, 1] + [0] * 11, pol, pol]
    t1 = [0, 0] + [-1] * 9 + [1, 1]
    assert ro.turn_ids.tolist() == [[0, 0] + [-1] * 11, t1, t1]
    assert ro.policy_mask is ro.loss_mask
    assert ep.turn_rewards == [[1.0], [0.0, 1.0], [0.0, 0.0]]
    assert ep.env_reward().tolist() == [1.0, 1.0, 0.0]
    assert ep.n_turns == [1, 2, 2]
    assert ep.success() == [True, True, False]
    assert ep.end_reasons == ["done", "done", "max_turns"]
    assert ep.turn_texts == [["5"], ["3", "4"], ["7", "8"]]
    # observations shown: the prompt, then one hint for the episodes that went on (no media)
    assert ep.media == [[None], [None, None], [None, None]]
    assert ro.texts == ["5", "4", "8"]  # the last turn's text
    # turn 1 generated from the whole trajectory so far, for the running episodes only
    assert eng.calls[1] == [prompts[1] + want_ids[1][:11], prompts[2] + want_ids[2][:11]]


def test_one_turn_returns_the_engines_rollouts_unchanged(tok):
    ro, ep, eng, _ = _guess_setup(tok, [5, 4], [["1", "2"]], max_turns=1)
    assert ro.loss_mask is None and ro.turn_ids is None  # loss mask = completion mask
    assert ep.end_reasons == ["max_turns", "max_turns"] and ep.n_turns == [1, 1]
    env = SingleTurnEnv(None, "plain", {})
    obs = env.reset(Problem("p", "2+3", "5"), 0)
    assert obs.messages == [{"role": "user", "content": "2+3"}]
    assert env.step("5").done


def test_no_number_and_max_tokens(tok):
    class Cfg:
        name, params = "guess_number", {"reward": 2.0}

    (env,) = make_envs(Cfg, None, "plain", 1)
    env.reset(Problem("g", "q", "3"), 0)
    r = env.step("no idea")
    assert r.observation.messages[0]["content"] == "no number" and r.reward == 0.0
    assert env.step("the answer is 3").reward == 2.0
    # a trajectory cap below prompt + turn + hint ends the episode after turn 0
    problems = [Problem("g0", "Guess the number from 1 to 9.", "5")]
    (e,) = make_envs(Cfg, None, "plain", 1)
    prompt = chat_ids(tok, e.reset(problems[0], 0).messages)
    ro, ep = run_episodes(
        [e],
        problems,
        [0],
        [prompt],
        ScriptedEngine(tok, [["1"]]),
        tok,
        SamplingParams(),
        3,
        max_tokens=len(prompt) + 5,
    )
    assert ep.end_reasons == ["max_tokens"] and ep.n_turns == [1]
    assert ENVS.params_model("guess_number")().reward == 1.0


def test_later_turn_logprobs_see_the_whole_conversation(tok):
    """The policy's turn-1 tokens in a trajectory get the log-probs of a one-turn pass whose
    prompt is the whole conversation before them (attention covers the observation tokens)."""
    from grpo_core.config import TinyModelCfg
    from grpo_core.models import build_tiny_model
    from grpo_core.trainer import sequence_logprobs

    model = build_tiny_model(
        TinyModelCfg(
            hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=2
        ),
        tok,
    ).eval()
    ro, ep, _, prompts = _guess_setup(tok, [5, 4, 9], [["5", "3", "7"], ["4", "8"]])
    with torch.no_grad():
        lp, _ = sequence_logprobs(
            model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask
        )
        # episode 1's turn 1 ("4<|end|>", positions 11, 12) from its full context as a prompt
        ctx = prompts[1] + ro.completion_ids[1, :11].tolist()
        p_ids, p_mask = left_pad([ctx], tok.pad_token_id)
        lp1, _ = sequence_logprobs(
            model, p_ids, p_mask, ro.completion_ids[1:2, 11:13], torch.ones(1, 2, dtype=torch.long)
        )
    assert torch.allclose(lp[1, 11:13], lp1[0], atol=1e-5)


def guess_number(hi: int = 3, max_turns: int = 3) -> list[str]:
    """Overrides that put a smoke config on the guess_number env (numbers 1..hi, up to
    max_turns guesses, the env's reward only), 4 new tokens a turn."""
    return [
        "task.name=guess_number",
        "task.template=plain",
        f"task.params={{lo: 1, hi: {hi}}}",
        "env.name=guess_number",
        f"env.max_turns={max_turns}",
        "rewards=[{name: env}]",
        "rollout.max_new_tokens=4",
    ]


def test_a_multi_turn_env_trains_through_the_trainer(smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("grpo", [*guess_number(), "train.steps=2"])
    tr = Trainer(cfg, tmp_path / "run")
    seen = {}
    orig = tr.episodes

    def spy(*a, **k):
        ro, ep = orig(*a, **k)
        seen.setdefault("turns", []).extend(ep.n_turns)
        seen.setdefault("ro", ro)
        return ro, ep

    tr.episodes = spy
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_mean"])
        assert 0.0 <= r["accuracy"] <= 1.0
    # the untrained model rarely guesses right at once: episodes ran several turns, and the
    # loss mask left the hint tokens out
    assert max(seen["turns"]) > 1
    ro = seen["ro"]
    if ro.loss_mask is not None:
        assert int(ro.loss_mask.sum()) < int(ro.completion_mask.sum())


def test_env_config_errors():
    from grpo_core.config import load_config
    from grpo_core.errors import UserError

    with pytest.raises(UserError, match="env.name.*unknown env 'guess'"):
        load_config("grpo", "smoke", ["env.name=guess"])
    with pytest.raises(UserError, match="env.params.rewrd"):
        load_config("grpo", "smoke", ["env.name=guess_number", "env.params={rewrd: 1}"])
    with pytest.raises(UserError, match="env.max_turns"):
        load_config("grpo", "smoke", ["env.max_turns=0"])
    assert isinstance(GuessNumberEnv(None, "plain", {"reward": 1.0}), GuessNumberEnv)
