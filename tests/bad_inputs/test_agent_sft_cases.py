"""Bad inputs of multi-turn SFT and agent metrics: an env with no gold for a problem, an empty
gold path, episodes without a success flag."""

from __future__ import annotations

import pytest

from evals.agent import agent_metrics
from grpo_core.episodes import Episodes, GuessNumberEnv
from grpo_core.errors import UserError
from grpo_core.models import build_char_tokenizer
from grpo_core.prepare import gold_conversation, multi_turn_rows
from grpo_core.tasks import Problem, make_task

GUESS = [
    "task.name=guess_number",
    "task.template=plain",
    "task.n_train=3",
    "task.n_test=1",
    "task.params={lo: 1, hi: 9}",
]


def test_no_gold_for_a_problem_names_env_and_problem(smoke_cfg, monkeypatch):
    cfg = smoke_cfg("grpo", [*GUESS, "env.name=guess_number", "env.max_turns=3"])
    task = make_task(cfg.task)
    monkeypatch.setattr(GuessNumberEnv, "gold_actions", lambda self, p: None)
    with pytest.raises(UserError, match=r"env.name=guess_number: no gold actions for problem "):
        multi_turn_rows(cfg, task, task.train(), build_char_tokenizer())


def test_guess_number_rows_are_the_answer(smoke_cfg):
    # the same config without the patch: one row per problem, the answer + EOS labelled
    cfg = smoke_cfg("grpo", [*GUESS, "env.name=guess_number", "env.max_turns=3"])
    task = make_task(cfg.task)
    tok = build_char_tokenizer()
    rows = multi_turn_rows(cfg, task, task.train(), tok)
    for p, (_, comp, labels) in zip(task.train(), rows):
        assert comp == labels == tok.encode(p.answer, add_special_tokens=False) + [tok.eos_token_id]


def test_empty_gold_path():
    class NoGold(GuessNumberEnv):
        def gold_actions(self, problem):
            return []

    p = Problem("g9", "Guess the number from 1 to 9.", "3")
    env = NoGold(None, "plain", {"reward": 1.0})
    with pytest.raises(UserError, match="NoGold: no gold actions for problem g9"):
        gold_conversation(env, p, 0, build_char_tokenizer(), 4)


def test_agent_metrics_without_success():
    ep = Episodes([[None]], [1], [{}], [["x"]], ["done"])
    with pytest.raises(ValueError, match=r"every episode's success \(info\['success'\]\)"):
        agent_metrics(ep)
