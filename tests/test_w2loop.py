"""Wave-2 reproductions (issue 16, w2loop): urpo (player and referee in one GRPO batch) and
training_free_grpo (an experience library as the prompt prior, no weight updates).
Hand-computed values of each mechanism and a smoke run of each reproduction."""

import json
import math

import pytest
import torch

from grpo_core.config import load_config, validate_profile_overrides
from grpo_core.samplers import (
    EXPERIENCE_FILE,
    experience_category,
    make_sampler,
    read_experience_prefix,
)
from grpo_core.schema import SamplerCfg
from grpo_core.tasks import Problem, render_prompt

SMOKE_REWARDS = json.dumps([{"name": "correctness"}, {"name": "format", "weight": 0.5}])


# ------------------------------------------------------------------ URPO


def test_referee_pair_and_prompt_hand_computed():
    s = make_sampler(SamplerCfg(name="urpo", params={"frac": 0.5}), 10, 0)
    # the group's first wrong answer (81; None and the right 83 are skipped) is the wrong one
    a, b, own = s.referee_pair("83", [None, "83", "81", "73"], [False, True, False, False], 3, 1)
    assert {a, b} == {"83", "81"} and own
    # all right: the distractor gold + 10 = 93, not the player's
    a2, b2, own2 = s.referee_pair("83", ["83", "83"], [True, True], 3, 1)
    assert {a2, b2} == {"83", "93"} and not own2
    # the order is a function of (seed, step, k): the same draw again, and both orders occur
    assert s.referee_pair("83", ["81"], [False], 3, 1)[:2] == (a, b)
    firsts = {s.referee_pair("83", ["81"], [False], st, 0)[0] for st in range(20)}
    assert firsts == {"83", "81"}
    # a gold that is not an integer and no wrong answer: no referee prompt
    assert s.referee_pair("x", ["x"], [True], 0, 0) is None
    assert s.referee_prompt("30+55=", "85", "75") == "Which is right, 85 or 75?\n30+55="
    plan = s.extra_round(3)
    assert plan["kind"] == "referee" and plan["frac"] == 0.5 and plan["group_size"] is None
    assert plan["pair"]("83", ["81"], [False], 1) == s.referee_pair("83", ["81"], [False], 3, 1)


def test_referee_round_adds_scored_groups(smoke_cfg, monkeypatch):
    """One step of urpo on the smoke model: ceil(.5 x 4) = 2 referee prompts, G = 4 verdicts
    each, join the batch as 2 groups of their own (on-policy), rewarded 1 (correctness)
    exactly when the verdict's answer is the right candidate (the label)."""
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg("urpo", ['rewards=[{"name": "correctness"}]']), None)
    batch, _ = t.collect(0)
    G, n = t.cfg.rollout.group_size, t.cfg.rollout.prompts_per_step
    n_main = len(batch.rollouts)
    # the verdicts: the first row of each referee group names the right candidate, the others
    # name nothing (a scripted engine answer for the referee round only)
    orig = t.engine.generate

    def scripted(prompts, params):
        ro = orig(prompts, params)
        golds = [t.train_set[batch.indices[k * G]].answer for k in range(2)]
        ro.texts = [golds[r // G] if r % G == 0 else "x" for r in range(len(ro))]
        return ro

    monkeypatch.setattr(t.engine, "generate", scripted)
    logs = t._extra_round(batch, 0)
    assert batch.group_sizes == [G] * n + [G, G]
    assert len(batch.rollouts) == len(batch.problems) == len(batch.rewards) == n_main + 2 * G
    assert batch.rewards[n_main:].tolist() == [1.0, 0.0, 0.0, 0.0] * 2
    assert logs["extra/n_referee"] == 2 and logs["extra/referee_acc"] == 0.25
    # the referee rows' prompt: the two candidates, then the player's question
    text = t.tok.decode(batch.rollouts.prompt_ids[n_main], skip_special_tokens=True)
    q = render_prompt(t.cfg.task.template, t.train_set[batch.indices[0]])
    assert "Which is right, " in text and text.rstrip().endswith(q)
    assert batch.problems[n_main].id.endswith("/referee")
    stats = {}
    t.score(batch, 0, stats)
    # group advantages of [1, 0, 0, 0]: mean .25, unbiased std sqrt((.5625 + 3 x .0625) / 3)
    # = .5: (1 - .25) / .5 = 1.5 and (0 - .25) / .5 = -.5
    assert batch.advantages[n_main : n_main + G].tolist() == pytest.approx(
        [1.5, -0.5, -0.5, -0.5], abs=1e-5
    )


# ------------------------------------------------------------------ Training-Free GRPO


def test_experience_category_hand_computed():
    assert experience_category("83", None)[0] == "format"
    assert experience_category("83", "7")[0] == "digits"  # 1 digit vs 2
    assert experience_category("83", "73")[0] == "carry"  # off by 10: a lost carry
    assert experience_category("183", "83")[0] == "digits"
    assert experience_category("83", "84")[0] == "ones"
    assert experience_category("83", "63")[0] == "tens"  # off by 20
    assert experience_category("1.5", "2")[0] == "answer"


def test_library_add_modify_delete_hand_computed():
    s = make_sampler(
        SamplerCfg(name="experience", params={"max_items": 2, "ttl": 2, "max_chars": 1000}), 10, 0
    )
    assert s.prefix_text() is None and s.prefix(0, None, None) is None
    assert s.apply([("carry", "c1"), ("ones", "o1")]) == {"n_add": 2, "n_modify": 0, "n_delete": 0}
    assert s.prefix_text() == "Experiences:\n[G0]. c1\n[G1]. o1\n"
    # modify carry (support 2); add format (G2): 3 > max_items 2 -> delete the least supported,
    # oldest first: ones (G1, support 1) before format (G2, support 1)
    assert s.apply([("carry", "c2"), ("format", "f1")]) == {
        "n_add": 1,
        "n_modify": 1,
        "n_delete": 1,
    }
    assert list(s.library) == ["G0", "G2"] and s.library["G0"]["text"] == "c2"
    assert s.library["G0"]["support"] == 2
    # two updates without carry: its age reaches ttl 2 and it is deleted; format stays
    s.apply([("format", "f2")])
    assert s.apply([("format", "f3")])["n_delete"] == 1
    assert list(s.library) == ["G2"] and s.library["G2"] == {
        "key": "format",
        "text": "f3",
        "support": 3,
        "age": 0,
    }
    # the prefix is cut to max_chars; state round-trips
    s2 = make_sampler(SamplerCfg(name="experience", params={"max_chars": 10}), 10, 0)
    s2.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert s2.library == s.library and s2.next_id == 3
    assert s2.prefix_text() == "Experience"


def test_update_learns_from_partial_groups_only():
    s = make_sampler(SamplerCfg(name="experience"), 10, 0)
    p1 = Problem("a", "Calculate 45 + 38.", "83", {"expression": "45+38"})
    p2 = Problem("b", "Calculate 1 + 1.", "2", {"expression": "1+1"})
    logs = s.update(
        {
            "problems": [p1] * 3 + [p2] * 2,
            "rewards": torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0]),  # group b: all right, skipped
            "texts": ["73", "83", "81", "2", "2"],
            "group_sizes": [3, 2],
        }
    )
    # group a: best row 1 (83), worst the first 0-reward row, row 0 (73): a lost carry
    assert logs == {
        "n_add": 1,
        "n_modify": 0,
        "n_delete": 0,
        "library_size": 1,
        "n_learn_groups": 1,
    }
    assert s.library["G0"]["key"] == "carry"
    assert s.library["G0"]["text"].endswith("E.g. 45+38 = 83.")


def test_policy_summariser_writes_the_text():
    s = make_sampler(SamplerCfg(name="experience", params={"summariser": "policy"}), 10, 0)
    seen = []

    def gen(msgs, n):
        seen.append((msgs, n))
        return ["\n  Carry the one.\nmore", ""]

    s.bind_generate(gen)
    g = {"question": "45+38", "gold": "83", "better": "83", "worse": "73", "worse_pred": "73"}
    out = s.summarise([g, {**g, "worse_pred": None}])
    # its first non-empty line; an empty one falls back to the rule's text
    assert out[0] == ("carry", "Carry the one.")
    assert out[1][0] == "format" and out[1][1].startswith("End the reply")
    assert seen[0][1] == 40 and "Correct solution: 83" in seen[0][0][0]


def test_prefix_rendered_before_the_prompt():
    p = Problem("a", "q", "1", {"expression": "1+0"}, hint="H", prefix="E\n")
    assert render_prompt("expr", p) == "E\n1+0=H"


def test_training_free_leaves_parameters_unchanged(smoke_cfg, tmp_path):
    """3 steps of training_free_grpo: every parameter equals the start's, the library learned
    something, the checkpoint carries it, and evaluation reads it into its prompts."""
    from evals.evaluate import evaluate
    from grpo_core.trainer import Trainer

    # the smoke model answers few right: a format reward spreads the groups
    cfg = smoke_cfg("training_free_grpo", ["train.steps=3", f"rewards={SMOKE_REWARDS}"])
    t = Trainer(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train(progress=False)
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["grad_norm"] == 0.0 for r in rows)
    assert sum(r["sampler/n_learn_groups"] for r in rows) > 0
    lib = t.sampler.library
    assert lib and rows[-1]["sampler/library_size"] == len(lib)
    ck = tmp_path / "run" / "checkpoint"
    saved = json.loads((ck / EXPERIENCE_FILE).read_text())
    assert saved["experiences"] == lib and saved["prefix"] == t.sampler.prefix_text()
    assert read_experience_prefix(ck) == t.sampler.prefix_text()
    # the next step's prompts carry the library before the question
    (p,) = t.row_problems([0])
    assert p.prefix == t.sampler.prefix_text()
    res = evaluate(cfg, ck, tmp_path / "eval")
    assert res["protocol"]["prompt_prefix_chars"] == len(saved["prefix"])
    samp = (tmp_path / "eval").glob("*.samples.jsonl")
    assert any(True for _ in samp)


# ------------------------------------------------------------------ configs and smoke runs

REPROS = ["urpo", "training_free_grpo"]


@pytest.mark.parametrize("repro", REPROS)
def test_configs_resolve_under_every_profile(repro):
    for profile in ("smoke", "tiny", "small", "paper"):
        cfg = load_config(repro, profile)
        assert cfg.meta.wave == 2
        assert len(cfg.meta.claims) >= 1
    validate_profile_overrides(repro)
    if repro == "training_free_grpo":
        assert load_config(repro, "small").sampler.params["summariser"] == "policy"
        assert load_config(repro, "tiny").sampler.params["summariser"] == "rule"


def test_urpo_smoke_run(smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg("urpo", ["train.steps=3", f"rewards={SMOKE_REWARDS}"]), tmp_path / "r")
    t.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for k in ("loss", "extra/referee_acc", "extra/referee_player_acc", "extra/n_referee"):
        assert all(math.isfinite(r[k]) for r in rows), k
    assert any(r["grad_norm"] > 0 for r in rows)
    assert (tmp_path / "r" / "checkpoint" / "training_state" / "state.json").exists()


def test_referee_sft_rows_hand_computed():
    """sft.referee_frac 0.5 of 4 problems: 2 referee rows; problem 0's distractor is answer + 10,
    problem 1's answer - 10; the prompt is the urpo sampler's, the target the answer + EOS."""
    from grpo_core.models import build_char_tokenizer
    from grpo_core.prepare import referee_rows
    from grpo_core.samplers import UrpoSampler

    cfg = load_config("urpo", "smoke", ["sft.referee_frac=0.5"])
    tok = build_char_tokenizer()
    train = [
        Problem(f"p{i}", "", a, {"expression": e})
        for i, (e, a) in enumerate([("30+55", "85"), ("12+13", "25"), ("1+1", "2"), ("2+2", "4")])
    ]
    task = SimpleTask()
    rows = referee_rows(cfg, task, train, tok)
    assert len(rows) == 2
    judge = UrpoSampler(4, SamplerCfg(name="urpo"), cfg.run.seed)
    for i, (w, p) in enumerate([("95", train[0]), ("15", train[1])]):
        a, b, _ = judge.referee_pair(p.answer, [w], [False], 0, i)
        assert {a, b} == {p.answer, w}
        text = tok.decode(rows[i][0], skip_special_tokens=True)
        assert f"Which is right, {a} or {b}?\n{p.meta['expression']}=" in text
        assert tok.decode(rows[i][1], skip_special_tokens=True) == p.answer
        assert rows[i][1][-1] == tok.eos_token_id and rows[i][1] == rows[i][2]
    assert load_config("urpo", "tiny_urpo").sft.referee_frac == 0.25
    assert load_config("urpo", "tiny").sft.referee_frac == 0.0  # the tiny start is unchanged


class SimpleTask:
    @staticmethod
    def sft_target(p):
        return p.answer


def test_training_free_resumes_its_library(smoke_cfg, tmp_path):
    """Stopped after step 2 and resumed: the library (sampler state in the checkpoint) is back,
    and the finished run's library equals the uninterrupted run's."""
    from grpo_core.trainer import Trainer

    ov = ["train.steps=3", f"rewards={SMOKE_REWARDS}"]
    full = Trainer(smoke_cfg("training_free_grpo", ov), tmp_path / "a")
    full.train(progress=False)
    part = Trainer(smoke_cfg("training_free_grpo", ov), tmp_path / "b")
    part.train(progress=False, stop_at=2)
    lib2 = json.loads(json.dumps(part.sampler.library))
    again = Trainer(smoke_cfg("training_free_grpo", ov), tmp_path / "b")
    assert again.step == 2 and again.sampler.library == lib2
    again.train(progress=False)
    assert full.sampler.library and again.sampler.library == full.sampler.library
    assert again.sampler.next_id == full.sampler.next_id
