"""The GUI env (grpo_core.gui, env gui, task gui_apps): generated apps and their screens by
hand, folds and splits, every kind of bad action and a malformed-action corpus (each answered
with a reasoned observation, counted as a step, never a crash), gold actions solving every
task, the gold conversation equal to the runner's trajectory (observations masked), turn and
token caps, the tiny_gui profile, and a smoke training of grpo on a shrunken tiny_gui."""

from __future__ import annotations

import json
import math

import pytest
from test_episodes import ScriptedEngine

from grpo_core import gui
from grpo_core.episodes import ENVS, GuiEnv, chat_ids, run_episodes
from grpo_core.errors import UserError
from grpo_core.models import build_char_tokenizer
from grpo_core.rollout import SamplingParams
from grpo_core.tasks import GuiApps, Problem


@pytest.fixture(scope="module")
def task():
    return GuiApps(200, 40, 0, {}, None, {})


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _env(task=None, **params) -> GuiEnv:
    return GuiEnv(task, "gui", ENVS.resolve_params("gui", params, "env.params"))


def _settings_problem() -> Problem:
    """A hand-made settings app: the problem names a generated app, the test replaces it."""
    return Problem(
        "hand",
        "turn on Wi-Fi and set Device name to lab-3",
        "",
        {"kind": "settings", "fold": "train", "app_seed": 0, "app": "hand",
         "goal": {"Wi-Fi": "on", "Device name": "lab-3"}},
    )  # fmt: skip


def _hand_env() -> GuiEnv:
    env = _env()
    env.reset(_settings_problem(), 0)
    env.app = gui.App(
        "settings",
        "train",
        "Settings",
        [
            gui.Element("toggle", "Wi-Fi", "off"),
            gui.Element("toggle", "Sync", "on"),
            gui.Element("text", "Device name", "old"),
        ],
        window=3,
    )
    env.start = env.app.state()
    return env


# ------------------------------------------------------------------------------ apps and screens


def test_screen_and_actions_by_hand():
    env = _hand_env()
    assert env.app.screen() == (
        "Screen: Settings\n[1] toggle Wi-Fi: off\n[2] toggle Sync: on\n"
        '[3] text Device name: "old"\nShowing 1-3 of 3'
    )
    r = env.step("click(1)")
    assert r.observation.messages[0]["content"].splitlines()[:2] == [
        "[1] Wi-Fi is on",
        "Screen: Settings",
    ]
    assert r.reward == 0.0 and not r.done and r.info["trace"] == [["click", ["Wi-Fi"]]]
    r = env.step('type(3, "lab-3")\nsome trailing words')  # only the first line counts
    assert r.info["diff"] == [["Device name", "old", "lab-3"], ["Wi-Fi", "off", "on"]]
    r = env.step("done")
    assert r.done and r.observation is None and r.reward == 1.0
    assert r.info["success"] and r.info["steps"] == 3 and r.info["bad_actions"] == 0
    assert r.info["state"] == {"Wi-Fi": "on", "Sync": "on", "Device name": "lab-3"}
    # done before the goal holds: no success, reward 0
    env = _hand_env()
    env.step("click(2)")
    r = env.step("done")
    assert r.done and r.reward == 0.0 and not r.info["success"]
    assert r.info["diff"] == [["Sync", "on", "off"]]
    with pytest.raises(RuntimeError, match="reset first"):
        env.step("done")


def test_list_scrolls_and_files_navigate():
    app = gui.App(
        "list", "train", "L", [gui.Element("item", f"i{k}", "unselected") for k in range(7)], 3
    )
    assert app.screen().splitlines()[-1] == "Showing 1-3 of 7"
    _, bad = app.apply(gui.Action("click", id=5), 16)
    assert bad.kind == "not_visible" and "scroll(down)" in bad.message
    assert app.apply(gui.Action("scroll", direction="down"), 16) == ("scrolled down", None)
    assert app.top == 2 and app.screen().splitlines()[1] == "[3] item i2: unselected"
    app.apply(gui.Action("scroll", direction="down"), 16)
    assert app.top == 4  # window 3 moves by 2, at most to the last full window
    status, bad = app.apply(gui.Action("scroll", direction="down"), 16)
    assert bad is None and status.startswith("cannot scroll down") and app.top == 4
    _, bad = app.apply(gui.Action("click", id=1), 16)
    assert bad.kind == "not_visible" and "scroll(up)" in bad.message
    app.apply(gui.Action("click", id=5), 16)
    assert app.state()["i4"] == "selected"
    tree = {"": (["a"], []), "a": (["b"], ["x.txt"]), "a/b": ([], ["y.txt"])}
    f = gui.App("files", "train", "Files", [], 6, tree=tree)
    f._open("")
    assert f.screen() == "Screen: Files /\n[1] folder a\nShowing 1-1 of 1"
    f.apply(gui.Action("click", id=1), 16)
    assert f.screen().splitlines()[1:4] == ["[1] button Back", "[2] folder b", "[3] file x.txt"]
    f.apply(gui.Action("click", id=2), 16)
    f.apply(gui.Action("click", id=2), 16)
    assert f.state() == {"folder": "a/b", "opened": "a/b/y.txt"}
    f.apply(gui.Action("click", id=1), 16)
    assert f.path == "a"


def test_form_submit_records_values():
    app = gui.build_app("form", "test", 3)
    labels = [e.label for e in app.elements]
    assert labels[-2:] == ["Submit", "Cancel"]  # the held-out layout has a Cancel button
    app.apply(gui.Action("type", id=1, text="zz"), 16)
    app.apply(gui.Action("click", id=labels.index("Submit") + 1), 16)
    app.apply(gui.Action("type", id=1, text="later"), 16)  # after Submit: not sent
    assert app.state()[f"sent:{labels[0]}"] == "zz" and app.state()[labels[0]] == "later"
    app.apply(gui.Action("click", id=labels.index("Cancel") + 1), 16)
    assert app.state()[labels[0]] == ""


def test_apps_are_seeded_and_folds_disjoint(task):
    for kind in gui.KINDS:
        a, b = gui.build_app(kind, "train", 5), gui.build_app(kind, "train", 5)
        assert a.screen() == b.screen() and a.tree == b.tree
    labels = {}
    for fold in gui.FOLDS:
        s = set()
        for kind in gui.KINDS:
            for seed in range(30):
                app = gui.build_app(kind, fold, seed)
                s |= {e.label for e in app.elements if e.role not in ("button",)}
                s |= {x for subs, files in app.tree.values() for x in subs + files}
        labels[fold] = s
    assert not labels["train"] & labels["test"]
    assert not labels["train"] & labels["novel"] and not labels["test"] & labels["novel"]
    train, test = task.train(), task.test()
    assert len(train) == 200 and len(test) == 40
    assert {p.meta["fold"] for p in train} == {"train"}
    assert {p.meta["fold"] for p in test} == {"test"}
    assert [p.meta["kind"] for p in train[:4]] == list(gui.KINDS)
    assert {p.meta["level"] for p in train} == {1, 2}
    assert [p.id for p in GuiApps(200, 40, 0, {}, None, {}).train()] == [p.id for p in train]
    assert [p.question for p in GuiApps(200, 40, 1, {}, None, {}).train()] != [
        p.question for p in train
    ]
    novel = GuiApps(12, 4, 0, {}, None, {"train_apps": "novel", "tasks_per_app": 3}).train()
    assert {p.meta["fold"] for p in novel} == {"novel"}
    assert [p.meta["level"] for p in novel[:3]] == [1, 2, 1]  # max_level 2, cycling
    assert len({p.meta["app"] for p in novel}) == 4


def test_gold_actions_solve_every_task(task):
    env = _env(task)
    for p in task.train() + task.test():
        env.reset(p, 0)
        for a in env.gold_actions(p):
            r = env.step(a)
        assert r.done and r.info["success"] and r.info["bad_actions"] == 0, p.id
        assert r.info["steps"] == len(env.gold_actions(p))


# ------------------------------------------------------------------------------ bad actions


@pytest.mark.parametrize(
    ("action", "kind", "says"),
    [
        ("", "empty", "empty action"),
        ("   \n  ", "empty", "empty action"),
        ("click(" + "1" * 60 + ")", "too_long", "too long"),
        ("press the wifi button", "unparseable", "cannot parse"),
        ("click(wifi)", "unparseable", "cannot parse"),
        ("click(9)", "unknown_id", "no element [9]"),
        ("click(0)", "unknown_id", "no element [0]"),
        ('type(1, "x")', "not_text", "not a text field"),
        ('type(3, "' + "x" * 20 + '")', "text_too_long", "text too long"),
    ],
)
def test_each_bad_action_is_answered_and_counted(action, kind, says):
    env = _hand_env()
    r = env.step(action)
    text = r.observation.messages[0]["content"]
    assert not r.done and r.reward == 0.0
    assert text.startswith("error: ") and says in text
    assert f"allowed: {gui.FORMAT}" in text and "Screen: Settings" in text  # the screen again
    assert r.info["error"] == kind and r.info["bad_actions"] == 1 and r.info["steps"] == 1
    assert r.info["diff"] == [] and r.info["trace"] == [[kind, []]]


MALFORMED = [
    "", " ", "\n\n", "\t", "click", "click()", "click(-1)", "click(1.5)", "click(1,2)",
    "click[1]", "CLICK(1)", "clik(1)", "click (1)", "click(99999999999999999999)",
    'type(1 "a")', "type(1, a)", 'type(, "a")', 'type(3, "a"', "type(3, 'a')", 'type(3, "a\\"b")',
    'type(3, "' + "y" * 200 + '")', "scroll", "scroll(left)", "scroll()", "scroll(up, down)",
    "done done", "Done!", "finish", "<tool>click(1)</tool>", "```click(1)```", "{'click': 1}",
    "\x00\x01", "click(\u0661)", "\u00e9\u00e8\u00ea" * 30, "A" * 5000, "(((((", '"""',
    "click(1) click(2)", "type(2, \"on\")", 'type(3, "' + "z" * 17 + '")',
]  # fmt: skip


def test_malformed_action_corpus_never_crashes():
    """Issue 14, done-when 4 (the GUI env's part): every malformed action gets an observation
    saying what was wrong and what is allowed, and counts as a step."""
    kinds = set()
    for a in MALFORMED:
        env = _hand_env()
        r = env.step(a)
        assert not r.done and r.observation is not None, repr(a)
        text = r.observation.messages[0]["content"]
        assert text.startswith("error: ") and "allowed: click(id)" in text, repr(a)
        assert r.info["bad_actions"] == 1 and r.info["steps"] == 1, repr(a)
        kinds.add(r.info["error"])
    assert kinds == {"empty", "too_long", "unparseable", "unknown_id", "not_text", "text_too_long"}
    # a whole episode of malformed actions runs to the turn cap without a crash
    env = _hand_env()
    for a in MALFORMED:
        r = env.step(a)
    assert r.info["bad_actions"] == len(MALFORMED) and r.info["steps"] == len(MALFORMED)


def test_env_gui_needs_a_gui_task():
    with pytest.raises(UserError, match="task.name: gui_apps"):
        _env().reset(Problem("x", "q", "1", {}), 0)
    with pytest.raises(UserError, match="want one of"):
        gui.build_app("browser", "train", 0)


# ------------------------------------------------------------------------------ episodes


def test_gold_conversation_matches_the_runner(task, tok):
    from grpo_core.prepare import gold_conversation

    p = next(q for q in task.train() if q.meta["kind"] == "list" and q.meta["level"] == 2)
    gold = _env(task).gold_actions(p)
    prompt, comp, labels = gold_conversation(_env(task), p, 0, tok, max_turns=8)
    env = _env(task)
    first = chat_ids(tok, env.reset(p, 0).messages)
    assert first == prompt
    eng = ScriptedEngine(tok, [[a] for a in gold])
    ro, ep = run_episodes([env], [p], [0], [first], eng, tok, SamplingParams(), 8)
    m = int(ro.completion_mask[0].sum())
    assert ro.completion_ids[0, :m].tolist() == comp
    lm = ro.loss_mask[0, :m].tolist()
    assert [x != -100 for x in labels] == [bool(v) for v in lm]
    # the observation tokens (loss mask 0) are the env's screens, not the actions
    obs = tok.decode(ro.completion_ids[0, :m][ro.loss_mask[0, :m] == 0])
    assert "Screen: Fruit list" in obs and "click(" not in obs
    assert ep.end_reasons == ["done"] and ep.success() == [True] and ep.n_turns == [len(gold)]
    assert ep.env_reward().tolist() == [1.0]


def test_turn_and_token_caps(task, tok):
    p = task.train()[0]
    env = _env(task)
    prompts = [chat_ids(tok, env.reset(p, 0).messages)]
    eng = ScriptedEngine(tok, [["scroll(up)"]] * 3)
    ro, ep = run_episodes([env], [p], [0], prompts, eng, tok, SamplingParams(), 3)
    assert ep.end_reasons == ["max_turns"] and ep.n_turns == [3] and ep.success() == [False]
    env = _env(task)
    prompts = [chat_ids(tok, env.reset(p, 0).messages)]
    cap = len(prompts[0]) + 30  # the next screen does not fit
    ro, ep = run_episodes(
        [env], [p], [0], prompts, ScriptedEngine(tok, [["scroll(up)"]]), tok, SamplingParams(), 3,
        max_tokens=cap,
    )  # fmt: skip
    assert ep.end_reasons == ["max_tokens"] and ep.n_turns == [1]


# ------------------------------------------------------------------------------ profile, smoke


def test_tiny_gui_profile_resolves():
    from grpo_core.config import load_config
    from grpo_core.models import build_bpe_tokenizer
    from grpo_core.prepare import multi_turn_rows, tokenizer_corpus
    from grpo_core.tasks import make_task

    cfg = load_config("grpo", "tiny_gui", [])
    assert (cfg.task.name, cfg.env.name, cfg.task.template) == ("gui_apps", "gui", "gui")
    assert [r.name for r in cfg.rewards] == ["env"] and cfg.workflow.seeded_start
    assert cfg.model.tiny.tokenizer == "bpe" and cfg.sft.steps > 0
    cfg = load_config("grpo", "tiny_gui", ["task.n_train=120"])
    tok = build_bpe_tokenizer(tokenizer_corpus(cfg), cfg.model.tiny.vocab_size)
    task = make_task(cfg.task)
    longest = total = 0
    for prompt, comp, labels in multi_turn_rows(cfg, task, task.train(), tok):
        run = 0
        for x in labels:
            run = run + 1 if x != -100 else 0
            longest = max(longest, run)
        total = max(total, len(prompt) + len(comp))
    assert 3 <= longest <= cfg.rollout.max_new_tokens  # an action's tokens and its EOS
    assert total < cfg.env.max_tokens <= cfg.model.tiny.max_position_embeddings


SHRINK = [
    "run.threads=1",
    "workflow.seeded_start=false",
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
    "num_kv_heads: 2, max_position_embeddings: 1024}",
    "task.n_train=16",
    "task.n_test=4",
    "sft.steps=2",
    "sft.batch_size=4",
    "train.steps=2",
    "rollout.group_size=2",
    "rollout.prompts_per_step=2",
    "env.max_turns=3",
    "train.micro_batch_size=8",
]


@pytest.fixture(scope="module")
def gui_results(prepared_start):
    """The shrunken tiny_gui start (built, 2 SFT steps on gold conversations)."""
    return prepared_start("tiny_gui", SHRINK)


def test_grpo_smoke_training(gui_results, tmp_path):
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    cfg = load_config("grpo", "tiny_gui", [f"run.results_dir={gui_results}", *SHRINK])
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_mean"])
