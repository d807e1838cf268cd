"""Wave-1 variants of var-a: hand-computed tests of each mechanism and a smoke run of each
reproduction (seed_grpo, unlikeliness, ada_grpo, grpo_care, mm_upt, ttrv, concise_r, tlts,
s_grpo)."""

import json
import math

import pytest
import torch

from grpo_core.advantages import compute_advantages_logged, semantic_entropy
from grpo_core.config import AdvantageCfg, RewardTerm, load_config
from grpo_core.errors import UserError
from grpo_core.rewards import (
    REWARDS,
    GroupContext,
    answer_token_mask,
    budget_at,
    completion_format,
    compute_rewards,
)
from grpo_core.tasks import Problem, normalise_answer

REPROS = [
    "seed_grpo",
    "unlikeliness",
    "ada_grpo",
    "grpo_care",
    "mm_upt",
    "ttrv",
    "concise_r",
    "tlts",
    "s_grpo",
]


class _Task:
    """Exact-match grader on the gold answer (what arith tasks do for these answers)."""

    def grade(self, answer, problem):
        return float(answer is not None and normalise_answer(answer) == problem.answer)


def _ctx(texts, sizes, gold="83", lengths=None, step=0, total=1, max_new=24):
    n = len(texts)
    golds = gold if isinstance(gold, list) else [gold] * len(sizes)
    probs = []
    for g, size in enumerate(sizes):
        probs += [Problem(id=f"p{g}", question="q", answer=golds[g])] * size
    return GroupContext(
        texts,
        probs,
        ["stop"] * n,
        lengths if lengths is not None else [len(t) for t in texts],
        sizes,
        max_new,
        task=_Task(),
        step=step,
        total_steps=total,
    )


def _with_logp(ctx, lp, which="policy"):
    """Attach per-sequence log-probs as one-token completions: seq_logp_mean == lp."""
    lp = torch.tensor(lp, dtype=torch.float32)[:, None]
    ctx.completion_mask = torch.ones_like(lp, dtype=torch.long)
    ctx.logprob_fn = lambda w: lp
    return ctx


def _reward(name, ctx, **params):
    r, logs = REWARDS.get(name, "test")(ctx, **params)
    return r.tolist(), logs


# ------------------------------------------------------------------ SEED-GRPO


def test_semantic_entropy_count_and_likelihood_mass():
    # count mass: answers 1,1,2,3 -> p = (.5, .25, .25): H = .5 ln 2 + .5 ln 4 = 1.03972
    assert semantic_entropy(["1", "1", "2", "3"]) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(4)
    )
    # likelihood mass: exp(logp) = 3, 3, 1, 1 -> cluster "1" 6/8, cluster "2" 2/8
    # H = -(.75 ln .75 + .25 ln .25) = 0.56234
    lp = torch.tensor([math.log(3), math.log(3), 0.0, 0.0])
    assert semantic_entropy(["1", "1", "2", "2"], lp) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-6
    )
    assert semantic_entropy(["7"] * 4) == 0.0


def test_seed_grpo_advantage_scales_uncertain_groups():
    # group 1: one answer (SE 0, scale 1); group 2: four answers (SE = ln 4 = SE_max)
    ctx = _ctx(["83", "83", "83", "83", "1", "2", "3", "4"], [4, 4])
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    cfg = AdvantageCfg(name="seed_grpo", eps=0.0, params={"alpha": 0.5, "mass": "count"})
    a, logs = compute_advantages_logged(r, 4, cfg, ctx)
    # group 1 GRPO: mean .5, unbiased std sqrt(1/3) -> +-0.86603, times f(0) = 1
    # group 2 GRPO: mean .25, unbiased std sqrt(.75/3) = .5 -> (1.5, -.5, -.5, -.5),
    #   times f(.5 * 1) = 1 - .5 = .5 -> (.75, -.25, -.25, -.25)
    s = 0.5 / math.sqrt(1 / 3)
    assert a.tolist() == pytest.approx([s, -s, s, -s, 0.75, -0.25, -0.25, -0.25], abs=1e-6)
    assert logs == pytest.approx({"adv/se_scale": 0.75, "adv/semantic_entropy": 0.5})
    # other shapes of f at x = .5: e^-.5 and 1 / 1.5
    for f, want in (("exp", math.exp(-0.5)), ("inverse", 1 / 1.5)):
        cfg = AdvantageCfg(
            name="seed_grpo", eps=0.0, params={"alpha": 0.5, "mass": "count", "f": f}
        )
        a, _ = compute_advantages_logged(r, 4, cfg, ctx)
        assert a[4].item() == pytest.approx(1.5 * want)
    with pytest.raises(UserError, match="advantage.params.f"):
        compute_advantages_logged(r, 4, AdvantageCfg(name="seed_grpo", params={"f": "cubic"}), ctx)


def test_seed_grpo_likelihood_mass_uses_policy_logprobs():
    # answers 1,1,2,2 with exp(logp) 3,3,1,1: SE / ln 4 = 0.56234 / 1.38629 = 0.40564
    ctx = _with_logp(_ctx(["1", "1", "2", "2"], [4]), [math.log(3), math.log(3), 0.0, 0.0])
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cfg = AdvantageCfg(name="seed_grpo", eps=0.0, params={"alpha": 1.0})
    a, logs = compute_advantages_logged(r, 4, cfg, ctx)
    x = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)
    # GRPO: mean .5, unbiased std sqrt(1/3): +-0.86603, times 1 - x
    assert a[0].item() == pytest.approx(0.5 / math.sqrt(1 / 3) * (1 - x), abs=1e-6)
    assert logs["adv/semantic_entropy"] == pytest.approx(x, abs=1e-6)


# ------------------------------------------------------------------ unlikeliness


def test_unlikeliness_ranks_by_policy_likelihood():
    # correct = (1, 1, 0, 1); mean log-probs (-1, -3, -5, -2); G = 4, beta = .25
    ctx = _with_logp(_ctx(["83", "83", "7", "83"], [4]), [-1.0, -3.0, -5.0, -2.0])
    # rank over the group, least likely first: i2 (-5) 0, i1 (-3) 1, i3 (-2) 2, i0 (-1) 3
    # term = -beta * r * rank / G: i0 -.25*3/4 = -.1875, i1 -.0625, i2 0 (wrong), i3 -.125
    r, logs = _reward("unlikeliness", ctx, beta=0.25)
    assert r == pytest.approx([-0.1875, -0.0625, 0.0, -0.125])
    assert logs["penalty_correct"] == pytest.approx(-0.375 / 3)
    # rank among the correct ones only: i1 0, i3 1, i0 2 -> -.125, 0, 0, -.0625
    r, _ = _reward("unlikeliness", ctx, beta=0.25, rank_among="correct")
    assert r == pytest.approx([-0.125, 0.0, 0.0, -0.0625])
    # summed with correctness: r' = r * (1 - beta rank / G) = .8125, .9375, 0, .875
    total, logs = compute_rewards(
        [RewardTerm(name="correctness"), RewardTerm(name="unlikeliness")], ctx
    )
    assert total.tolist() == pytest.approx([0.8125, 0.9375, 0.0, 0.875])
    assert "reward/unlikeliness/penalty_correct" in logs
    with pytest.raises(UserError, match="rank_among"):
        _reward("unlikeliness", ctx, rank_among="all")


# ------------------------------------------------------------------ Ada-GRPO (ARM)


def test_completion_format():
    assert completion_format("5+8=13;4+3+1=8;83") == "scratchpad"
    assert completion_format("83") == "direct"
    assert completion_format("<CODE>print(1)", {"code": "<CODE>"}) == "code"


def test_format_diversity_formats_AAAB_at_start_and_end():
    pad = "5+8=13;4+3+1=8;83"  # format A (scratchpad), F = 3; "83" is format B, F = 1; G = 4
    texts = [pad, pad, pad, "83"]
    # t = 0: 1 + cos(0) = 2 -> alpha = 1 + .5 (G/F - 1) 2 = G/F: A 4/3, B 4
    r, logs = _reward("format_diversity", _ctx(texts, [4], step=0, total=10))
    assert r == pytest.approx([1 / 3, 1 / 3, 1 / 3, 3.0])  # (alpha - 1) * r
    assert logs["alpha_mean"] == pytest.approx((3 * 4 / 3 + 4) / 4)
    assert logs["frac_direct"] == pytest.approx(0.25)
    # t = T: 1 + cos(pi) = 0 -> alpha = 1 for every format: no change to correctness
    r, _ = _reward("format_diversity", _ctx(texts, [4], step=10, total=10))
    assert r == pytest.approx([0.0, 0.0, 0.0, 0.0])
    # t = T/2: 1 + cos(pi/2) = 1 -> alpha A = 1 + (1/3)/2 = 7/6, B = 1 + 3/2 = 2.5
    r, _ = _reward("format_diversity", _ctx(texts, [4], step=5, total=10))
    assert r == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1.5])
    # total reward at t = 0 is alpha * r; a wrong rare answer gets nothing
    ctx = _ctx([pad, pad, pad, "84"], [4], step=0, total=10)
    total, _ = compute_rewards(
        [RewardTerm(name="correctness"), RewardTerm(name="format_diversity")], ctx
    )
    assert total.tolist() == pytest.approx([4 / 3, 4 / 3, 4 / 3, 0.0])


# ------------------------------------------------------------------ GRPO-CARE


class _CharTok:
    """Token id = character code; 0 is padding / special."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0)


def _care_ctx(texts, ref_rows):
    ctx = _ctx(texts, [len(texts)])
    c = max(len(t) for t in texts)
    ids = torch.zeros(len(texts), c, dtype=torch.long)
    for i, t in enumerate(texts):
        ids[i, : len(t)] = torch.tensor([ord(ch) for ch in t])
    ctx.completion_ids, ctx.completion_mask = ids, (ids != 0).long()
    ctx.tokenizer = _CharTok()
    ref = torch.tensor(ref_rows, dtype=torch.float32)
    ctx.logprob_fn = lambda which: ref if which == "ref" else torch.zeros_like(ref)
    return ctx


def test_care_consistency_bonus_against_group_mean_confidence():
    texts = ["1+2=83", "83", "x83", "84"]  # correct: 1, 1, 1, 0 (gold 83)
    a, b, h = math.log(0.9), math.log(0.5), -5.0  # h: non-answer tokens (must be ignored)
    ref = [
        [h, h, h, h, a, a],  # answer "83" at positions 4, 5: p = .9
        [b, b, h, h, h, h],  # positions 0, 1: p = .5
        [h, 0.0, 0.0, h, h, h],  # positions 1, 2: p = 1 -> capped at .95
        [b, b, h, h, h, h],  # wrong answer
    ]
    ctx = _care_ctx(texts, ref)
    assert answer_token_mask(ctx)[0].tolist() == [False] * 4 + [True, True]
    assert answer_token_mask(ctx)[2].tolist() == [False, True, True, False, False, False]
    # high-accuracy: r > .1 and r >= mean r (.75): rows 0, 1, 2; their mean p
    # (.9 + .5 + .95) / 3 = .78333; threshold .78333 - .01 = .77333 -> rows 0 and 2
    r, logs = _reward("care_consistency", ctx, bonus=0.5, margin=0.01, conf_cap=0.95)
    assert r == pytest.approx([0.5, 0.0, 0.5, 0.0])
    assert logs["bonus_frac"] == pytest.approx(0.5)
    assert logs["answer_conf"] == pytest.approx((0.9 + 0.5 + 0.95) / 3, abs=1e-6)
    # an all-wrong group gets no bonus
    r, _ = _reward("care_consistency", _care_ctx(["84", "85"], [[b, b], [b, b]]))
    assert r == [0.0, 0.0]


# ------------------------------------------------------------------ MM-UPT, TTRV


def test_majority_vote_reward():
    # group 1 (gold 7): 7, 7.0, 8, no answer -> majority 7 (7.0 is the same number): 1, 1, 0, 0
    # group 2 (gold 83): 1, 2, 2, 1 -> tie 2:2, the answer seen first (1) wins: 1, 0, 0, 1
    ctx = _ctx(["7", "7.0", "8", "x", "1", "2", "2", "1"], [4, 4], gold=["7", "83"])
    r, logs = _reward("majority_vote", ctx)
    assert r == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert logs["label_acc"] == pytest.approx(0.5)  # group 1's majority is right, group 2's not


def test_answer_frequency_reward_with_entropy_term():
    # p(7) = 2/4, p(8) = 1/4, no answer 0; H = -(.5 ln .5 + .25 ln .25) = .69315 = ln 4 / 2
    ctx = _ctx(["7", "7", "8", "x"], [4], gold="7")
    r, logs = _reward("answer_frequency", ctx)
    assert r == pytest.approx([0.5, 0.5, 0.25, 0.0])
    assert logs["entropy"] == pytest.approx(0.5)
    # entropy_weight 1: every member loses H / ln G = .5
    r, _ = _reward("answer_frequency", ctx, entropy_weight=1.0)
    assert r == pytest.approx([0.0, 0.0, -0.25, -0.5])


# ------------------------------------------------------------------ length rewards


def test_concise_length_only_in_stage_two_and_all_correct_groups():
    texts = ["83"] * 4 + ["83", "83", "84", "83"]
    lengths = [4, 10, 20, 24, 2, 2, 2, 2]
    # start_frac .6 of 10 steps: stage 2 from step 6
    r, logs = _reward(
        "concise_length", _ctx(texts, [4, 4], lengths=lengths, step=5, total=10), start_frac=0.6
    )
    assert r == [0.0] * 8 and logs == {"stage": 1.0, "frac_all_correct": 0.5}
    # stage 2: (L_max - L) / L_max = 20/24, 14/24, 4/24, 0 in the all-correct group only
    r, logs = _reward(
        "concise_length", _ctx(texts, [4, 4], lengths=lengths, step=6, total=10), start_frac=0.6
    )
    assert r == pytest.approx([20 / 24, 14 / 24, 4 / 24, 0.0, 0, 0, 0, 0])
    assert logs["stage"] == 2.0


def test_budget_schedule_and_reward():
    # B = max(b_min, b0 * gamma^floor(t / every))
    assert [budget_at(t, 24, 0.5, 10) for t in (0, 9, 10, 25)] == [24, 24, 12, 6]
    assert budget_at(40, 24, 0.5, 10, b_min=4) == 4  # 24 / 16 = 1.5 -> floored at 4
    # step 10, b0 12, gamma .5, every 10: B = 6; lengths 3, 6, 9, 13:
    # 1, 1, 1 - 3/6 = .5, max(0, 1 - 7/6) = 0; the 4th is wrong anyway
    ctx = _ctx(["83", "83", "83", "84"], [4], lengths=[3, 6, 9, 13], step=10, total=20)
    r, logs = _reward("budget_length", ctx, b0=12, gamma=0.5, every=10)
    assert r == pytest.approx([1.0, 1.0, 0.5, 0.0]) and logs["budget"] == 6.0
    assert logs["frac_within"] == pytest.approx(0.5)
    ctx = _ctx(["84"] * 4, [4], lengths=[3, 6, 9, 13], step=10, total=20)
    r, _ = _reward("budget_length", ctx, b0=12, gamma=0.5, every=10, only_correct=False)
    assert r == pytest.approx([1.0, 1.0, 0.5, 0.0])  # paid regardless of correctness
    with pytest.raises(UserError, match="budget_length"):
        _reward("budget_length", ctx, every=0)


def test_serial_decay_over_length_order():
    # correct: 1, 1, 0, 1, 1 with lengths 10, 4, 2, 4, 18. Walking from the shortest correct:
    # L=4 (two, k = 1): 1 each; L=10 (k = 1 + 2 shorter): 1/4; L=18 (k = 4): 1/8; wrong: 0
    ctx = _ctx(["83", "83", "84", "83", "83"], [5], lengths=[10, 4, 2, 4, 18])
    r, logs = _reward("serial_decay", ctx)
    assert r == pytest.approx([0.25, 1.0, 0.0, 1.0, 0.125])
    assert logs["len_correct"] == pytest.approx((10 + 4 + 4 + 18) / 4)


def test_compute_rewards_logs_term_diagnostics():
    ctx = _ctx(["7", "7", "8", "x"], [4], gold="7")
    total, logs = compute_rewards(
        [RewardTerm(name="correctness"), RewardTerm(name="majority_vote", weight=0.5)], ctx
    )
    # correctness 1, 1, 0, 0 + .5 * majority 1, 1, 0, 0
    assert total.tolist() == [1.5, 1.5, 0.0, 0.0]
    assert logs == {
        "reward/correctness": 0.5,
        "reward/majority_vote": 0.5,
        "reward/majority_vote/label_acc": 1.0,
    }


# ------------------------------------------------------------------ configs and smoke runs


@pytest.mark.parametrize("repro", REPROS)
def test_config_resolves_for_every_profile(repro):
    for profile in ("smoke", "tiny", "tiny_cot", "small", "paper"):
        cfg = load_config(repro, profile)
        assert cfg.meta.wave == 1 and cfg.meta.claims


SMOKE = {
    # reproduction: (extra overrides, diagnostics that must be logged)
    "seed_grpo": ([], ["adv/se_scale", "adv/semantic_entropy", "adv_abs_mean"]),
    "unlikeliness": ([], ["reward/unlikeliness/penalty_correct"]),
    "ada_grpo": ([], ["reward/format_diversity/alpha_mean", "reward/format_diversity/frac_direct"]),
    "grpo_care": (
        ["model.ref_ema={decay: 0.5, every: 1}"],
        [
            "reward/care_consistency/bonus_frac",
            "reward/care_consistency/answer_conf",
            "ref_ema_update",
        ],
    ),
    "mm_upt": ([], ["reward/majority_vote/label_acc"]),
    "ttrv": ([], ["reward/answer_frequency/entropy"]),
    "concise_r": (
        ["train.steps=3"],
        ["reward/concise_length/stage", "reward/concise_length/frac_all_correct"],
    ),
    "tlts": ([], ["reward/budget_length/budget", "reward/budget_length/frac_within"]),
    "s_grpo": ([], ["reward/serial_decay/len_correct"]),
}


@pytest.mark.parametrize("repro", REPROS)
def test_smoke_run(repro, smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    extra, keys = SMOKE[repro]
    cfg = smoke_cfg(repro, ["train.steps=2", *extra])
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == cfg.train.steps
    assert list((tmp_path / "run" / "checkpoint").glob("*.safetensors"))
    for k in keys:
        vals = [r[k] for r in rows]
        assert all(math.isfinite(v) for v in vals), (k, vals)
    if repro == "concise_r":  # the stage switch (60% of 3 steps) is reached at step 2
        assert [r["reward/concise_length/stage"] for r in rows] == [1.0, 1.0, 2.0]
    if repro == "tlts":
        assert rows[0]["reward/budget_length/budget"] == 24.0
