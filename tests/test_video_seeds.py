"""The video seeds' formulas on hand-computed values (issue 15): TempSamp-R1's non-linear reward
shaping and soft advantage, the temporal grounding questions of video_mc (the move window of a
clip, the IoU grade and its malformed answers, the dual reward of Temporal-RLT) and that the
task's default is today's task item for item. The smoke runs are in test_video_repros.py."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_core.errors import UserError


def test_tempsamp_shape_by_hand():
    """f(r) = tau + 0.01 ln(r - tau + 1) for r >= tau, tau - (e^{a (tau - r)} - 1) / (e - 1)
    below, tau = 0.8, a = 1 (e - 1 = 1.7182818):
    f(0)   = 0.8 - (e^0.8 - 1) / 1.7182818 = 0.8 - 1.2255409 / 1.7182818 = 0.8 - 0.7132366
           = 0.0867634
    f(0.5) = 0.8 - (e^0.3 - 1) / 1.7182818 = 0.8 - 0.3498588 / 1.7182818 = 0.5963902
    f(0.8) = 0.8 (both branches)
    f(1)   = 0.8 + 0.01 ln 1.2 = 0.8 + 0.0018232 = 0.8018232"""
    from grpo_core.advantages import tempsamp_shape

    r = torch.tensor([0.0, 0.5, 0.8, 1.0])
    got = tempsamp_shape(r, threshold=0.8, alpha=1.0, plateau=0.01)
    assert got.tolist() == pytest.approx([0.0867634, 0.5963902, 0.8, 0.8018232], abs=1e-6)
    # monotone and continuous at the threshold
    eps = 1e-4
    lo, hi = tempsamp_shape(torch.tensor([0.8 - eps, 0.8 + eps]), 0.8, 1.0, 0.01).tolist()
    assert lo < 0.8 < hi and hi - lo < 2e-4


def test_tempsamp_advantage_by_hand():
    """GRPO's advantage of the shaped group [0.0867634, 0.5963902, 0.8, 0.8018232]:
    mean 2.2849768 / 4 = 0.5712442; deviations -0.4844808, 0.0251460, 0.2287558, 0.2305790;
    squares sum 0.2347216 + 0.0006323 + 0.0523292 + 0.0531667 = 0.3408498, / 3 = 0.1136166,
    std 0.3370706: A = -1.43733, 0.07460, 0.67866, 0.68407. GRPO on the raw rewards
    [0, 0.5, 0.8, 1] gives -1.32205, -0.17244, 0.51732, 0.97717 (mean 0.575, std 0.434933):
    the shaping lifts the half-right answer above the group mean and makes 0.8 and 1 nearly
    equal ("success is success")."""
    from grpo_core.advantages import compute_advantages_logged
    from grpo_core.schema import AdvantageCfg

    cfg = AdvantageCfg(name="tempsamp", params={"threshold": 0.8, "alpha": 1.0, "plateau": 0.01})
    adv, logs = compute_advantages_logged(torch.tensor([0.0, 0.5, 0.8, 1.0]), 4, cfg)
    assert adv.tolist() == pytest.approx([-1.43733, 0.07460, 0.67866, 0.68407], abs=1e-4)
    assert logs["adv/shaped_mean"] == pytest.approx(0.5712442, abs=1e-6)
    assert logs["adv/frac_plateau"] == pytest.approx(0.5)  # 0.8 and 1.0
    raw, _ = compute_advantages_logged(torch.tensor([0.0, 0.5, 0.8, 1.0]), 4, AdvantageCfg())
    assert raw.tolist() == pytest.approx([-1.32205, -0.17244, 0.51732, 0.97717], abs=1e-4)


def test_tempsamp_advantage_is_grpos_on_binary_rewards():
    """On 0/1 rewards the shaping is affine (0 -> 0.0867634, 1 -> 0.8018232), so the
    group-normalised advantage is grpo's up to eps: the shaping acts only on rewards of more
    than two values (the grounding IoUs)."""
    from grpo_core.advantages import compute_advantages
    from grpo_core.schema import AdvantageCfg

    r = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    soft = compute_advantages(r, 4, AdvantageCfg(name="tempsamp"))
    assert soft.tolist() == pytest.approx(
        compute_advantages(r, 4, AdvantageCfg()).tolist(), abs=1e-5
    )


def test_tempsamp_params_are_checked():
    from grpo_core.advantages import compute_advantages
    from grpo_core.schema import AdvantageCfg

    with pytest.raises(UserError, match="threshold"):
        compute_advantages(
            torch.zeros(4), 4, AdvantageCfg(name="tempsamp", params={"threshold": 1.5})
        )


def test_the_move_window_of_a_clip_by_hand():
    """A 5 px square (r = 2) at x = 10, dx = 2 px a frame, move [1, 2]: still until frame 1,
    one step to frame 2, still after: centres 10, 10, 12, 12, so columns 8..12, 8..12,
    10..14, 10..14. Without "move" every frame is a step (10, 12, 14, 16)."""
    from grpo_core.vision import render_clip

    obj = dict(rgb=[255, 0, 0], shape="square", r=2, x=10, y=10, dx=2, dy=0)
    scene = {"size": 28, "frames": 4, "bg": [0, 0, 0], "objects": [{**obj, "move": [1, 2]}]}

    def cols(clip):
        return [sorted(set(int(c) for c in (f[10, :, 0] > 0).nonzero()[0])) for f in clip]

    assert cols(render_clip(scene)) == [list(range(8, 13))] * 2 + [list(range(10, 15))] * 2
    scene["objects"] = [obj]
    assert cols(render_clip(scene)) == [list(range(c - 2, c + 3)) for c in (10, 12, 14, 16)]


def test_interval_iou_by_hand():
    """Gold "1-3" = frames {1, 2, 3}:
    "1-3" 1 (match); "2-3" |{2,3}| / |{1,2,3}| = 2/3; "0-1" |{1}| / |{0..3}| = 1/4;
    " 1 - 3 " 1 (spaces); "2" the one frame {2}: 1/3; "1-9" frames past the clip count in the
    union: 3 / |{1..9}| = 1/3; "3-1" reversed: 0 (malformed); "B", "1,3", "1-2-3", "-1-3",
    "1.5-3", "" 0 (malformed); no answer 0 (no_answer)."""
    from grpo_core.tasks import interval_iou

    cases = {
        "1-3": (1.0, "match"),
        "2-3": (2 / 3, "mismatch"),
        "0-1": (1 / 4, "mismatch"),
        " 1 - 3 ": (1.0, "match"),
        "2": (1 / 3, "mismatch"),
        "1-9": (1 / 3, "mismatch"),
        "3-1": (0.0, "malformed"),
        "B": (0.0, "malformed"),
        "1,3": (0.0, "malformed"),
        "1-2-3": (0.0, "malformed"),
        "-1-3": (0.0, "malformed"),
        "1.5-3": (0.0, "malformed"),
        "": (0.0, "malformed"),
        None: (0.0, "no_answer"),
    }
    for ans, (score, reason) in cases.items():
        s, why = interval_iou(ans, "1-3")
        assert (s, why) == (pytest.approx(score), reason), ans


def _task(**params):
    from grpo_core.tasks import VideoMC

    return VideoMC(40, 12, 0, {}, None, {"frames": 4, "size": 28, "held_out": "changed", **params})


def test_grounding_zero_is_todays_task_and_the_test_split_never_changes():
    """grounding p replaces train rows by grounding questions drawn from their own stream:
    every other row is the default task's row at the same place, the test split is the
    default's, and the default (no grounding key, or 0) is one task."""
    base = _task()
    assert [p.id for p in _task(grounding=0.0).train()] == [p.id for p in base.train()]
    half = _task(grounding=0.5)
    when = [p for p in half.train() if p.meta["qtype"] == "when"]
    assert 10 <= len(when) <= 30  # about half of 40
    for a, b in zip(half.train(), base.train()):
        if a.meta["qtype"] != "when":
            assert a == b
    assert half.test() == base.test()
    for p in when:
        s, e = (int(x) for x in p.answer.split("-"))
        assert 0 <= s < e <= 3 and p.meta["level"] == "L1" and p.meta["options"] == []
        assert half.sft_target(p) == f"<think>{p.meta['claim']}</think><answer>{p.answer}</answer>"
        assert p.meta["claim"].endswith(f"moves {p.answer}")
        # the target shape is the one moving over the gold window (the first object)
        target = p.meta["scene"]["objects"][0]
        assert target["move"] == [s, e] and p.meta["claim"].split()[0] in p.question


def test_grounding_clip_shows_the_motion_in_the_gold_window():
    """The rendered clip changes between frames f - 1 and f only inside the movers' windows:
    with the target alone (no distractor) exactly for f in s+1..e."""
    from grpo_core.vision import render_clip

    checked = 0
    for p in _task(grounding=1.0).train():
        objs = p.meta["scene"]["objects"]
        if len(objs) != 1:
            continue
        s, e = objs[0]["move"]
        clip = render_clip(p.meta["scene"])
        changed = [f for f in range(1, 4) if (clip[f] != clip[f - 1]).any()]
        assert changed == list(range(s + 1, e + 1)), (p.answer, changed)
        checked += 1
    assert checked >= 5


def test_dual_reward_by_hand():
    """Temporal-RLT's dual reward is the task's grade through reward correctness: 0/1 on a
    multiple-choice clip (gold "B"), the IoU on a grounding clip (gold "1-3"): "B" 1, "C" 0,
    "2-3" 2/3, a bare "1-3" without the answer tag 0 (no answer), a letter to a grounding
    question 0 (malformed)."""
    from grpo_core.rewards import REWARDS, GroupContext
    from grpo_core.tasks import Problem

    t = _task()
    mc = Problem("m", "q", "B", meta={"options": ["1", "2", "3", "4"], "level": "L1",
                                      "qtype": "count"})  # fmt: skip
    tg = Problem("g", "q", "1-3", meta={"options": [], "level": "L1", "qtype": "when"})
    texts = [
        "<think>count 2</think><answer>B</answer>",
        "<think>count 3</think><answer>C</answer>",
        "<think>red moves 2-3</think><answer>2-3</answer>",
        "red moves 1-3",
        "<think>x</think><answer>B</answer>",
    ]
    ctx = GroupContext(
        texts=texts,
        problems=[mc, mc, tg, tg, tg],
        finish_reasons=["stop"] * 5,
        lengths=[1] * 5,
        group_sizes=[5],
        max_new_tokens=8,
        task=t,
    )
    got = REWARDS.get("correctness", "rewards")(ctx).tolist()
    assert got == pytest.approx([1.0, 0.0, 2 / 3, 0.0, 0.0])
    reasons = [g.reason for g in t.grade_texts(texts, ctx.problems)]
    assert reasons == ["match", "mismatch", "mismatch", "no_answer", "malformed"]
    assert math.isclose(t.grade("2-3", tg), 2 / 3)


def test_reference_replace_needs_a_sampled_row(tmp_path):
    """Mode replace with groups of one would leave no sampled row: a clear error."""
    from grpo_core.config import load_config
    from grpo_core.params import ReferenceParams

    assert ReferenceParams().mode == "add"  # GRAO's joined row stays the default
    with pytest.raises(Exception, match="mode"):
        ReferenceParams(mode="swap")
    cfg = load_config("tempsamp_r1", "tiny", [f"run.results_dir={tmp_path}"])
    assert cfg.sampler.params == {"frac": 1.0, "mode": "replace"}
    from types import SimpleNamespace

    from grpo_core.trainer import Trainer

    # the guard runs before the round reads anything but the config and the group sizes
    fake, batch = SimpleNamespace(cfg=cfg), SimpleNamespace(group_sizes=[1, 1])
    with pytest.raises(UserError, match="mode replace: a group of 1 row"):
        Trainer._reference_round(fake, batch, 0, {"frac": 1.0, "mode": "replace"})
