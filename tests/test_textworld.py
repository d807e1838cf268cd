"""TextWorld (grpo_core.textworld_env, task tw_games, env textworld) against the real package:
seeded offline generation (deterministic, cached, disjoint splits), the env's step contract on
a generated game (bad actions, a win, the runner's caps), the walkthrough winning as SFT's gold
conversation, ALFWorld declared by a local path, and a smoke GRPO run.

Generating a game takes ~20 s on the shared 2-core CPU (plus ~35 s once per process to load
the generator's knowledge base): the module generates three tiny games (2 rooms, 2 objects,
quests of 2 commands) once, into a temporary games_dir, and every test plays those. Skips (with
the reason) where textworld is not importable."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("textworld", reason="textworld==1.7.0 (a declared dependency) not installed")

from test_episodes import ScriptedEngine  # noqa: E402

from grpo_core import textworld_env as tw  # noqa: E402
from grpo_core.episodes import (  # noqa: E402
    ENVS,
    TextWorldEnv,
    chat_ids,
    make_envs,
    run_episodes,
)
from grpo_core.errors import UserError  # noqa: E402
from grpo_core.models import build_char_tokenizer  # noqa: E402
from grpo_core.rollout import SamplingParams  # noqa: E402
from grpo_core.tasks import TwGames, make_task  # noqa: E402

SIZES = {"world_size": 2, "nb_objects": 2, "quest_length": 2}


@pytest.fixture(scope="module")
def games_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tw_games")


@pytest.fixture(scope="module")
def task(games_dir):
    t = TwGames(2, 1, 0, {}, None, {**SIZES, "games_dir": str(games_dir)})
    t.train(), t.test()  # generates the three games (cached in games_dir)
    return t


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _env(**params) -> TextWorldEnv:
    p = ENVS.resolve_params("textworld", params, "env.params")
    return TextWorldEnv(None, "plain", p)


def test_generation_is_cached_seeded_and_the_splits_disjoint(task, games_dir):
    tr, te = task.train(), task.test()
    assert [p.meta["seed"] for p in tr] == [0, 1] and [p.meta["seed"] for p in te] == [
        tw.TEST_SEED0
    ]
    assert [p.id for p in tr] == ["tw-simple-w2-o2-q2-train-s0", "tw-simple-w2-o2-q2-train-s1"]
    for p in tr + te:
        m = p.meta
        assert m["family"] == "simple" and m["max_score"] == 1.0 and p.answer == ""
        assert m["path"] == str(games_dir / "simple-w2-o2-q2" / f"{m['split']}-s{m['seed']}.z8")
        assert len(m["walkthrough"]) >= 1
        meta = json.loads(
            (games_dir / m["key"] / f"{m['split']}-s{m['seed']}.meta.json").read_text()
        )
        assert meta["walkthrough"] == m["walkthrough"] and meta["spec"]["seed"] == m["seed"]
        # the question: the objective, then the first room (a "-= Room =-" heading)
        assert p.question == f"{meta['objective']}\n\n{meta['first']}"
        assert meta["first"].startswith("-= ") and ">" not in meta["first"][-3:]
    # three different games: game ids (the package's hash of options and seed) and content
    ids = [p.meta["game_id"] for p in tr + te]
    assert len(set(ids)) == 3
    assert len({(p.question, tuple(p.meta["walkthrough"])) for p in tr + te}) == 3
    # a second task over the same games_dir reads the cache (no generation: instant)
    again = TwGames(2, 1, 99, {}, None, {**SIZES, "games_dir": str(games_dir)})
    assert [p.meta for p in again.train()] == [p.meta for p in tr]


def test_generation_is_deterministic_per_seed(task):
    # regenerate train seed 0 from scratch (the generator, not the cache): the same game
    spec = tw.GameSpec("simple", 2, 2, 2, "train", 0)
    game, _ = tw._make_game(spec)
    m = task.train()[0].meta
    assert list(game.walkthrough) == m["walkthrough"]
    assert str(game.metadata["uuid"]) == m["game_id"]
    assert game.objective == task.train()[0].question.split("\n\n")[0]


def test_bad_actions_are_explained_and_count_as_steps(task):
    p = task.train()[0]
    env = _env()
    first = env.reset(p, 0).messages
    text = first[0]["content"]
    assert text.startswith(p.question)
    valid = text.rsplit("\nValid actions: ", 1)[1].split(", ")
    assert valid == env.actions and "look" in valid and "inventory" in valid
    r = env.step("fly away\n" + p.meta["walkthrough"][0])  # the first line is the action
    assert r.observation.messages[0]["content"] == (
        "not a valid action: 'fly away'; valid actions: " + ", ".join(valid)
    )
    assert (r.reward, r.done) == (0.0, False)
    assert r.info == {
        "success": False,
        "score": 0.0,
        "max_score": 1.0,
        "steps": 1,
        "bad_actions": 1,
        "error": "not_admissible",
    }
    assert env.step("").info["error"] == "empty"
    r = env.step("x" * 65)  # over max_action_chars (64)
    assert r.info["error"] == "too_long" and r.info["steps"] == 3 and r.info["bad_actions"] == 3
    # case and spacing do not matter; a valid non-winning command is a step, not a bad action
    r = env.step("  LOOK  ")
    assert r.info["bad_actions"] == 3 and r.info["steps"] == 4 and r.info["error"] is None
    assert r.observation.messages[0]["content"].startswith("-= ")
    # only_admissible false: the game's own parser answers a command it does not know
    env2 = _env(only_admissible=False, show_actions=False)
    env2.reset(p, 0)
    r = env2.step("dance")
    assert r.info["bad_actions"] == 0 and r.reward == 0.0 and not r.done
    assert "Valid actions" not in r.observation.messages[0]["content"]


@pytest.mark.parametrize("i", [0, 1])
def test_the_walkthrough_wins_with_rewards_summing_to_one(task, i):
    p = task.train()[i]
    env = _env()
    env.reset(p, 0)
    walk = TextWorldEnv(None, "plain", {}).gold_actions(p)
    assert walk == p.meta["walkthrough"] == [task.sft_target(p), *walk[1:]]
    results = [env.step(a) for a in walk]
    assert [r.done for r in results] == [False] * (len(walk) - 1) + [True]
    assert results[-1].observation is None
    last = results[-1].info
    assert last["success"] is True and last["steps"] == len(walk) and last["score"] == 1.0
    assert math.isclose(sum(r.reward for r in results), 1.0)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("look")
    # a reset replays the same game from its start
    env.reset(p, 0)
    assert env.steps == 0 and env.score == 0.0
    assert [env.step(a).reward for a in walk][-1] == 1.0


def test_runner_caps_turns_and_tokens_and_gold_conversation(task, tok):
    from grpo_core.prepare import gold_conversation

    p = task.train()[0]
    walk = p.meta["walkthrough"]

    class Cfg:
        name, params = "textworld", {}

    # turn cap: two bad actions, then the cap (2 turns) ends the episode unwon
    envs = make_envs(Cfg, None, "plain", 1)
    prompts = [chat_ids(tok, envs[0].reset(p, 0).messages)]
    ro, ep = run_episodes(
        envs,
        [p],
        [0],
        prompts,
        ScriptedEngine(tok, [["jump"], ["jump"]]),
        tok,
        SamplingParams(),
        2,
    )
    assert ep.end_reasons == ["max_turns"] and ep.n_turns == [2]
    assert ep.success() == [False] and ep.infos[0]["bad_actions"] == 2
    # token cap: the first observation after a turn would pass it
    envs = make_envs(Cfg, None, "plain", 1)
    prompts = [chat_ids(tok, envs[0].reset(p, 0).messages)]
    script = [[walk[0]]] + [[a] for a in walk[1:]]
    ro, ep = run_episodes(
        envs,
        [p],
        [0],
        prompts,
        ScriptedEngine(tok, script),
        tok,
        SamplingParams(),
        8,
        max_tokens=len(prompts[0]) + 20,
    )
    assert ep.end_reasons == ["max_tokens"] and ep.n_turns == [1]
    # the gold conversation (SFT's rows: grpo_core.prepare) wins through the runner
    env = _env()
    prompt, comp, labels = gold_conversation(env, p, 0, tok, max_turns=8)
    envs = make_envs(Cfg, None, "plain", 1)
    prompts = [chat_ids(tok, envs[0].reset(p, 0).messages)]
    ro, ep = run_episodes(
        envs,
        [p],
        [0],
        prompts,
        ScriptedEngine(tok, [[a] for a in walk]),
        tok,
        SamplingParams(),
        8,
    )
    assert prompts[0] == prompt
    n = int(ro.completion_mask[0].sum())
    assert ro.completion_ids[0, :n].tolist() == comp
    assert [int(x != -100) for x in labels] == ro.loss_mask[0, :n].tolist()
    assert ep.success() == [True] and ep.end_reasons == ["done"]
    assert ep.env_reward().tolist() == [1.0]


def test_an_engine_failure_ends_the_episode_not_the_run(task):
    env = _env()
    env.reset(task.train()[0], 0)

    def boom(_):
        raise RuntimeError("frotz died")

    env.game.step = boom
    r = env.step("look")
    assert r.done and r.observation is None and r.reward == 0.0
    assert r.info["success"] is False and r.info["error"] == "engine: RuntimeError: frotz died"
    env.reset(task.train()[0], 0)  # a fresh game
    assert env.step("look").info["error"] is None


def test_bad_problems_and_alfworld_without_data_are_clear_errors(tmp_path):
    from grpo_core.tasks import Problem

    with pytest.raises(UserError, match="use it with task.name: tw_games"):
        _env().reset(Problem("x", "q", ""), 0)
    with pytest.raises(UserError, match="set task.params.alfworld_dir"):
        TwGames(2, 1, 0, {}, None, {"family": "alfworld"}).train()
    with pytest.raises(UserError, match="is not a directory"):
        TwGames(2, 1, 0, {}, None, {"family": "alfworld", "alfworld_dir": str(tmp_path)}).train()
    (tmp_path / "train" / "task-1").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no \*\.tw-pddl game"):
        TwGames(2, 1, 0, {}, None, {"family": "alfworld", "alfworld_dir": str(tmp_path)}).train()
    with pytest.raises(UserError, match="cannot be generated"):
        tw.GameSpec("alfworld", 2, 2, 2, "train", 0)
    with pytest.raises(Exception, match="family"):
        TwGames(2, 1, 0, {}, None, {"family": "zork"}).train()


def test_textworld_trains_through_the_trainer(smoke_cfg, games_dir, task, tmp_path):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg(
        "grpo",
        [
            "task.name=tw_games",
            "task.template=plain",
            "task.n_train=2",
            "task.n_test=1",
            f"task.params={{world_size: 2, nb_objects: 2, quest_length: 2, games_dir: {games_dir}}}",
            "env.name=textworld",
            "env.max_turns=3",
            "rewards=[{name: env}]",
            "train.steps=2",
            "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=8",
        ],
    )
    assert make_task(cfg.task).train()[0].meta == task.train()[0].meta  # the cached games
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
    # an untrained model's lines are rarely admissible: episodes ran to the turn cap, and the
    # loss mask left the observations out
    assert max(seen["turns"]) > 1
    ro = seen["ro"]
    assert int(ro.loss_mask.sum()) < int(ro.completion_mask.sum())


@pytest.mark.slow
def test_cooking_family_generates_and_its_walkthrough_wins(tmp_path):
    """The household (tw-cooking) family: one game with 1 ingredient to take from the fridge
    (generating it takes ~2 min on the shared CPU: the recipe knowledge base loads first)."""
    t = TwGames(
        1, 1, 0, {}, None,
        {"family": "cooking", "world_size": 1, "nb_objects": 1, "quest_length": 1,
         "games_dir": str(tmp_path)},
    )  # fmt: skip
    (p,) = t.train()
    assert p.id == "tw-cooking-w1-o1-q1-c00-train-s0"
    assert "cookbook" in p.question and p.meta["max_score"] >= 1.0
    walk = p.meta["walkthrough"]
    assert "prepare meal" in walk and walk[-1] == "eat meal"
    env = _env()
    env.reset(p, 0)
    results = [env.step(a) for a in walk]
    assert results[-1].done and results[-1].info["success"] is True
    assert results[-1].info["score"] == p.meta["max_score"]
    assert math.isclose(sum(r.reward for r in results), 1.0)  # normalize_score


def test_tiny_tw_profile_resolves():
    """config/profiles/tiny_tw.yaml resolves under its reproductions (no games are generated:
    the task is only configured)."""
    from grpo_core.config import load_config

    cfg = load_config("grpo", "tiny_tw", [])
    for repro in cfg.workflow.reproductions:
        load_config(repro, "tiny_tw", [])
    assert (cfg.task.name, cfg.env.name) == ("tw_games", "textworld")
    assert [r.name for r in cfg.rewards] == ["env"] and cfg.sft.steps > 0
    p = cfg.task.params
    assert (p["family"], p["world_size"], p["nb_objects"], p["quest_length"]) == (
        "simple", 3, 4, 3,
    )  # fmt: skip
    assert cfg.env.max_tokens <= cfg.model.tiny.max_position_embeddings
