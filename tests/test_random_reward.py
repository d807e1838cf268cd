"""The spurious-reward control (reward random_reward, reproductions/random_reward): Bernoulli
draws at the batch's success rate, independent of correctness, deterministic for a fixed run
seed and resume-exact."""

import json
import math

import pytest
import torch

from grpo_core.config import load_config
from grpo_core.rewards import GroupContext, random_reward
from grpo_core.tasks import Problem
from grpo_core.trainer import TIMING_FIELDS, Trainer


class _Exact:
    def grade(self, answer, problem):
        return float(answer is not None and answer.strip() == problem.answer)


def _ctx(n_right, n, seed=0, step=0, g=8):
    """n completions in groups of g, the first n_right of them correct ("7"), the rest "3"."""
    texts = ["7" if i < n_right else "3" for i in range(n)]
    probs = [Problem(id=f"p{i // g}", question="3+4=", answer="7") for i in range(n)]
    return GroupContext(
        texts,
        probs,
        ["stop"] * n,
        [1] * n,
        g,
        4,
        task=_Exact(),
        step=step,
        indices=[i // g for i in range(n)],
        seed=seed,
    )


def test_bernoulli_at_the_batch_success_rate_independent_of_correctness():
    n, right = 4000, 1000  # success rate p = 1000 / 4000 = 0.25
    r, logs = random_reward(_ctx(right, n))
    assert r.shape == (n,) and set(r.unique().tolist()) <= {0.0, 1.0}
    assert logs["p"] == pytest.approx(0.25)
    # mean of 4000 Bernoulli(0.25): sd sqrt(.25 * .75 / 4000) = 0.00685; allow 4 sd = 0.027
    assert abs(float(r.mean()) - 0.25) < 0.027
    # independent of correctness: the rate among the 1000 correct (sd 0.0137) and the 3000 wrong
    # (sd 0.0079) completions is 0.25 in both, within 4 sd
    assert abs(float(r[:right].mean()) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / right)
    assert abs(float(r[right:].mean()) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / (n - right))
    # agreement with correctness: p * p + (1 - p) * (1 - p) = 0.0625 + 0.5625 = 0.625
    assert logs["agree"] == pytest.approx(0.625, abs=0.03)
    # the edges: nobody right -> all 0; everybody right -> all 1
    assert random_reward(_ctx(0, 64))[0].sum() == 0
    assert random_reward(_ctx(64, 64))[0].sum() == 64


def test_deterministic_for_a_fixed_seed_and_different_across_seeds_and_steps():
    a, _ = random_reward(_ctx(32, 64, seed=5, step=3))
    b, _ = random_reward(_ctx(32, 64, seed=5, step=3))
    assert torch.equal(a, b)  # same run seed, step and batch: the same draw
    assert not torch.equal(a, random_reward(_ctx(32, 64, seed=6, step=3))[0])
    assert not torch.equal(a, random_reward(_ctx(32, 64, seed=5, step=4))[0])
    # a sub-context (a sampler's selection) keeps the run seed
    assert _ctx(32, 64, seed=5).select(list(range(8))).seed == 5


def test_reproduction_differs_from_grpo_only_in_the_reward():
    g, c = load_config("grpo", "tiny"), load_config("random_reward", "tiny")
    assert [t.name for t in c.rewards] == ["random_reward"]
    skip = {"meta", "rewards", "reproduction", "base"}
    assert g.model_dump(exclude=skip) == c.model_dump(exclude=skip)
    gp, cp = load_config("grpo", "paper"), load_config("random_reward", "paper")
    assert gp.model_dump(exclude=skip) == cp.model_dump(exclude=skip)
    assert c.meta.tier == "control"
    assert {x.direction for x in c.meta.claims} == {"lower"}
    assert "random_reward" in g.workflow.reproductions
    assert "random_reward" in load_config(None, "tiny_cot").workflow.reproductions


def _metrics(d):
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in set(TIMING_FIELDS)} for r in rows]


def test_training_runs_are_deterministic_and_resume_exact(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg("random_reward", ["train.steps=3", "train.checkpoint_every=1"])
    Trainer(cfg, tmp_path / "a").train(progress=False)
    Trainer(cfg, tmp_path / "b").train(progress=False)
    ma = _metrics(tmp_path / "a")
    assert ma == _metrics(tmp_path / "b") and len(ma) == 3
    assert all("reward/random_reward/p" in r for r in ma)
    t = Trainer(cfg, tmp_path / "crash")
    orig = t.train_step

    def crashing(step):
        if step == 2:
            raise RuntimeError("simulated crash")
        return orig(step)

    monkeypatch.setattr(t, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        t.train(progress=False)
    monkeypatch.undo()
    t2 = Trainer(cfg, tmp_path / "crash")
    assert t2.step == 2
    t2.train(progress=False)
    assert _metrics(tmp_path / "crash") == ma
