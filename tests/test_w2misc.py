"""Wave-2 reproductions of w2misc (issue 16): gcpo (GeometryZero's group contrastive masking of
the auxiliary-construction reward + length reward, task geo_angles, profile tiny_geo),
oncoreason (rationale + format rewards on the clinic_mix task mix, profile tiny_clinic) and
pta_grpo (PTA-GRPO's plan success-rate reward, profile tiny_clinic).
Hand-computed tests of each mechanism, the task's generator and grade, and smoke runs."""

import json
import math

import pytest

from grpo_core.config import load_config
from grpo_core.rewards import REWARDS, GroupContext
from grpo_core.schema import TaskCfg
from grpo_core.tasks import Problem, has_aux, make_task, normalise_answer


class _Task:
    """Exact match of the last number with the gold answer."""

    def grade(self, answer, problem):
        return float(answer is not None and normalise_answer(answer) == problem.answer)


def _ctx(texts, sizes, golds, lengths, max_new_tokens=8):
    probs = []
    for g, size in enumerate(sizes):
        probs += [Problem(f"p{g}", f"q{g}", golds[g])] * size
    n = len(texts)
    return GroupContext(texts, probs, ["stop"] * n, lengths, sizes, max_new_tokens, _Task())


# ------------------------------------------------------------------ gcpo


def test_has_aux_needs_a_non_empty_tagged_span():
    assert has_aux("<aux>36+85=121</aux>180-121=59")
    assert not has_aux("<aux></aux>59")  # empty: no construction
    assert not has_aux("<aux>36+85=121 59")  # never closed
    assert not has_aux("</aux>1<aux>")  # closed before opened
    assert not has_aux("59")
    assert has_aux("[c]x[/c]1", "[c]", "[/c]")


def test_gcpo_reward_hand_computed():
    # group 0 (gold 59): aux right (L 4), aux wrong (L 8), plain right (L 2), plain wrong (L 2)
    #   acc+ = 1/2, acc- = 1/2: gap 0, not > eta = 0 -> m = 0
    #   r = w_len min(1, L/8) on right ones: [.2 * 4/8, 0, .2 * 2/8, 0] = [.1, 0, .05, 0]
    # group 1 (gold 10): aux right (L 4), aux right (L 16), plain wrong, empty tag wrong
    #   (an empty span is no construction): acc+ = 1, acc- = 0 -> m = +1
    #   r = [.2 + .2 * 4/8, .2 + .2 * min(1, 2), 0, 0] = [.3, .4, 0, 0]
    # group 2 (gold 7): aux wrong (L 4), plain right (L 2): acc+ 0, acc- 1 -> m = -1
    #   r = [-.2, .2 * 2/8] = [-.2, .05]
    # group 3 (gold 1): two aux completions, no plain one: nothing to contrast -> m = 0
    #   r = [.2 * 8/8, 0] = [.2, 0]
    texts = [
        "<aux>36+85=121</aux>180-121=59", "<aux>36+85=120</aux>180-120=60", "59", "58",
        "<aux>1</aux>10", "<aux>2</aux>10", "11", "<aux></aux>12",
        "<aux>x</aux>5", "7",
        "<aux>a</aux>1", "<aux>b</aux>2",
    ]  # fmt: skip
    lengths = [4, 8, 2, 2, 4, 16, 2, 2, 4, 2, 8, 8]
    ctx = _ctx(texts, [4, 4, 2, 2], ["59", "10", "7", "1"], lengths)
    fn = REWARDS.get("gcpo")
    r, logs = fn(ctx, **REWARDS.resolve_params("gcpo", {}, "rewards[1].params"))
    want = [0.1, 0, 0.05, 0, 0.3, 0.4, 0, 0, -0.2, 0.05, 0.2, 0]
    assert r.tolist() == pytest.approx(want)
    # groups with m = +1: 1 of 4, m = -1: 1 of 4; 7 of 12 construct (0, 1, 4, 5, 8, 10, 11)
    assert logs["mask_pos"] == pytest.approx(0.25) and logs["mask_neg"] == pytest.approx(0.25)
    assert logs["aux_rate"] == pytest.approx(7 / 12)
    # len mean: (.5 + .25 + .5 + 1 + .25 + 1) / 12 = 3.5 / 12
    assert logs["len"] == pytest.approx(3.5 / 12)


def test_gcpo_eta_and_length_options_hand_computed():
    # one group of 4 (gold 3): aux right, aux wrong, aux right, plain wrong; L = 4 each
    #   acc+ = 2/3, acc- = 0: gap .667 > eta .5 -> m = +1; eta .7: gap not > .7 -> m = 0
    texts = ["<aux>1</aux>3", "<aux>1</aux>4", "<aux>2</aux>3", "5"]
    ctx = _ctx(texts, [4], ["3"], [4, 4, 4, 4])
    fn = REWARDS.get("gcpo")
    r, _ = fn(ctx, eta=0.5, w_aux=1.0, w_len=0.0)
    assert r.tolist() == pytest.approx([1, 1, 1, 0])
    r, _ = fn(ctx, eta=0.7, w_aux=1.0, w_len=0.0)
    assert r.tolist() == pytest.approx([0, 0, 0, 0])
    # len_on all, len_target 2: every completion min(1, 4/2) = 1 -> w_len each
    r, _ = fn(ctx, eta=0.7, w_aux=1.0, w_len=0.5, len_target=2, len_on="all")
    assert r.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_geo_angles_task_generates_reasoning_gym_polygons():
    task = make_task(TaskCfg(name="geo_angles", n_train=40, n_test=10, seed=3))
    rows = task.train() + task.test()
    assert len(task.train()) == 40 and len(task.test()) == 10
    assert len({p.id for p in rows}) == 50
    for p in rows:
        known, total = p.meta["known"], p.meta["total"]
        assert total == (180 if p.meta["level"] == "tri" else 360)
        assert len(known) == (2 if total == 180 else 3)
        assert int(p.answer) == total - sum(known)  # reasoning-gym's answer
        assert p.question == ("tri: " if total == 180 else "quad: ") + ", ".join(map(str, known))
    p = Problem("x", "tri: 36, 85", "59", {"level": "tri", "known": [36, 85], "total": 180})
    assert task.aux_target(p) == "<aux>36+85=121</aux>180-121=59"
    g = task.grade_texts(["<aux>36+85=121</aux>180-121=59", "59", "<aux>36+85=121</aux>", "x"],
                         [p] * 4)  # fmt: skip
    # the last number is the answer: the construction alone ("121") is wrong
    assert [x.score for x in g] == [1.0, 1.0, 0.0, 0.0]
    assert [x.reason for x in g] == ["match", "match", "mismatch", "no_answer"]
    # aux_frac: 0 -> every target plain, 1 -> every target constructed
    t0 = make_task(TaskCfg(name="geo_angles", n_train=20, n_test=2, params={"aux_frac": 0.0}))
    t1 = make_task(TaskCfg(name="geo_angles", n_train=20, n_test=2, params={"aux_frac": 1.0}))
    assert all(t0.sft_target(p) == p.answer for p in t0.train())
    assert all(t1.sft_target(p).startswith("<aux>") for p in t1.train())


# ------------------------------------------------------------------ profiles at smoke size

SMALL = [
    "run.threads=1",
    "workflow.seeded_start=false",
    'model.tiny={"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, '
    '"num_heads": 2, "num_kv_heads": 2, "tokenizer": "bpe", "vocab_size": 320}',
    "task.n_train=48",
    "task.n_test=8",
    "sft.steps=20",
    "sft.batch_size=16",
    "rollout.group_size=4",
    "rollout.prompts_per_step=4",
    "train.steps=2",
    "train.micro_batch_size=16",
]


def _profile_run(profile, repro, tmp_path, keys):
    """SFT at smoke size under ``profile``, then two steps of ``repro``: finite metrics and
    the reward terms' logs."""
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    ov = [f"run.results_dir={tmp_path}", *SMALL]
    prepare(load_config(None, profile, ov), threads=1, log=lambda *a: None)
    t = Trainer(load_config(repro, profile, ov), tmp_path / "run")
    t.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(math.isfinite(r["loss"]) for r in rows)
    for k in keys:
        assert all(k in r and math.isfinite(r[k]) for r in rows), k
    assert (tmp_path / "run" / "checkpoint" / "training_state" / "state.json").exists()
    return rows


def test_tiny_geo_profile_sft_then_gcpo_steps(tmp_path):
    assert load_config("grpo", "tiny_geo").task.name == "geo_angles"
    assert load_config("gcpo", "tiny_geo").workflow.reproductions == ["grpo", "gcpo"]
    rows = _profile_run(
        "tiny_geo", "gcpo", tmp_path, ["reward/gcpo/mask_pos", "reward/gcpo/aux_rate"]
    )
    assert all(0 <= r["reward/gcpo/aux_rate"] <= 1 for r in rows)


def test_gcpo_config_resolves_under_every_profile():
    from grpo_core.config import validate_profile_overrides

    for profile in ("smoke", "tiny", "small", "paper", "tiny_geo"):
        cfg = load_config("gcpo", profile)
        assert cfg.meta.wave == 2 and cfg.meta.profile == "tiny_geo"  # its home profile
        assert [r.name for r in cfg.rewards] == ["correctness", "gcpo"]
        assert len(cfg.meta.claims) >= 1
    validate_profile_overrides("gcpo")


# ------------------------------------------------------------------ oncoreason


def test_clinic_labels_hand_computed():
    from grpo_core.tasks import clinic_labels

    # size 4 -> T2, nodes 2 -> N1: stage II; age 67 (old), grade 3, a node: 3 points -> high;
    # survive: not III but high risk -> no
    lab = clinic_labels(67, 4, 2, 3)
    assert lab == {"stage": ("T2 N1", "II"), "risk": ("old g3 n+", "high"),
                   "survive": ("II high", "no")}  # fmt: skip
    # size 2 -> T1, no nodes -> N0: stage I; age 40, grade 1: no points -> low; survive yes
    assert clinic_labels(40, 2, 0, 1) == {
        "stage": ("T1 N0", "I"), "risk": ("none", "low"), "survive": ("I low", "yes")
    }  # fmt: skip
    # size 6 -> T3 (III); nodes 4 -> N2 (III) even at T1; age 65 is old; one point -> mid
    assert clinic_labels(65, 6, 0, 2)["stage"] == ("T3 N0", "III")
    assert clinic_labels(30, 1, 4, 1)["stage"] == ("T1 N2", "III")
    assert clinic_labels(65, 1, 0, 2)["risk"] == ("old", "mid")
    assert clinic_labels(50, 3, 0, 2)["survive"] == ("II low", "yes")


def test_clinic_mix_task_grade_and_metrics():
    task = make_task(TaskCfg(name="clinic_mix", n_train=60, n_test=12, seed=1))
    rows = task.train() + task.test()
    assert len(task.train()) == 60 and len({p.id for p in rows}) == 72
    for p in rows:
        kind, rec = p.meta["task"], p.meta["record"]
        assert p.question.startswith(f"{kind}: age {rec[0]} size {rec[1]} nodes {rec[2]}")
        from grpo_core.tasks import clinic_labels

        assert clinic_labels(*rec)[kind] == (p.meta["rationale"], p.answer)
        assert task.sft_target(p) == f"<why>{p.meta['rationale']}</why>{p.answer}"
    p = Problem("cl-stage-0", "stage: age 67 size 4 nodes 2 grade 3", "II",
                {"task": "stage", "rationale": "T2 N1", "record": [67, 4, 2, 3]})  # fmt: skip
    texts = ["<why>T2 N1</why>II", "<why>T2 N0</why>ii", "<why>T2 N1</why>III", "II", "<why>x"]
    g = task.grade_texts(texts, [p] * 5)
    # the label after </why>, case-insensitive; out of the format: no answer
    assert [x.score for x in g] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [x.reason for x in g] == ["match", "match", "mismatch", "no_answer", "no_answer"]
    samples = [{"prompt_id": p.id, "completion": t, "correct": x.score >= 1}
               for t, x in zip(texts, g)]  # fmt: skip
    m = task.eval_metrics(samples, [p])
    # F1: 1, "T2 N0" vs "T2 N1" -> 1/2, 1, 0 (no rationale), 0 -> mean 2.5 / 5
    # consistency: T2 N1 -> II = II yes; T2 N0 -> II = ii yes; T2 N1 -> II != III; none: 2 / 5
    assert m == {"acc_stage": pytest.approx(0.4), "clinic_format": pytest.approx(0.6),
                 "rationale_f1": pytest.approx(0.5), "plan_consistency": pytest.approx(0.4)}  # fmt: skip


def test_oncoreason_reward_hand_computed():
    # rationale "T2 N1" (gold II); w_rationale .5, w_format .25
    #   "<why>T2 N1</why>II"   F1 1, format 1          -> .5 + .25 = .75
    #   "<why>T2</why>III"     P 1, R 1/2, F1 2/3, fmt -> .5 * 2/3 + .25 = .58333
    #   "<why>N1 T3 x</why>II" same 1 of 3 / 2: P 1/3, R 1/2, F1 .4 -> .2 + .25 = .45
    #   "<why>T2 N1</why>"     F1 1, no label: format 0 -> .5
    #   "II"                   no rationale, not in format -> 0
    texts = ["<why>T2 N1</why>II", "<why>T2</why>III", "<why>N1 T3 x</why>II", "<why>T2 N1</why>",
             "II"]  # fmt: skip
    probs = [Problem("p", "q", "II", {"rationale": "T2 N1"})] * 5
    ctx = GroupContext(texts, probs, ["stop"] * 5, [4] * 5, [5], 12, None)
    r, logs = REWARDS.get("oncoreason")(ctx, w_rationale=0.5, w_format=0.25)
    assert r.tolist() == pytest.approx([0.75, 0.5 * 2 / 3 + 0.25, 0.45, 0.5, 0.0])
    assert logs["format"] == pytest.approx(0.6)
    assert logs["rationale_f1"] == pytest.approx((1 + 2 / 3 + 0.4 + 1 + 0) / 5)
    # a completion cut at the token limit is not in the format
    ctx = GroupContext(texts[:1], probs[:1], ["length"], [12], [1], 12, None)
    assert REWARDS.get("oncoreason")(ctx)[0].tolist() == pytest.approx([0.5])


def test_tiny_clinic_profile_sft_then_oncoreason_steps(tmp_path):
    assert load_config("grpo", "tiny_clinic").task.name == "clinic_mix"
    _profile_run("tiny_clinic", "oncoreason", tmp_path,
                 ["reward/oncoreason/rationale_f1", "reward/oncoreason/format"])  # fmt: skip


def test_oncoreason_config_resolves_under_every_profile():
    from grpo_core.config import validate_profile_overrides

    for profile in ("smoke", "tiny", "small", "paper", "tiny_clinic"):
        cfg = load_config("oncoreason", profile)
        assert cfg.meta.wave == 2 and cfg.meta.profile == "tiny_clinic"  # its home profile
        assert [r.name for r in cfg.rewards] == ["correctness", "oncoreason"]
    validate_profile_overrides("oncoreason")


# ------------------------------------------------------------------ pta_grpo


def test_clinic_implied_labels_hand_computed():
    from grpo_core.tasks import clinic_implied

    assert clinic_implied("stage", "T1 N0") == "I"
    assert clinic_implied("stage", "T3 N0") == "III" and clinic_implied("stage", "T2 N2") == "III"
    assert clinic_implied("stage", "T2 N1") == "II"
    assert clinic_implied("stage", "T4 N1") is None and clinic_implied("stage", None) is None
    assert clinic_implied("risk", "none") == "low" and clinic_implied("risk", "g3") == "mid"
    assert clinic_implied("risk", "old g3 n+") == "high"
    assert clinic_implied("risk", "old old") is None and clinic_implied("risk", "x") is None
    assert clinic_implied("survive", "II mid") == "yes"
    assert (
        clinic_implied("survive", "III low") == "no" and clinic_implied("survive", "I high") == "no"
    )
    assert clinic_implied("survive", "II") is None


def test_pta_plan_reward_hand_computed():
    # one group of 5 (gold II); plans: "T2 N1" x3 (right, right, wrong), "T2  N0" (spaces
    # normalised: "T2 N0", right), none (right)
    #   success("T2 N1") = 2/3, success("T2 N0") = 1, no plan -> 0
    #   format: plan + answer + stop: rows 0-3 yes (row 2 has answer "I"), row 4 no
    #   r = .5 q + .25 fmt = [1/3 + .25, 1/3 + .25, 1/3 + .25, .5 + .25, 0]
    # group 2 of 2 (gold yes): "<why>I low</why>" (no answer after the plan: fmt 0, wrong),
    #   cut at the limit "<why>I low</why>yes" (right, finish length: fmt 0): success 1/2 each
    #   r = [.25, .25]
    texts = ["<why>T2 N1</why>II", " <why>T2 N1</why> II", "<why>T2 N1</why>I",
             "<why>T2  N0</why>II", "II", "<why>I low</why>", "<why>I low</why>yes"]  # fmt: skip
    probs = [Problem("a", "q", "II", {"task": "stage", "rationale": "T2 N1"})] * 5 + [
        Problem("b", "q", "yes", {"task": "survive", "rationale": "I low"})
    ] * 2
    fins = ["stop"] * 6 + ["length"]

    ctx = GroupContext(texts, probs, fins, [6] * 7, [5, 2], 12, None)
    from grpo_core.tasks import ClinicMix

    ctx.task = ClinicMix(1, 1, 0, {}, None, {"tasks": {"stage": 1.0}})
    r, logs = REWARDS.get("pta_plan")(ctx, w_plan=0.5, w_format=0.25)
    third = 0.5 * 2 / 3 + 0.25
    assert r.tolist() == pytest.approx([third, third, third, 0.75, 0.0, 0.25, 0.25])
    # plans per group: 2 and 1 -> 1.5; q mean (2/3 * 3 + 1 + 0 + .5 + .5) / 7 = 4 / 7
    assert logs["plans_per_group"] == pytest.approx(1.5)
    assert logs["plan_success"] == pytest.approx(4 / 7)
    assert logs["format"] == pytest.approx(4 / 7)


def test_tiny_clinic_profile_pta_grpo_steps(tmp_path):
    _profile_run("tiny_clinic", "pta_grpo", tmp_path,
                 ["reward/pta_plan/plan_success", "reward/pta_plan/plans_per_group"])  # fmt: skip


def test_pta_grpo_config_resolves_under_every_profile():
    from grpo_core.config import validate_profile_overrides

    for profile in ("smoke", "tiny", "small", "paper", "tiny_clinic"):
        cfg = load_config("pta_grpo", profile)
        assert cfg.meta.wave == 2 and cfg.meta.profile == "tiny_clinic"  # its home profile
        assert [r.name for r in cfg.rewards] == ["correctness", "pta_plan"]
    validate_profile_overrides("pta_grpo")
