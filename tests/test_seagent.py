"""SEAgent on tiny_gui: the rule-based world-state judge, GRPO on successes, the adversarial
imitation of failures (hand-computed tensors), the curriculum generator over novel apps, the
reproduction's config, and a smoke run through the trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_gui import SHRINK

from grpo_core.advantages import ADVANTAGES
from grpo_core.episodes import Episodes
from grpo_core.errors import UserError
from grpo_core.losses import REGULARISERS, LossContext
from grpo_core.rewards import REWARDS, GroupContext, judge_world_state
from grpo_core.samplers import make_sampler
from grpo_core.schema import AdvantageCfg, SamplerCfg
from grpo_core.tasks import GuiApps, Problem

GOAL = {"Wi-Fi": "on", "Device name": "lab-3"}


# ------------------------------------------------------------------------------ the judge


def test_judge_by_hand():
    diff = [["Device name", "x", "lab-3"], ["Wi-Fi", "off", "on"]]
    trace = [["click", ["Wi-Fi"]], ["unparseable", []], ["scroll", []], ["type", ["Device name"]],
             ["done", []]]  # fmt: skip
    ok, labels = judge_world_state(GOAL, diff, True, trace)
    assert ok and labels == ["progress", "bad", "neutral", "progress", "neutral"]
    # the goal holds but done was never called: no success
    assert not judge_world_state(GOAL, diff, False, trace)[0]
    # a wrong value, and a change the goal does not ask for
    diff2 = [["Device name", "x", "lab-4"], ["Sync", "on", "off"], ["Wi-Fi", "off", "on"]]
    ok, labels = judge_world_state(
        GOAL, diff2, True, [["click", ["Sync"]], ["type", ["Device name"]], ["done", []]]
    )
    assert not ok and labels == ["bad", "bad", "neutral"]
    # files: opening folders is neutral, opening the goal file is progress
    ok, labels = judge_world_state(
        {"opened": "a/x.txt"},
        [["folder", "", "a"], ["opened", "", "a/x.txt"]],
        True,
        [["click", ["folder"]], ["click", ["opened"]], ["done", []]],
    )
    assert ok and labels == ["neutral", "progress", "neutral"]


def _ctx(problems, infos):
    n = len(problems)
    return GroupContext(
        texts=["done"] * n,
        problems=problems,
        finish_reasons=["stop"] * n,
        lengths=[1] * n,
        group_sizes=[n],
        max_new_tokens=8,
        task=None,
        episodes=Episodes([[0.0]] * n, [1] * n, infos, [["done"]] * n, ["done"] * n),
    )


def test_judge_reward_by_hand():
    p = Problem("p", "q", "", {"goal": GOAL})
    good = {"diff": [["Device name", "x", "lab-3"], ["Wi-Fi", "off", "on"]], "done": True,
            "trace": [["click", ["Wi-Fi"]], ["type", ["Device name"]], ["done", []]],
            "success": True}  # fmt: skip
    half = {"diff": [["Wi-Fi", "off", "on"]], "done": True,
            "trace": [["click", ["Wi-Fi"]], ["not_text", []], ["done", []]], "success": False}  # fmt: skip
    lies = {**good, "success": False}  # the env's check disagrees with the judge
    r, logs = REWARDS.get("seagent_judge")(_ctx([p, p, p], [good, half, lies]), reward=1.0)
    assert r.tolist() == [1.0, 0.0, 1.0]
    # 2 of 3 judged successes; agree on rows 0 and 1; bad steps: 1 of 9
    assert logs == pytest.approx(
        {"judge_success": 2 / 3, "judge_agree": 2 / 3, "bad_step_frac": 1 / 9}
    )
    with pytest.raises(UserError, match="env.name: gui"):
        REWARDS.get("seagent_judge")(_ctx([p], [{"success": True}]), reward=1.0)


# ------------------------------------------------------------------------------ GRPO on successes


def test_advantage_on_successes_only_by_hand():
    cfg = AdvantageCfg(name="seagent", params={"success": 0.5})
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    adv, logs = ADVANTAGES.get("seagent")(rewards, cfg)
    # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735; success rows 0.5 / 0.57735
    a = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([[a, 0.0, 0.0, a], [0.0, 0.0, 0.0, 0.0]]), atol=1e-5)
    assert logs == {"success_rows": 0.25}


def test_adversarial_imitation_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.3), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.5), math.log(0.6)], [math.log(0.1), math.log(0.3)]])
    mask = torch.tensor([[1, 1], [1, 0]])
    ctx = LossContext(ref_logp=ref, rewards=torch.tensor([0.0, 1.0]))
    term, logs = REGULARISERS.get("seagent_ai")(logp, logp, None, mask, ctx, success=0.5)
    # row 0 failed: -log sigmoid(-(lp - ref)) = log(1 + pi / pi_ref): log 2, log(1 + 1/3);
    # row 1 succeeded: 0
    want = torch.tensor([[math.log(2.0), math.log(4 / 3)], [0.0, 0.0]])
    assert torch.allclose(term, want, atol=1e-6)
    assert logs["fail_frac"] == pytest.approx(2 / 3)
    assert logs["penalty"] == pytest.approx((math.log(2) + math.log(4 / 3)) / 3)
    # its gradient lowers the failed action's log-prob: d term / d logp = sigmoid(lp - ref) > 0
    lp = logp.clone().requires_grad_(True)
    t, _ = REGULARISERS.get("seagent_ai")(lp, lp, None, mask, ctx, success=0.5)
    (t * mask).sum().backward()
    assert lp.grad[0, 0] == pytest.approx(0.5) and lp.grad[0, 1] == pytest.approx(0.25)
    assert lp.grad[1].tolist() == [0.0, 0.0]
    with pytest.raises(UserError, match="reference"):
        REGULARISERS.get("seagent_ai")(logp, logp, None, mask, LossContext(), success=0.5)


# ------------------------------------------------------------------------------ the curriculum


def _sampler(**params):
    return make_sampler(SamplerCfg(name="seagent", params=params), 6, 0)


PROBS = [
    Problem(f"t{i}", "q", "", {"app": app, "level": lv, "goal": goal})
    for i, (app, lv, goal) in enumerate(
        [
            ("a", 1, {"x": "on"}),
            ("a", 2, {"x": "on", "y": "v"}),
            ("a", 3, {"x": "off", "y": "w", "z": "on"}),
            ("b", 1, {"p": "sel"}),
            ("b", 2, {"p": "sel", "q": "sel"}),
            ("b", 3, {"r": "1"}),
        ]
    )
]


def _stats(idx, rewards, diffs):
    return {"indices": idx, "rewards": rewards, "group_sizes": [1] * len(idx),
            "infos": [{"diff": d} for d in diffs]}  # fmt: skip


def test_curriculum_proposes_from_what_was_explored():
    s = _sampler(window=2, promote=0.5, max_level=3)
    with pytest.raises(UserError, match="bind_problems"):
        s.next_prompts(2)
    s.bind_problems(PROBS)
    assert s.eligible() == [0, 3]  # level 1 only
    assert sorted(s.next_prompts(2)) == [0, 3]
    # app a: the agent changed x and y (solving task 0); app b: nothing, a failure
    logs = s.update(_stats([0, 3], [1.0, 0.0], [[["x", "off", "on"], ["y", "", "v"]], []]))
    assert s.explored == {"a": {"x", "y"}, "b": set()} and s.solved == {0}
    # level 1 over the last 2 episodes: 1 / 2 >= promote -> level 2 unlocked; task 1's keys
    # {x, y} are explored on a, task 4's {p, q} are not on b
    assert s.level == 2 and s.eligible() == [0, 1, 3]
    assert logs == {"level": 2.0, "eligible": 3.0, "solved": 1.0, "explored_keys": 2.0}
    # unsolved eligible tasks first: 1 and 3, then the solved 0
    assert sorted(s.next_prompts(2)) == [1, 3] and sorted(s.next_prompts(3)) == [0, 1, 3]
    # level 2 fails twice: no level 3
    s.update(_stats([1, 1], [0.0, 0.0], [[["x", "off", "on"]], []]))
    assert s.level == 2
    s.update(_stats([1, 1], [1.0, 1.0], [[["z", "off", "on"]], []]))
    assert s.level == 3 and 2 in s.eligible() and 5 not in s.eligible()
    # state round-trips
    t = _sampler(window=2, promote=0.5, max_level=3)
    t.bind_problems(PROBS)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert (t.level, t.solved, t.explored, t.recent) == (s.level, s.solved, s.explored, s.recent)
    assert t.next_prompts(3) == s.next_prompts(3)
    with pytest.raises(UserError, match="infos"):
        s.update({"indices": [0], "rewards": [1.0], "group_sizes": [1]})
    with pytest.raises(UserError, match="gui_apps"):
        _sampler().bind_problems([Problem("x", "q", "1", {})])


def test_novel_pool_is_unseen_by_sft_and_test():
    from grpo_core.config import load_config

    cfg = load_config("seagent", "tiny_gui", [])
    base = load_config("grpo", "tiny_gui", [])
    p = cfg.task.params
    assert (p["train_apps"], p["tasks_per_app"], p["max_level"]) == ("novel", 3, 3)
    assert [r.name for r in cfg.rewards] == ["seagent_judge"]
    assert cfg.advantage.name == "seagent" and cfg.sampler.name == "seagent"
    assert [(r.name, r.weight) for r in cfg.loss.regularisers] == [("seagent_ai", 0.2)]
    assert cfg.loss.kl.beta > 0  # the reference the adversarial imitation needs
    assert cfg.meta.profile == "tiny_gui" and cfg.meta.tier == "B/C"
    rl = GuiApps(cfg.task.n_train, 8, 0, {}, None, dict(p))
    sft = GuiApps(base.task.n_train, base.task.n_test, 0, {}, None, dict(base.task.params))
    apps = {x.meta["app"] for x in rl.train()}
    assert len(apps) == cfg.task.n_train // 3
    assert not apps & {x.meta["app"] for x in sft.train() + sft.test()}
    assert [x.id for x in rl.test()] == [x.id for x in sft.test()[:8]]  # the same held-out apps


# ------------------------------------------------------------------------------ smoke


@pytest.fixture(scope="module")
def gui_start(tmp_path_factory):
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("seagent_results")
    cfg = load_config("grpo", "tiny_gui", [f"run.results_dir={res}", *SHRINK])
    prepare(cfg, threads=1, log=lambda *a: None)
    return res


def test_seagent_smoke_training(gui_start, tmp_path):
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    over = [f"run.results_dir={gui_start}", *SHRINK, "task.n_train=12"]
    cfg = load_config("seagent", "tiny_gui", over)
    tr = Trainer(cfg, tmp_path / "run")
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_mean"])
        assert "reward/seagent_judge" in r and r["sampler/level"] >= 1
    # the curriculum saw the episodes' world-state diffs; every proposed task was level 1 at
    # step 0 (nothing unlocked before the first update)
    assert tr.sampler.meta is not None and len(tr.sampler.meta) == 12
    assert set(tr.sampler.explored) <= {p.meta["app"] for p in tr.train_set}
    assert rows[0]["sampler/eligible"] >= 1
