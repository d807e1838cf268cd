"""reg_grpo's difficulty-aware augmentation (DeepVideo-R1, sampler ``difficulty_aug``): the
difficulty decision against the EMA reference, which prompts are drawn again perturbed (a noisy
clip) or hinted (a reasoning cue), the hint text, determinism, the default left unchanged, and
smoke runs on text (smoke profile, arith_mix) and video (a shrunken tiny_video)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grpo_core.config import SamplerCfg
from grpo_core.errors import UserError
from grpo_core.params import VideoMCParams
from grpo_core.samplers import (
    difficulty_decision,
    ema_update,
    hint_pieces,
    make_sampler,
)
from grpo_core.tasks import ArithMix, Problem, VideoMC, render_prompt

PARAMS = {"decay": 0.9, "easy": 1.0, "hard": 0.0, "margin": 0.1, "noise": 0.15, "hint_frac": 0.5}


def _aug(n=4, seed=0, max_rounds=2, **params):
    cfg = SamplerCfg(name="difficulty_aug", max_rounds=max_rounds, params={**PARAMS, **params})
    return make_sampler(cfg, n, seed)


def _video(n_train=4):
    return VideoMC(n_train, 3, 0, {}, None, VideoMCParams().model_dump())


def _show(s, idx, task, train):
    """The problems the trainer would show for the round's prompts (Trainer.row_problems)."""
    return [s.augment(i, task.hinted(train[i], s.hint(i, train[i], task)), task) for i in idx]


def _acc(*rows):
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


# ------------------------------------------------------------------ the rule, hand-computed


def test_difficulty_decision_ema_and_hint_pieces_hand_computed():
    # defaults of reg_grpo: easy 1.0, hard 0.0, margin 0.1
    assert difficulty_decision(1.0, 0.6, 1.0, 0.0, 0.1) == 1  # all right, 1 >= 0.7
    assert difficulty_decision(0.0, 0.6, 1.0, 0.0, 0.1) == -1  # all wrong, 0 <= 0.5
    assert difficulty_decision(0.5, 0.6, 1.0, 0.0, 0.1) == 0  # mixed: as it is
    assert difficulty_decision(7 / 8, 0.6, 1.0, 0.0, 0.1) == 0  # nearly all right: below easy
    # the reference: all right is the typical level (ref 0.95 > 1 - 0.1): not made harder
    assert difficulty_decision(1.0, 0.95, 1.0, 0.0, 0.1) == 0
    assert difficulty_decision(0.0, 0.05, 1.0, 0.0, 0.1) == 0  # all wrong is typical
    # looser thresholds: easy 0.75, margin 0: 0.75 is too easy against ref 0.7, not 0.8
    assert difficulty_decision(0.75, 0.7, 0.75, 0.25, 0.0) == 1
    assert difficulty_decision(0.75, 0.8, 0.75, 0.25, 0.0) == 0
    assert difficulty_decision(0.25, 0.2, 0.75, 0.25, 0.0) == 0  # below hard, above ref
    assert difficulty_decision(0.25, 0.3, 0.75, 0.25, 0.0) == -1
    # EMA: the first step's mean, then 0.9 ref + 0.1 m
    assert ema_update(None, 0.4, 0.9) == 0.4
    assert ema_update(0.4, 0.9, 0.9) == pytest.approx(0.45)  # 0.36 + 0.09
    assert ema_update(0.45, 0.0, 0.5) == pytest.approx(0.225)
    # ceil(frac n), at least one piece
    assert [hint_pieces(n, 0.5) for n in (0, 1, 2, 3, 4)] == [0, 1, 1, 2, 2]
    assert hint_pieces(3, 1.0) == 3 and hint_pieces(5, 0.2) == 1 and hint_pieces(5, 0.21) == 2


def test_video_hint_text_is_the_cue_then_the_claim():
    t = _video()
    d = Problem("d", "Which way does the red shape move?", "B",
                {"qtype": "direction", "claim": "red moves left", "scene": {}})  # fmt: skip
    assert t.hint_parts(d) == [
        "Compare where the red shape is in the first and the last frame.",
        "red moves left.",
    ]
    assert t.hint_text(d, 1) == "Compare where the red shape is in the first and the last frame."
    assert render_prompt("plain", t.hinted(d, t.hint_text(d, 1))) == (
        "Which way does the red shape move?\n"
        "Hint: Compare where the red shape is in the first and the last frame."
    )
    c = Problem("c", "q", "C", {"qtype": "count", "claim": "count 3"})
    assert t.hint_parts(c) == ["Count the shapes in one frame.", "count 3."]
    w = Problem("w", "q", "1-2", {"qtype": "when", "claim": "green moves 1-2"})
    assert t.hint_parts(w)[0] == "Find the frames in which the green shape changes place."
    assert t.hint_parts(Problem("x", "q", "A", {})) == []  # not a video_mc row: its own hints
    # every train row of the task has both pieces (its rationale)
    assert all(len(t.hint_parts(p)) == 2 for p in t.train())


def test_perturbed_clip_noise_seeded_answer_kept():
    from grpo_core import vision
    from grpo_core.episodes import clip_frames

    t = _video()
    p = t.train()[0]
    q = t.perturbed(p, 0.15, 7)
    assert q.meta["perturb"] == {"noise": 0.15, "seed": 7} and "perturb" not in p.meta
    assert (q.id, q.question, q.answer, q.meta["scene"]) == (p.id, p.question, p.answer,
                                                             p.meta["scene"])  # fmt: skip
    plain, noisy = clip_frames(p, "video_mc"), clip_frames(q, "video_mc")
    assert np.array_equal(plain, vision.render_clip(p.meta["scene"]))  # no perturb: as before
    assert noisy.dtype == np.uint8 and noisy.shape == plain.shape
    assert np.array_equal(noisy, clip_frames(t.perturbed(p, 0.15, 7), "video_mc"))  # one seed
    assert not np.array_equal(noisy, clip_frames(t.perturbed(p, 0.15, 8), "video_mc"))
    # the noise is what it says: std 0.15 * 255 = 38.25 before clipping; on the interior pixels
    # (0 < x < 255 after noise) the mean difference is ~0
    diff = noisy.astype(float) - plain.astype(float)
    inner = (noisy > 0) & (noisy < 255)
    assert abs(diff[inner].mean()) < 5.0 and 25.0 < diff[inner].std() < 45.0
    # a hand case: one pixel, noise 0.1 from default_rng(3)
    e = np.random.default_rng(3).normal(0.0, 25.5, size=(1, 1, 1, 3))
    x = np.full((1, 1, 1, 3), 100, np.uint8)
    assert vision.perturb_clip(x, 0.1, 3).tolist() == np.clip(np.rint(100 + e), 0, 255).tolist()
    assert vision.perturb_clip(x, 0.0, 3) is x
    with pytest.raises(UserError, match="noise=-0.1: must be >= 0"):
        vision.perturb_clip(x, -0.1, 3)
    # text: no sound perturbation
    assert ArithMix(0, 0, 0, {}, None).perturbed(Problem("a", "q", "1"), 0.15, 0) is None


# ------------------------------------------------------------------ the sampler, one step by hand


def test_sampler_decides_redraws_and_logs_hand_computed():
    from grpo_core.runtime import derive_seed

    t = _video()
    train = t.train()
    s = _aug()
    idx = s.next_prompts(4)
    assert sorted(idx) == [0, 1, 2, 3]
    first = _show(s, idx, t, train)
    assert all(a is train[i] for a, i in zip(first, idx))  # plain draws: the items themselves
    # means 1, 0, 0.5, 0.75 -> step 0's reference is their mean 0.5625; margin 0.1:
    # 1 >= max(1, 0.6625): harder; 0 <= min(0, 0.4625): easier; the others as they are
    keep = s.keep(
        [torch.zeros(4)] * 4, _acc([1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0])
    )
    assert keep.tolist() == [False, False, True, True] and s.ref_now == pytest.approx(0.5625)
    again = s.next_prompts(2)
    assert again == idx[:2]
    hard_p, easy_p = _show(s, again, t, train)
    # the too-easy prompt: its clip perturbed with this step's seed, no hint
    assert hard_p.meta["perturb"] == {"noise": 0.15, "seed": derive_seed(0, 0, idx[0], 0xDA)}
    assert hard_p.hint is None and hard_p.question == train[idx[0]].question
    # the too-hard prompt: the first of its 2 rationale pieces (hint_frac 0.5), clip as it is
    assert easy_p.hint == "\nHint: " + t.hint_parts(train[idx[1]])[0]
    assert "perturb" not in easy_p.meta
    # the last round: kept whatever the rewards (the perturbed one now varies, the hinted not)
    assert s.keep([torch.zeros(4)] * 2, _acc([1, 0, 1, 1], [0, 0, 0, 0])).tolist() == [True] * 2
    logs = s.update({"step": 0})
    assert logs == {
        "ref_level": pytest.approx(0.5625),
        "n_harder": 1.0,
        "n_easier": 1.0,
        "frac_perturbed": 0.25,
        "frac_hinted": 0.25,
        "aug_nonzero_std": 0.5,
    }
    # step 1: means 1, 1, 0, 0.5 decided against 0.5625; the EMA then moves to
    # 0.9 * 0.5625 + 0.1 * 0.625 = 0.56875
    idx = s.next_prompts(4)
    _show(s, idx, t, train)
    keep = s.keep([torch.zeros(4)] * 4, _acc([1, 1], [1, 1], [0, 0], [1, 0]))
    assert keep.tolist() == [False, False, False, True]
    again = s.next_prompts(3)
    shown = _show(s, again, t, train)
    assert [("perturb" in p.meta, p.hint is not None) for p in shown] == [
        (True, False), (True, False), (False, True)
    ]  # fmt: skip
    assert shown[0].meta["perturb"]["seed"] == derive_seed(0, 1, idx[0], 0xDA)  # a new step
    s.keep([torch.zeros(2)] * 3, _acc([1, 1], [1, 0], [0, 1]))
    logs = s.update({"step": 1})
    assert logs["ref_level"] == pytest.approx(0.56875)
    assert (logs["n_harder"], logs["n_easier"]) == (2.0, 1.0)
    assert logs["aug_nonzero_std"] == pytest.approx(2 / 3)
    # exact resume: the reference and the step travel in the state
    r = _aug()
    r.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert (r.ref, r.step) == (s.ref, s.step) and r.next_prompts(4) == s.next_prompts(4)


def test_text_prompts_only_get_easier():
    """On arithmetic the harder side is a no-op (no perturbation keeps the answer): an
    all-right group is kept; an all-wrong two-term sum is drawn again with the first
    scratchpad step; a prompt without hint material is kept as it is."""
    t = ArithMix(0, 0, 0, {}, None)
    train = [
        Problem("a", "q", "83", {"expression": "45+38"}),
        Problem("b", "q", "6", {"expression": "1+2+3"}),  # no scratchpad pieces
        Problem("c", "q", "24", {"expression": "12+12"}),
    ]
    s = _aug(n=3)
    idx = s.next_prompts(3)
    assert _show(s, idx, t, train) == [train[i] for i in idx]
    acc = {0: [0, 0], 1: [0, 0], 2: [1, 1]}
    keep = s.keep([torch.zeros(2)] * 3, _acc(*[acc[i] for i in idx]))
    assert keep.tolist() == [i != 0 for i in idx]
    (p,) = _show(s, s.next_prompts(1), t, train)
    assert render_prompt("expr", p) == "45+38=5+8=13;" and "perturb" not in p.meta
    s.keep([torch.zeros(2)], _acc([1, 0]))
    logs = s.update({"step": 0})
    assert (logs["n_harder"], logs["n_easier"], logs["frac_hinted"]) == (0.0, 1.0, 1 / 3)


def test_same_seed_same_augmentations_other_seed_other_noise():
    t = _video(8)
    train = t.train()

    def run(seed):
        s, out = _aug(n=8, seed=seed), []
        for step in range(3):
            idx = s.next_prompts(4)
            _show(s, idx, t, train)
            s.keep([torch.zeros(2)] * 4, _acc([1, 1], [0, 0], [1, 0], [1, 1]))
            again = s.next_prompts(3)
            shown = _show(s, again, t, train)
            s.keep([torch.zeros(2)] * 3, _acc([1, 0], [1, 0], [1, 0]))
            s.update({"step": step})
            out.append((idx, again, [(p.meta.get("perturb"), p.hint) for p in shown]))
        return out

    a, b, c = run(0), run(0), run(1)
    assert a == b
    noise = lambda r: [x for _, _, sh in r for x, _ in sh if x is not None]  # noqa: E731
    assert noise(a) and {x["seed"] for x in noise(a)}.isdisjoint({x["seed"] for x in noise(c)})


def test_bad_settings_are_refused_with_what_would_be_right():
    with pytest.raises(UserError, match="sampler.max_rounds=1: .*set sampler.max_rounds: 2"):
        _aug(max_rounds=1)
    with pytest.raises(UserError, match="hard 1.0 >= easy 1.0: want hard < easy"):
        _aug(hard=1.0)
    from grpo_core.config import load_config

    with pytest.raises(UserError, match=r"sampler\.params\.noise.*less than or equal to 1"):
        load_config("reg_grpo", "smoke", ["sampler.params.noise=2"])
    with pytest.raises(UserError, match="decides which groups are kept itself"):
        make_sampler(
            SamplerCfg(name="difficulty_aug", max_rounds=2, filter={"name": "nonzero_std"}), 4, 0
        )


# ------------------------------------------------------------------ default off, and the repro


def test_default_off_leaves_items_and_rows_unchanged(smoke_cfg):
    """Without the sampler nothing is augmented (grpo's rows are the train items); video_mc's
    items carry no perturbation; reg_grpo's first-round rows are the items themselves."""
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    assert load_config("grpo", "tiny_video").sampler.name == "uniform"
    assert all("perturb" not in p.meta for p in _video(16).train() + _video(16).test())
    g = Trainer(smoke_cfg("grpo"), None)
    assert not hasattr(g.sampler, "augment")
    assert all(a is b for a, b in zip(g.row_problems([0, 1]), g.train_set[:2]))
    r = Trainer(smoke_cfg("reg_grpo"), None)
    idx = r.sampler.next_prompts(2)
    assert all(a is r.train_set[i] for a, i in zip(r.row_problems(idx), idx))


def test_reg_grpo_sets_the_augmentation_on_every_profile():
    from grpo_core.config import load_config

    for profile in ("tiny", "tiny_video", "paper"):
        c = load_config("reg_grpo", profile)
        assert c.sampler.name == "difficulty_aug" and c.sampler.max_rounds == 2, profile
        assert c.sampler.params == PARAMS | {"metric": "acc"}


def test_text_smoke_hints_all_wrong_sums(smoke_cfg, tmp_path):
    """reg_grpo on the smoke profile's arithmetic (two-term sums): thresholds that make every
    group below the reference too hard (easy 2, hard 1, margin 0) draw at least one prompt
    again hinted each step; the counters are in the metrics."""
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg(
        "reg_grpo",
        ["train.steps=2", "task.difficulty={add2: 1}",
         "sampler.params={easy: 2.0, hard: 1.0, margin: 0.0}"],
    )  # fmt: skip
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and r["sampler/n_harder"] == 0.0  # text: no harder side
        assert r["sampler/n_easier"] >= 1 and r["gen_rounds"] == 2
        assert r["sampler/frac_hinted"] == r["sampler/n_easier"] / 4  # 4 prompts a step
        assert 0.0 <= r["frac_zero_std_groups"] <= 1.0 and r["n_train_seqs"] == 16


@pytest.fixture(scope="module")
def video_cfg(tmp_path_factory):
    """Smoke-sized tiny_video configs of reg_grpo (2 steps, 2 x 2 rollouts, 16 training clips:
    tests/test_video.py's VIDEO_RUN); the SFT start is built once."""
    from test_video import VIDEO_RUN

    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("reg_aug_video")

    def make(slug, overrides=()):
        return load_config(slug, "tiny_video", [f"run.results_dir={res}", *VIDEO_RUN, *overrides])

    prepare(make("grpo"), log=lambda *a: None)
    return make


@pytest.mark.parametrize(
    "side, params",
    [("harder", "{easy: 0.0, hard: -1.0, margin: 0.0}"),  # every group at or above the level
     ("easier", "{easy: 2.0, hard: 1.0, margin: 0.0}")],  # every group at or below it
    ids=["harder", "easier"],
)  # fmt: skip
def test_video_smoke_augments_and_logs(side, params, video_cfg, tmp_path, monkeypatch):
    """reg_grpo on a shrunken tiny_video with thresholds that make step 0's best (worst) group
    too easy (too hard): it is drawn again in round 2 with a noisy clip (a reasoning cue); the
    env renders the noise; the counters are in the metrics and 2 groups are trained a step."""
    from grpo_core import episodes, vision
    from grpo_core.trainer import Trainer

    cfg = video_cfg("reg_grpo", [f"sampler.params={params}"])
    assert cfg.sampler.name == "difficulty_aug" and cfg.env.name == "video_mc"
    clips = []
    orig = episodes.clip_frames

    def spy(problem, env_name):
        frames = orig(problem, env_name)
        clips.append((problem, frames))
        return frames

    monkeypatch.setattr(episodes, "clip_frames", spy)
    tr = Trainer(cfg, tmp_path / "run")
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    keys = ["ref_level", "n_harder", "n_easier", "frac_perturbed", "frac_hinted",
            "aug_nonzero_std"]  # fmt: skip
    for r in rows:
        assert all(math.isfinite(r[f"sampler/{k}"]) for k in keys), sorted(r)
        assert math.isfinite(r["loss"]) and r["n_train_seqs"] == 4
        assert 0.0 <= r["frac_zero_std_groups"] <= 1.0
    first = rows[0]
    noisy = [(p, f) for p, f in clips if "perturb" in p.meta]
    hinted = [p for p, _ in clips if p.hint]
    if side == "harder":
        assert first["sampler/n_harder"] >= 1 and first["sampler/n_easier"] == 0
        assert first["sampler/frac_perturbed"] == first["sampler/n_harder"] / 2
        assert noisy and not hinted
        p, f = noisy[0]
        assert not np.array_equal(f, vision.render_clip(p.meta["scene"]))
    else:
        assert first["sampler/n_easier"] >= 1 and first["sampler/n_harder"] == 0
        assert first["sampler/frac_hinted"] == first["sampler/n_easier"] / 2
        assert hinted and not noisy
        assert hinted[0].hint.startswith("\nHint: ") and hinted[0].hint[7:] in VIDEO_CUE_TEXTS
    assert first["gen_rounds"] == 2


def _cue_texts():
    from grpo_core.tasks import VIDEO_CUES

    return {c.format(target=t) for c in VIDEO_CUES.values() for t in
            ("red", "green", "blue", "yellow")}  # fmt: skip


VIDEO_CUE_TEXTS = _cue_texts()
