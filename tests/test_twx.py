"""TextWorldExpress (grpo_core.twx, task twx_coin, env twx) against the real package: gold
paths win with the env's rewards summing to the game's score, invalid actions are explained
and never crash, the episode runner's masks and turn ids over a scripted gold episode, one JVM
per process, and a smoke training.

textworld-express is a declared dependency: importing it here fails loudly where it is
missing (no skip)."""

from __future__ import annotations

import json
import math
import time

import pytest
import textworld_express  # noqa: F401  (a declared dependency: fail, never skip)
import torch
from test_episodes import ScriptedEngine

from grpo_core import twx
from grpo_core.episodes import ENVS, TwxEnv, chat_ids, make_envs, observation_ids, run_episodes
from grpo_core.models import build_char_tokenizer
from grpo_core.rollout import SamplingParams, eos_token_ids
from grpo_core.tasks import Problem, TwxCoin

# 3 locations, no doors, no distractors (the task's defaults at 3 locations)
P3 = "numLocations=3,includeDoors=0,numDistractorItems=0,limitInventorySize=1"


def _problem(seed: int, params: str = P3, fold: str = "train") -> Problem:
    desc, obs, _, _ = twx.first_observation(twx.GameSpec("coin", params, fold, seed))
    meta = {"fold": fold, "seed": seed, "game": "coin", "params": params, "locations": 3}
    return Problem(f"twx-{fold}-{seed}", f"{desc}\n\n{obs}", "", meta)


def _env(show_actions: bool = True) -> TwxEnv:
    return TwxEnv(None, "plain", {"show_actions": show_actions})


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_train_seed_0_by_hand():
    # train seed 0, 3 locations: the kitchen (start) has the pantry to the east and the
    # corridor to the west; the coin lies in the pantry. Shortest win: move east, take coin.
    p = _problem(0)
    env = _env()
    first = env.reset(p, 123).messages
    assert len(first) == 1 and first[0]["role"] == "user"
    text = first[0]["content"]
    assert text.startswith("Your task is to search the environment and find the coin.")
    assert "You are in the kitchen." in text and "To the East you see the pantry." in text
    assert text.endswith("\nValid actions: move west, look around, inventory, move east")
    assert twx.coin_shortest_path(twx.spec_of(p.meta)) == ["move east", "take coin"]
    r = env.step("move east")
    assert (r.reward, r.done) == (0.0, False)
    assert r.info == {"success": False, "score": 0.0, "steps": 1}
    obs = r.observation.messages[0]["content"]
    assert obs.startswith("You are in the pantry.") and "You also see a coin." in obs
    assert obs.endswith("\nValid actions: inventory, look around, take coin, move west")
    r = env.step("take coin")
    assert (r.observation, r.reward, r.done) == (None, 1.0, True)
    assert r.info == {"success": True, "score": 1.0, "steps": 2}
    # show_actions (default true) false: the observation alone
    assert ENVS.params_model("twx")().show_actions is True
    env2 = _env(show_actions=False)
    assert "Valid actions" not in env2.reset(p, 0).messages[0]["content"]


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_the_packages_gold_path_wins(seed):
    # with 5 locations and doors, so that paths are several steps long
    params = "numLocations=5,includeDoors=1,numDistractorItems=0,limitInventorySize=1"
    p = _problem(seed, params)
    gold = twx.gold_path(p)
    assert gold[0] == "look around" and gold[-1] == "take coin"
    env = _env()
    env.reset(p, 0)
    rewards, results = [], []
    for a in gold:
        r = env.step(a)
        rewards.append(r.reward)
        results.append(r)
    assert [r.done for r in results] == [False] * (len(gold) - 1) + [True]
    last = results[-1].info
    assert last["success"] is True and last["steps"] == len(gold)
    assert sum(rewards) == last["score"] == 1.0
    # the shortest path is no longer than the package's (random-walk) one, and also wins
    short = twx.coin_shortest_path(twx.spec_of(p.meta))
    assert len(short) <= len(gold) - 1  # the package's starts with a "look around"
    env.reset(p, 0)
    assert [env.step(a).reward for a in short][-1] == 1.0 and env.done


def test_invalid_actions_are_explained_and_count_as_steps():
    p = _problem(0)
    env = _env()
    env.reset(p, 0)
    valid = "move west, look around, inventory, move east"
    r = env.step("fly away\nmove east")  # the first line is the action
    assert r.observation.messages == [
        {"role": "user", "content": f"not a valid action: 'fly away'; valid actions: {valid}"}
    ]
    assert (r.reward, r.done, r.info) == (0.0, False, {"success": False, "score": 0.0, "steps": 1})
    r = env.step("")
    assert r.observation.messages[0]["content"].startswith("not a valid action: ''")
    assert r.info["steps"] == 2
    # the game did not move: case and spacing do not matter, the action after that works
    r = env.step("  Move   EAST  \nignored")
    assert r.observation.messages[0]["content"].startswith("You are in the pantry.")
    assert env.step("take coin").info == {"success": True, "score": 1.0, "steps": 4}


def test_task_problems_folds_and_determinism():
    a = TwxCoin(6, 4, 5, {}, None, {})
    b = TwxCoin(6, 4, 5, {}, None, {"test_fold": "dev"})
    tr, te = a.train(), a.test()
    assert len(tr) == 6 and len(te) == 4
    assert [p.id for p in tr] == [p.id for p in TwxCoin(6, 4, 5, {}, None, {}).train()]
    # package folds: train seeds 0-999, dev 10000-10999, test 20000-20999
    assert all(p.meta["fold"] == "train" and 0 <= p.meta["seed"] < 1000 for p in tr)
    assert all(p.meta["fold"] == "test" and 20000 <= p.meta["seed"] < 21000 for p in te)
    assert all(10000 <= p.meta["seed"] < 11000 for p in b.test())
    for p in tr + te:
        assert 3 <= p.meta["locations"] <= 5 and p.answer == ""
        assert f"numLocations={p.meta['locations']}," in p.meta["params"]
        assert "includeDoors=0" in p.meta["params"]
        assert p.question.startswith("Your task is to search the environment and find the coin.")
        # the question is the game's first observation
        assert p.question.endswith(twx.first_observation(twx.spec_of(p.meta))[1].strip())
    # SFT's target: the first action of the fixed shortest path, a valid first action
    t = a.sft_target(tr[0])
    assert t in twx.first_observation(twx.spec_of(tr[0].meta))[2]


def test_scripted_gold_episode_through_the_runner(tok):
    """Episode 0 (train seed 1: the coin is in the first room) plays take coin at once; episode
    1 (train seed 0) plays an invalid action, then move east, then take coin. Expected tokens:
    each policy turn is its text + EOS (loss 1, turn t), each observation between turns is
    observation_ids of the env's message (loss 0, turn -1)."""
    problems = [_problem(1), _problem(0)]

    class Cfg:
        name, params = "twx", {}

    envs = make_envs(Cfg, None, "plain", 2)
    prompts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
    script = [["take coin", "jump"], ["move east"], ["take coin"]]
    ro, ep = run_episodes(
        envs, problems, [0, 0], prompts, ScriptedEngine(tok, script), tok, SamplingParams(), 4
    )
    eos = eos_token_ids(tok)
    end = tok.eos_token_id

    def pol(s):
        return tok.encode(s, add_special_tokens=False) + [end]

    # the observations episode 1 saw, from a second env on the same game
    ref = _env()
    ref.reset(problems[1], 0)
    o1 = ref.step("jump").observation.messages
    o2 = ref.step("move east").observation.messages
    assert o1[0]["content"].startswith("not a valid action: 'jump'")
    parts1 = [
        (pol("jump"), 0),
        (observation_ids(tok, o1, eos), -1),
        (pol("move east"), 1),
        (observation_ids(tok, o2, eos), -1),
        (pol("take coin"), 2),
    ]
    parts0 = [(pol("take coin"), 0)]
    for i, parts in enumerate([parts0, parts1]):
        ids = [t for p, _ in parts for t in p]
        n = len(ids)
        assert ro.completion_ids[i, :n].tolist() == ids
        assert ro.completion_mask[i].tolist() == [1] * n + [0] * (ro.completion_mask.shape[1] - n)
        want_loss = [int(t >= 0) for p, t in parts for _ in p]
        want_turn = [t for p, t in parts for _ in p]
        assert ro.loss_mask[i, :n].tolist() == want_loss
        assert ro.turn_ids[i, :n].tolist() == want_turn
        assert int(ro.loss_mask[i, n:].sum()) == 0
    assert ep.n_turns == [1, 3] and ep.end_reasons == ["done", "done"]
    assert ep.turn_rewards == [[1.0], [0.0, 0.0, 1.0]]
    assert ep.env_reward().tolist() == [i["score"] for i in ep.infos] == [1.0, 1.0]
    assert ep.success() == [True, True]
    assert ep.infos[1]["steps"] == 3


def test_the_packages_gold_paths_through_the_runner(tok):
    """Three games with doors, each played along the package's gold path by a scripted engine
    (the paths differ in length, so episodes end at different turns): every episode wins at
    its last gold action, the env rewards sum to the final score, and the masks and turn ids
    follow the turns (expected tokens from a second env replaying the same path)."""
    params = "numLocations=4,includeDoors=1,numDistractorItems=0,limitInventorySize=1"
    problems = [_problem(s, params) for s in (0, 1, 3)]
    plans = [twx.gold_path(p) for p in problems]
    T = max(len(g) for g in plans)
    script = [[g[t] for g in plans if len(g) > t] for t in range(T)]
    envs = [_env() for _ in problems]
    prompts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
    ro, ep = run_episodes(
        envs, problems, [0] * 3, prompts, ScriptedEngine(tok, script), tok, SamplingParams(), T
    )
    eos, end = eos_token_ids(tok), tok.eos_token_id
    for i, (p, gold) in enumerate(zip(problems, plans)):
        ref = _env()
        ref.reset(p, 0)
        ids, loss, turns = [], [], []
        for t, a in enumerate(gold):
            pol = tok.encode(a, add_special_tokens=False) + [end]
            ids, loss, turns = ids + pol, loss + [1] * len(pol), turns + [t] * len(pol)
            r = ref.step(a)
            if r.done:
                break
            obs = observation_ids(tok, r.observation.messages, eos)
            ids, loss, turns = ids + obs, loss + [0] * len(obs), turns + [-1] * len(obs)
        n = len(ids)
        assert t == len(gold) - 1 and r.info["success"]
        assert ro.completion_ids[i, :n].tolist() == ids
        assert int(ro.completion_mask[i].sum()) == n
        assert ro.loss_mask[i, :n].tolist() == loss and int(ro.loss_mask[i, n:].sum()) == 0
        assert ro.turn_ids[i, :n].tolist() == turns
        assert ep.turn_rewards[i] == [0.0] * (len(gold) - 1) + [1.0]
    assert ep.n_turns == [len(g) for g in plans] and ep.end_reasons == ["done"] * 3
    assert ep.env_reward().tolist() == [i["score"] for i in ep.infos] == [1.0] * 3
    assert ep.success() == [True] * 3


def test_one_jvm_per_process_and_fast_steps():
    rt = twx.runtime()
    assert twx.runtime() is rt
    p = _problem(0)
    envs = [_env() for _ in range(6)]
    for e in envs:
        e.reset(p, 0)
    assert len({id(e.game) for e in envs}) == 6  # side by side: one slot each
    assert all(e.game.rt is rt for e in envs) and twx.runtime().proc is rt.proc
    n_before = rt.n_games
    del envs, e  # slots go back to the pool and are reused
    for _ in range(3):
        f = _env()
        f.reset(p, 0)
    assert rt.n_games == n_before
    # a step is one round trip to the JVM: well under a millisecond warm (loose bound for a
    # loaded CI machine; a JVM per episode would take hundreds of milliseconds)
    for _ in range(50):
        f.step("look around")
    t = time.perf_counter()
    for _ in range(200):
        f.step("look around")
    per_step = (time.perf_counter() - t) / 200
    assert per_step < 5e-3, per_step


def test_close_stops_the_jvm_and_a_new_one_starts():
    rt = twx.runtime()
    env = _env()
    env.reset(_problem(0), 0)
    rt.close()
    assert rt.closed and rt.proc.wait(timeout=10) is not None
    rt.close()  # idempotent
    rt2 = twx.runtime()
    assert rt2 is not rt and rt2.proc.poll() is None
    env.reset(_problem(0), 0)  # the env takes a slot of the new JVM
    assert env.game.rt is rt2 and env.step("move east").reward == 0.0


def test_twx_trains_through_the_trainer(smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg(
        "grpo",
        [
            "task.name=twx_coin",
            "task.template=plain",
            "task.n_train=8",
            "task.n_test=4",
            "task.params={locations_min: 3, locations_max: 3}",
            "env.name=twx",
            "env.max_turns=4",
            "rewards=[{name: env}]",
            "train.steps=2",
            "rollout.max_new_tokens=8",
        ],
    )
    tr = Trainer(cfg, tmp_path / "run")
    seen = {"turns": []}
    orig = tr.episodes

    def spy(*a, **k):
        ro, ep = orig(*a, **k)
        seen["turns"] += ep.n_turns
        seen["ro"] = ro
        return ro, ep

    tr.episodes = spy
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_mean"])
        assert 0.0 <= r["accuracy"] <= 1.0
    # an untrained model's first lines are rarely valid actions: episodes ran several turns,
    # and the loss mask left the observations out
    assert max(seen["turns"]) > 1
    ro = seen["ro"]
    assert ro.loss_mask is not None
    assert int(ro.loss_mask.sum()) < int(ro.completion_mask.sum())
    assert torch.all(ro.turn_ids[ro.loss_mask.bool()] >= 0)


def test_eval_metrics_split_success_by_horizon_and_locations():
    # train seed 0 (3 locations) wins in 2 actions (test above): a short game; a problem whose
    # fixed shortest path is given 3 actions counts as long
    t = TwxCoin(6, 4, 5, {}, None, {})
    short = _problem(0)
    long_ = Problem("long-game", "q", "", meta={**short.meta, "locations": 5})
    t._shortest = {long_.id: ["move east", "move north", "take coin"]}
    samples = [
        {"prompt_id": short.id, "correct": True},
        {"prompt_id": short.id, "correct": False},
        {"prompt_id": short.id, "correct": True},
        {"prompt_id": long_.id, "correct": False},
        {"prompt_id": long_.id, "correct": True},
    ]
    got = t.eval_metrics(samples, [short, long_])
    assert got == {
        "success_short": 2 / 3,
        "success_long": 1 / 2,
        "success_loc3": 2 / 3,
        "success_loc5": 1 / 2,
    }
