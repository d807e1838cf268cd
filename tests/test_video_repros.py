"""The wave-1 video-paper reproductions on their own domain (issue 15): each trains 2 steps on
the tiny_video profile (tiny VLM, video_mc clips in the prompts) and logs its mechanism's
metric; the profile's workflow lists them; their video claims are judged on video_mc only."""

from __future__ import annotations

import json
import math

import pytest
from test_video import VIDEO_RUN

VIDEO_REPROS = ["grpo_care", "tw_grpo", "reg_grpo", "vade", "mmr1_vas", "grpo_d", "mm_upt", "ttrv"]


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


def _train(cfg, run_dir):
    """Train; return the metrics rows and the first step's rollouts."""
    from grpo_core.trainer import Trainer

    tr = Trainer(cfg, run_dir)
    assert tr.policy.kind == "vlm"
    seen = {}
    orig = tr.episodes

    def spy(*a, **k):
        ro, ep = orig(*a, **k)
        seen.setdefault("ro", ro)
        return ro, ep

    tr.episodes = spy
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


# slug -> (its mechanism's metric, a check on the 2 rows)
MECHANISM = {
    # the EMA reference's confidence in the answer tokens, the bonus share in [0, 1]
    "grpo_care": (
        "reward/care_consistency/bonus_frac",
        lambda rows: all(0.0 <= r["reward/care_consistency/bonus_frac"] <= 1.0 for r in rows),
    ),
    # token weights in [1, alpha = 1.4]
    "tw_grpo": ("tw/max", lambda rows: all(1.0 <= r["tw/max"] <= 1.4 + 1e-6 for r in rows)),
    # 2 minibatches per batch (the second sees rho != 0)
    "reg_grpo": ("n_train_seqs", lambda rows: all(r["n_train_seqs"] == 4 for r in rows)),
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
def test_video_repro_trains_on_video_and_logs_its_mechanism(slug, make_cfg, tmp_path):
    cfg = make_cfg(slug)
    assert cfg.task.name == "video_mc" and cfg.env.name == "video_mc"
    tr, rows = _train(cfg, tmp_path / "run")
    key, check = MECHANISM[slug]
    assert key in rows[0] and key in rows[1], sorted(rows[0])
    assert check(rows), [r[key] for r in rows]
    if slug == "grpo_care":
        assert tr.ref is not None and tr.ref.kind == "ema"
    if slug == "tw_grpo":  # the paper's soft multiple-choice credit on video
        assert [(r.name, r.params) for r in cfg.rewards] == [("correctness", {"choice": "soft"})]
    if slug == "reg_grpo":
        assert cfg.loss.name == "reg_grpo" and cfg.train.minibatches == 2


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
