"""The wave-1 video-paper reproductions on their own domain (issue 15): each trains 2 steps on
the tiny_video profile (tiny VLM, video_mc clips in the prompts) and logs its mechanism's
metric; the profile's workflow lists them; their video claims are judged on video_mc only."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_video import VIDEO_RUN

VIDEO_REPROS = ["grpo_care", "tw_grpo", "reg_grpo", "vade", "mmr1_vas", "grpo_d", "mm_upt", "ttrv"]
# the video seeds built for tiny_video (meta.profile: tiny_video; no tiny claims)
VIDEO_SEEDS = ["tempsamp_r1", "temporal_r1"]


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """Factory of smoke-sized tiny_video configs of a reproduction (2 steps, 2 x 2 rollouts,
    16 training clips); the SFT start is built once by `grpo prepare` and shared."""
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("video_repro_results")

    def make(slug, overrides=()):
        return load_config(slug, "tiny_video", [f"run.results_dir={res}", *VIDEO_RUN, *overrides])

    prepare(make("grpo"), log=lambda *a: None)
    return make


def _train(cfg, run_dir, spy_rollouts):
    """Train; return the metrics rows and the first step's rollouts (``spy_rollouts``: the
    conftest fixture)."""
    from grpo_core.trainer import Trainer

    tr = Trainer(cfg, run_dir)
    assert tr.policy.kind == "vlm"
    seen = spy_rollouts(tr)
    tr.train(progress=False)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
    ro = seen["ro"]
    assert ro.media is not None and all(m is not None for m in ro.media)  # clips in the batch
    return tr, rows


def test_the_video_repros_are_in_the_tiny_video_workflow():
    from grpo_core.config import load_config

    wf = load_config("grpo", "tiny_video").workflow.reproductions
    assert wf[0] == "grpo" and set(VIDEO_REPROS) <= set(wf)
    assert set(VIDEO_SEEDS) <= set(wf)


# slug -> (its mechanism's metric, a check on the 2 rows)
MECHANISM = {
    # the EMA reference's confidence in the answer tokens, the bonus share in [0, 1]
    "grpo_care": (
        "reward/care_consistency/bonus_frac",
        lambda rows: all(0.0 <= r["reward/care_consistency/bonus_frac"] <= 1.0 for r in rows),
    ),
    # token weights in [1, alpha = 1.4]
    "tw_grpo": ("tw/max", lambda rows: all(1.0 <= r["tw/max"] <= 1.4 + 1e-6 for r in rows)),
    # 2 minibatches per batch (the second sees rho != 0); the difficulty-aware augmentation
    # draws at most the step's 2 prompts again and still trains 2 groups of 2
    "reg_grpo": (
        "sampler/n_harder",
        lambda rows: all(
            r["n_train_seqs"] == 4 and 0 <= r["sampler/n_harder"] + r["sampler/n_easier"] <= 2
            for r in rows
        ),
    ),
    # Beta-posterior information gain theta(1 - theta) <= 1/4
    "vade": (
        "sampler/gain_mean",
        lambda rows: all(0.0 <= r["sampler/gain_mean"] <= 0.25 for r in rows),
    ),
    "mmr1_vas": (
        "sampler/frac_scored",
        lambda rows: all(0.0 <= r["sampler/frac_scored"] <= 1.0 for r in rows),
    ),
    # beta 0.01 -> 0.07 linear over the run: rises
    "grpo_d": (
        "kl_beta",
        lambda rows: rows[0]["kl_beta"] == pytest.approx(0.01) and rows[1]["kl_beta"] > 0.01,
    ),
    # pseudo-labels from the group's letter answers, graded against the gold
    "mm_upt": (
        "reward/majority_vote/label_acc",
        lambda rows: all(0.0 <= r["reward/majority_vote/label_acc"] <= 1.0 for r in rows),
    ),
    # normalised entropy of the group's letter answers
    "ttrv": (
        "reward/answer_frequency/entropy",
        lambda rows: all(0.0 <= r["reward/answer_frequency/entropy"] <= 1.0 for r in rows),
    ),
}


@pytest.mark.parametrize("slug", VIDEO_REPROS)
def test_video_repro_trains_on_video_and_logs_its_mechanism(slug, make_cfg, tmp_path, spy_rollouts):
    cfg = make_cfg(slug)
    assert cfg.task.name == "video_mc" and cfg.env.name == "video_mc"
    tr, rows = _train(cfg, tmp_path / "run", spy_rollouts)
    key, check = MECHANISM[slug]
    assert key in rows[0] and key in rows[1], sorted(rows[0])
    assert check(rows), [r[key] for r in rows]
    if slug == "grpo_care":
        assert tr.ref is not None and tr.ref.kind == "ema"
    if slug == "tw_grpo":  # the paper's soft multiple-choice credit on video
        assert [(r.name, r.params) for r in cfg.rewards] == [("correctness", {"choice": "soft"})]
    if slug == "reg_grpo":
        assert cfg.loss.name == "reg_grpo" and cfg.train.minibatches == 2
        assert cfg.sampler.name == "difficulty_aug"


def test_video_claims_are_on_video_mc():
    from evals.claims import Claim
    from grpo_core.config import load_config

    for slug in VIDEO_REPROS:
        claims = [Claim.model_validate(c) for c in load_config(slug, "tiny_video").meta.claims]
        benches = {c.benchmark for c in claims}
        assert "arith_mix" in benches  # the tiny claims stay
        video = [c for c in claims if c.benchmark == "video_mc"]
        assert video, slug
        assert {c.metric for c in video} <= {"acc_L1", "acc_L2", "acc_L3", "consistency"}


def test_claims_of_another_profiles_benchmark_are_skipped():
    """On tiny_video the arith_mix claims have no summary rows: skipped (not judged), while a
    measured benchmark's missing metric stays 'not measured'."""
    import pandas as pd

    from evals.claims import INCONCLUSIVE, SUPPORTED, Claim, judge

    def row(repro, d, lo, hi, metric):
        return dict(reproduction=repro, benchmark="video_mc", metric=metric, n_seeds=3,
                    delta_vs_grpo=d, delta_ci_low=lo, delta_ci_high=hi)  # fmt: skip

    summary = pd.DataFrame(
        [row("grpo", 0, 0, 0, "consistency"), row("grpo_care", 0.1, 0.02, 0.18, "consistency")]
    )
    claims = {
        "grpo_care": [
            Claim(text="tiny", benchmark="arith_mix", metric="avg@4"),
            Claim(text="cons", benchmark="video_mc", metric="consistency"),
            Claim(text="l3", benchmark="video_mc", metric="acc_L3"),
        ]
    }
    got = {v.text: v for v in judge(summary, claims)}
    assert set(got) == {"cons", "l3"}
    assert got["cons"].verdict == SUPPORTED
    assert got["l3"].verdict == INCONCLUSIVE and "not measured" in got["l3"].note


def test_soft_choice_correctness_by_hand():
    """TW-GRPO's soft multiple-choice credit: gold "A,C" (|G| = 2): "A" is a subset, 1/2;
    "C, A" the set itself, 1 (the task's exact match gives it 0: other text); "A,B" not a
    subset, 0; no answer tag, 0. Gold "B" (one letter): the task's grade, "B" 1, "B,C" 0."""
    from grpo_core.errors import UserError
    from grpo_core.rewards import REWARDS, GroupContext
    from grpo_core.tasks import Problem, VideoMC

    t = VideoMC(1, 1, 0, {}, None, {"frames": 4, "size": 28, "held_out": "changed"})
    opts = {"options": ["right", "left", "up", "down"], "level": "L1"}
    multi, single = Problem("m", "q", "A,C", meta=opts), Problem("s", "q", "B", meta=opts)
    texts = [
        "<think>x</think><answer>A</answer>",
        "<think>x</think><answer>C, A</answer>",
        "<think>x</think><answer>A,B</answer>",
        "A",
        "<think>x</think><answer>B</answer>",
        "<think>x</think><answer>B,C</answer>",
    ]
    ctx = GroupContext(
        texts=texts,
        problems=[multi] * 4 + [single] * 2,
        finish_reasons=["stop"] * 6,
        lengths=[1] * 6,
        group_sizes=[6],
        max_new_tokens=8,
        task=t,
    )
    fn = REWARDS.get("correctness", "rewards")
    exact = fn(ctx).tolist()
    assert exact == [0, 0, 0, 0, 1, 0]
    assert fn(ctx, choice="soft").tolist() == [0.5, 1, 0, 0, 1, 0]
    with pytest.raises(UserError, match="choice must be exact or soft"):
        fn(ctx, choice="partial")


# ------------------------------------------------------------------ the video seeds


def _spy_batches(tr):
    """Record the batch each step trains on (after the sampler's extra round)."""
    seen = []
    orig = tr.score

    def spy(batch, step, stats):
        seen.append(batch)
        return orig(batch, step, stats)

    tr.score = spy
    return seen


def test_tempsamp_r1_injects_the_gold_in_place_of_the_last_sample(make_cfg, tmp_path):
    """TempSamp-R1 on video: every group of G = 2 is one sample + the gold completion (the
    task's SFT target), marked off-policy, with the prompt's clip; the groups keep G rows;
    the shaped-advantage and missed-group metrics are logged."""
    from grpo_core.trainer import Trainer

    cfg = make_cfg("tempsamp_r1")
    assert cfg.task.name == "video_mc" and cfg.sampler.params["mode"] == "replace"
    assert cfg.advantage.name == "tempsamp" and cfg.loss.kl.beta == 0.0
    tr = Trainer(cfg, tmp_path / "run")
    batches = _spy_batches(tr)
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for b in batches:
        assert b.group_sizes == [2, 2]
        assert b.off_policy.tolist() == [False, True, False, True]
        for k in (1, 3):  # the last row of each group: the gold, for that group's prompt
            p = b.problems[k]
            assert p.id == b.problems[k - 1].id
            assert b.rollouts.texts[k] == tr.task.sft_target(p)
            assert torch.equal(b.rollouts.prompt_ids[k], b.rollouts.prompt_ids[k - 1])
        assert all(m is not None for m in b.rollouts.media)  # the clip goes with the gold too
        assert b.rewards[1] == 1.0 and b.rewards[3] == 1.0  # scored like a sample: correct
    for r in rows:
        assert math.isfinite(r["loss"]) and r["extra/n_reference"] == 2.0
        assert 0.0 <= r["extra/frac_groups_missed"] <= 1.0
        # shaped rewards lie in [f(0), f(1)] = [0.0868, 0.8018]
        assert 0.086 <= r["adv/shaped_mean"] <= 0.802
        assert r["adv/frac_plateau"] >= 0.5  # the gold (reward 1) of every group at least


def test_temporal_r1_trains_grounding_clips_through_the_variance_filter(make_cfg, tmp_path):
    """Temporal-RLT on video, with task.params.grounding 1 (every training clip a grounding
    question, graded by IoU). The answers are scripted (the sampled tokens stay, their texts,
    which the reward reads, are set): in a round of two groups the first answers "B" twice
    (malformed: IoU 0, 0; reward std 0: rejected by the filter), every other group the gold
    "s-e" and the one frame "s-s" (IoU 1 and 1 / (e - s + 1): std >= 0.25, kept). So step 1
    keeps one group in round 1 and draws one more prompt in round 2: 2 rounds, 1 of 3 sampled
    groups at zero std, and the trained rewards are the IoUs."""
    from grpo_core.tasks import interval_iou
    from grpo_core.trainer import Trainer

    cfg = make_cfg("temporal_r1", ["task.params={frames: 4, size: 28, grounding: 1.0}"])
    assert cfg.sampler.filter.name == "reward_std" and cfg.sampler.max_rounds == 3
    tr = Trainer(cfg, tmp_path / "run")
    assert {p.meta["qtype"] for p in tr.train_set} == {"when"}
    orig = tr.episodes

    def scripted(row_idx, *a, **k):
        ro, ep = orig(row_idx, *a, **k)
        n, texts = len(row_idx) // 2, []
        for g in range(n):
            gold = tr.train_set[row_idx[2 * g]].answer
            if n > 1 and g == 0:
                texts += ["<think>x</think><answer>B</answer>"] * 2
            else:
                s = gold.split("-")[0]
                texts += [f"<answer>{gold}</answer>", f"<answer>{s}</answer>"]
        ro.texts = texts
        return ro, ep

    tr.episodes = scripted
    batches = _spy_batches(tr)
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and len(batches) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and r["gen_rounds"] == 2
        assert r["frac_zero_std_sampled"] == pytest.approx(1 / 3)
        assert r["frac_zero_std_groups"] == 0.0
    for b in batches:
        want = [interval_iou(_tag(t), p.answer)[0] for t, p in zip(b.rollouts.texts, b.problems)]
        assert b.rewards.tolist() == pytest.approx(want)
        assert b.rewards[0::2].tolist() == [1.0, 1.0]  # the gold
        assert all(0.0 < x <= 0.5 for x in b.rewards[1::2].tolist())  # one frame of >= 2


def _tag(text):
    from grpo_core.grader import last_answer_tag

    a = last_answer_tag(text)
    return a.strip() if a is not None else None


def test_temporal_r1_defaults_on_tiny_video():
    from grpo_core.config import load_config

    cfg = load_config("temporal_r1", "tiny_video")
    assert cfg.task.params == {"frames": 4, "size": 28, "grounding": 0.25}
    assert [r.name for r in cfg.rewards] == ["correctness"]  # the dual reward: the task's grade


def test_video_seed_claims_are_on_video_mc_or_train():
    from evals.claims import Claim
    from grpo_core.config import load_config, reproduction_meta

    for slug in VIDEO_SEEDS:
        assert reproduction_meta(slug)["profile"] == "tiny_video"
        claims = [Claim.model_validate(c) for c in load_config(slug, "tiny_video").meta.claims]
        assert {c.benchmark for c in claims} == {"video_mc", "train"}
        assert {c.metric for c in claims if c.benchmark == "video_mc"} <= {
            "acc_L1", "acc_L2", "acc_L3", "consistency"
        }  # fmt: skip
