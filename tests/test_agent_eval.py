"""Agent evaluation (evals.agent, evals.evaluate on a multi-turn env): success rate, score,
steps and end reasons with bootstrap CIs over episodes, by hand on written episodes and on twx
with a scripted policy (gold on one game, an invalid action on the other) and the tiny model."""

from __future__ import annotations

import json

import pytest
import textworld_express  # noqa: F401  (a declared dependency: fail, never skip)
from test_episodes import scripted_rollouts

from evals.agent import agent_metrics
from grpo_core import twx
from grpo_core.episodes import Episodes
from grpo_core.rollout import RolloutEngine


def test_agent_metrics_by_hand():
    # 4 episodes: won in 2 turns, lost at max_turns (3 turns), won at once, cut by length
    ep = Episodes(
        turn_rewards=[[0.0, 1.0], [0.0, 0.0, 0.0], [1.0], [None]],
        n_turns=[2, 3, 1, 1],
        infos=[{"success": True}, {"success": False}, {"success": True}, {"success": False}],
        turn_texts=[["a", "b"], ["c", "d", "e"], ["f"], ["g"]],
        end_reasons=["done", "max_turns", "done", "length"],
    )
    a = agent_metrics(ep)
    m = a["metrics"]
    # success 2/4; score (1 + 0 + 1 + 0) / 4; steps (2 + 3 + 1 + 1) / 4 = 1.75
    assert m["success_rate"] == 0.5 and m["score_mean"] == 0.5 and m["steps_mean"] == 1.75
    assert a["end_reasons"] == {"done": 2, "max_turns": 1, "length": 1, "max_tokens": 0}
    assert m["end_rate/done"] == 0.5 and m["end_rate/length"] == 0.25
    assert m["end_rate/max_tokens"] == 0.0
    assert set(a["ci"]) == set(m)
    for k, (lo, hi) in a["ci"].items():
        assert lo <= m[k] <= hi
    assert a["ci"]["end_rate/max_tokens"] == [0.0, 0.0]  # no spread: a point
    lo, hi = a["ci"]["steps_mean"]
    assert 1.0 <= lo < 1.75 < hi <= 3.0
    ep.infos[1] = {}
    with pytest.raises(ValueError, match="success"):
        agent_metrics(ep)


class GoldEngine(RolloutEngine):
    """Plays each game's scripted actions: the episode is recognised by its first observation
    (a prefix of every later prompt), the turn by the <|assistant|> tokens after it."""

    def __init__(self, tok, plans: list[tuple[list[int], list[str]]]):
        self.tok, self.plans = tok, plans
        self.asst = tok.get_vocab()["<|assistant|>"]

    def generate(self, prompts, params):
        texts = []
        for p in prompts:
            ((p0, acts),) = [(q, a) for q, a in self.plans if p[: len(q)] == q]
            turn = p[len(p0) :].count(self.asst)
            texts.append(acts[min(turn, len(acts) - 1)])
        return scripted_rollouts(self.tok, prompts, texts)


TWX = [
    "task.name=twx_coin",
    "task.template=plain",
    "task.n_train=2",
    "task.n_test=2",
    "task.params={locations_min: 3, locations_max: 4}",
    "env.name=twx",
    "env.max_turns=6",
    "rewards=[{name: env}]",
    "eval.k=2",
    "rollout.max_new_tokens=12",
]


def test_evaluate_twx_scripted(smoke_cfg, tmp_path, monkeypatch):
    import evals.evaluate as E
    from grpo_core.episodes import chat_ids, make_envs
    from grpo_core.models import build_char_tokenizer
    from grpo_core.tasks import make_task

    cfg = smoke_cfg("grpo", TWX)
    tok = build_char_tokenizer()
    test = make_task(cfg.task).test()
    (env,) = make_envs(cfg.env, None, "plain", 1)
    firsts = [chat_ids(tok, env.reset(p, 0).messages) for p in test]
    gold = twx.coin_shortest_path(twx.spec_of(test[0].meta))
    # game 0: the shortest path (wins); game 1: an invalid action every turn (max_turns)
    engine = GoldEngine(tok, [(firsts[0], gold), (firsts[1], ["jump"])])
    monkeypatch.setattr(E, "_load_engine", lambda cfg, model_dir: (tok, engine))
    res = E.evaluate(cfg, "scripted", tmp_path / "eval")
    m = res["metrics"]
    # 4 episodes (2 games x k = 2): two wins, two losses
    assert m["success_rate"] == m["avg@2"] == 0.5
    assert m["score_mean"] == 0.5
    assert m["steps_mean"] == (2 * len(gold) + 2 * 6) / 4
    assert res["end_reasons"] == {"done": 2, "max_turns": 2, "length": 0, "max_tokens": 0}
    assert m["end_rate/done"] == 0.5
    for k in ("success_rate", "score_mean", "steps_mean", "end_rate/done", "avg@2"):
        lo, hi = res["ci"][k]
        assert lo <= m[k] <= hi
    on_disk = json.loads((tmp_path / "eval" / "twx_coin.json").read_text())
    assert on_disk["metrics"] == m and on_disk["end_reasons"] == res["end_reasons"]
    lines = (tmp_path / "eval" / "twx_coin.samples.jsonl").read_text().splitlines()
    samples = [json.loads(x) for x in lines]
    assert [s["turns"] for s in samples] == [len(gold)] * 2 + [6] * 2
    assert [s["end_reason"] for s in samples] == ["done"] * 2 + ["max_turns"] * 2
    assert [s["env_score"] for s in samples] == [1.0, 1.0, 0.0, 0.0]
    assert samples[0]["actions"] == gold and samples[2]["actions"] == ["jump"] * 6
    assert [s["correct"] for s in samples] == [True, True, False, False]


def test_evaluate_twx_tiny_model(smoke_cfg, tmp_path):
    from evals.evaluate import evaluate
    from grpo_core.models import build_char_tokenizer, build_tiny_model

    cfg = smoke_cfg("grpo", [*TWX, "env.max_turns=3", "rollout.max_new_tokens=6"])
    tok = build_char_tokenizer()
    build_tiny_model(cfg.model.tiny, tok, seed=0).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    res = evaluate(cfg, tmp_path / "m", tmp_path / "eval")
    m, n = res["metrics"], 4
    assert m["success_rate"] == m["avg@2"]
    assert sum(res["end_reasons"].values()) == n
    assert 1.0 <= m["steps_mean"] <= 3.0
    assert sum(m[f"end_rate/{r}"] for r in res["end_reasons"]) == pytest.approx(1.0)
    for k in ("success_rate", "score_mean", "steps_mean"):
        lo, hi = res["ci"][k]
        assert lo <= m[k] <= hi


def test_report_agent_table_from_a_summary():
    """The report's agent table: success in percent with its seed CI, steps and searches as
    numbers, the success delta paired by seed when the summary has pairs (else Welch); only
    for a benchmark with success_rate."""
    import pandas as pd

    from evals.report import _agent_table

    def row(repro, metric, mean, lo, hi, **kw):
        base = dict(
            reproduction=repro,
            benchmark="search_qa",
            metric=metric,
            mean=mean,
            ci_low=lo,
            ci_high=hi,
            n_seeds=3,
            delta_vs_grpo=float("nan"),
            delta_ci_low=float("nan"),
            delta_ci_high=float("nan"),
            n_paired=0,
            paired_delta=float("nan"),
            paired_ci_low=float("nan"),
            paired_ci_high=float("nan"),
        )
        return {**base, **kw}

    sub = pd.DataFrame(
        [
            row("grpo", "success_rate", 0.5, 0.4, 0.6, delta_vs_grpo=0.0),
            row("grpo", "steps_mean", 2.5, 2.25, 2.75),
            row("grpo", "searches_mean", 1.25, 1.0, 1.5),
            row(
                "e_grpo",
                "success_rate",
                0.55,
                0.45,
                0.65,
                delta_vs_grpo=0.05,
                delta_ci_low=-0.1,
                delta_ci_high=0.2,
                n_paired=3,
                paired_delta=0.05,
                paired_ci_low=0.01,
                paired_ci_high=0.09,
            ),
            row("e_grpo", "steps_mean", 2.0, 1.5, 2.5),
            row(
                "rloo",
                "success_rate",
                0.45,
                0.35,
                0.55,
                delta_vs_grpo=-0.05,
                delta_ci_low=-0.2,
                delta_ci_high=0.1,
                n_paired=1,
                paired_delta=-0.05,
            ),
            row("rloo", "avg@4", 0.45, 0.35, 0.55),
        ]
    )
    t = _agent_table(sub, "search_qa", ["grpo", "e_grpo", "rloo"])
    assert t.header == [
        "reproduction",
        "success (%)",
        "steps",
        "searches",
        "Δ success vs grpo (pts)",
        "seeds",
    ]
    assert t.rows[0] == ["grpo", "50.0 [40.0, 60.0]", "2.5 [2.25, 2.75]", "1.25 [1, 1.5]", "", "3"]
    assert t.rows[1] == [
        "e_grpo",
        "55.0 [45.0, 65.0]",
        "2 [1.5, 2.5]",
        "",
        "+5.0 [+1.0, +9.0] (paired)",
        "3",
    ]
    assert t.rows[2][-2] == "-5.0 [-20.0, +10.0] (Welch)"  # one seed pair: Welch
    assert _agent_table(sub[sub.metric == "avg@4"], "search_qa", ["rloo"]) is None
