"""Environments and the episode runner: the one place a prompt becomes a trajectory.

An **env** (registered in :data:`ENVS` by name, config ``env.name``) turns a problem into an
interaction::

    obs = env.reset(problem, seed)          # Observation: chat messages (+ media later)
    result = env.step(action_text)          # StepResult(observation | None, reward | None,
                                            #            done, info)

:class:`SingleTurnEnv` wraps a task: its observation is the task's prompt template rendered as
one user message, and one action ends the episode with no env reward (the configured reward
functions grade the completion, as before). Multi-turn envs return observations that are
appended to the conversation as the next user turn, and may reward turns themselves (reward
function ``env``).

:func:`run_episodes` drives a batch of envs with a rollout engine for up to ``max_turns``
turns. Every turn generates for the episodes still running, from their whole conversation so
far, so a trajectory is one sequence: prompt (the first observation), then the policy's turns
with the observation tokens between them. Its :class:`~grpo_core.rollout.Rollouts` carry

- ``completion_mask``: 1 on every token after the prompt (policy and observation: attention);
- ``loss_mask``: 1 only on the policy's tokens (what losses, KL and entropy count);
- ``turn_ids``: the turn of each policy token (0, 1, ...), -1 on observation tokens;

and an :class:`Episodes` record holds the per-turn env rewards, turn counts, infos and the
texts of every turn. With one turn (every single-turn env) the rollouts are exactly the
engine's (``loss_mask`` None: the completion mask), so single-turn training is unchanged.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch

from grpo_core import params as P
from grpo_core.errors import UserError
from grpo_core.registry import Registry
from grpo_core.rollout import Rollouts, SamplingParams

ENVS: Registry = Registry("env")


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat (the tokenizer's chat template), with the generation prompt."""
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


# a fixed two-message chat: the observation tokens of a later user turn are the chat template's
# tokens after it (templates render a conversation as the concatenation of its turns)
_BASE = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]


def observation_ids(tokenizer, messages: list[dict], eos_ids: set[int]) -> list[int]:
    """The tokens that follow a finished policy turn (which ended with an EOS token) when the
    env answers with ``messages``: whatever the chat template writes after the assistant's end
    token (e.g. a newline), the new messages, and the next generation prompt."""
    base = chat_ids(tokenizer, _BASE, add_generation_prompt=False)
    full = chat_ids(tokenizer, [*_BASE, *messages], add_generation_prompt=True)
    if full[: len(base)] != base:
        raise UserError(
            "the tokenizer's chat template does not render a conversation as the concatenation "
            "of its turns, so observation tokens cannot be appended to a trajectory; use a "
            "template that does (multi-turn envs need one)"
        )
    # the template's tokens after the assistant's end token (the completion ends at its EOS)
    ends = [i for i, t in enumerate(base) if t in eos_ids]
    after_eos = base[ends[-1] + 1 :] if ends else []
    return after_eos + full[len(base) :]


@dataclass
class Observation:
    """What the env shows the policy: chat messages (``role`` / ``content``); ``media`` for
    image and video inputs (a VLM policy's processor reads them)."""

    messages: list[dict]
    media: dict | None = None


@dataclass
class StepResult:
    observation: Observation | None  # None: nothing more to show (the episode ends)
    reward: float | None  # None: the env does not reward this turn (reward functions do)
    done: bool
    info: dict = field(default_factory=dict)


class Env:
    """Interface of an environment. One instance runs one episode at a time:
    ``reset(problem, seed)`` then ``step(action_text)`` until ``done``. ``info`` may carry
    ``success`` (bool: the episode solved its problem; training accuracy and evaluation use it)
    and anything the env wants logged."""

    def __init__(self, task, template: str, params: dict):
        self.task, self.template, self.params = task, template, params

    def reset(self, problem, seed: int) -> Observation:
        raise NotImplementedError

    def step(self, action: str) -> StepResult:
        raise NotImplementedError

    def gold_actions(self, problem) -> list[str] | None:
        """Actions that solve ``problem`` from its reset, one per turn, for multi-turn SFT
        (grpo_core.prepare plays them in a fresh env, so the observations are the real ones);
        None: the env has none (SFT then teaches the task's single-turn target)."""
        return None


@ENVS.register("single_turn")
class SingleTurnEnv(Env):
    """Today's task prompt as one user turn; one action ends the episode. Rewards come from the
    configured reward functions (the task's grade), not from the env."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core.tasks import render_prompt

        return Observation([{"role": "user", "content": render_prompt(self.template, problem)}])

    def step(self, action: str) -> StepResult:
        return StepResult(None, None, True)


@ENVS.register("guess_number", params=P.GuessNumberParams)
class GuessNumberEnv(Env):
    """A small multi-turn env (the reference example for new envs, and the multi-turn test).
    The problem's answer is a hidden integer; the first observation is the task's prompt. Each
    turn the policy's last number is its guess: right gives reward ``reward`` and ends the
    episode (success); wrong gives reward 0 and the hint "higher" or "lower" (or "no number"
    when there is none) as the next user turn, until ``max_turns`` turns are used."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core.tasks import render_prompt

        self.problem = problem
        self.turn = 0
        return Observation([{"role": "user", "content": render_prompt(self.template, problem)}])

    def step(self, action: str) -> StepResult:
        from grpo_core.tasks import extract_answer

        self.turn += 1
        guess = extract_answer(action)
        gold = int(self.problem.answer)
        try:
            g = int(float(guess)) if guess is not None else None
        except ValueError:
            g = None
        if g == gold:
            return StepResult(None, float(self.params["reward"]), True, {"success": True})
        hint = "no number" if g is None else ("higher" if g < gold else "lower")
        return StepResult(
            Observation([{"role": "user", "content": hint}]), 0.0, False, {"success": False}
        )

    def gold_actions(self, problem) -> list[str]:
        """One turn: the task's SFT target (the number)."""
        return [self.task.sft_target(problem) if self.task is not None else problem.answer]


def _action_key(text: str) -> str:
    return " ".join(text.split()).lower()


class TextGameEnv(Env):
    """A text game behind an env (twx, textworld): one started game per env (``self.game``),
    observations that end with the valid actions when ``show_actions``."""

    def __init__(self, task, template: str, params: dict):
        super().__init__(task, template, params)
        self.game = None

    def _text(self, text: str, actions: list[str]) -> str:
        text = text.strip()
        if self.params.get("show_actions", True):
            text += "\nValid actions: " + ", ".join(actions)
        return text


@ENVS.register("twx", params=P.TwxEnvParams)
class TwxEnv(TextGameEnv):
    """A TextWorldExpress game (grpo_core.twx; problems from the task twx_coin). ``reset``
    generates the problem's game (fold, seed, params: the episode seed is not used, the game is
    fixed by the problem) and shows the task's prompt (the task description and the first
    observation); each step takes the first line of the policy's text (stripped; matched to a
    valid action ignoring case and repeated spaces). An action that is not valid is answered
    "not a valid action: '...'; valid actions: ..." with reward 0 and counts as a step. The
    reward of a step is the game's score delta (the coin: 1); the episode ends when the game
    says so (won or lost) or at env.max_turns. Observations end with the valid actions when
    ``show_actions``. ``info``: success (the game won), score, steps."""

    def reset(self, problem, seed: int) -> Observation:
        import weakref

        from grpo_core import twx
        from grpo_core.tasks import render_prompt

        if not {"game", "params", "fold", "seed"} <= set(problem.meta):
            raise UserError(
                f"env twx: problem {problem.id} is not a TextWorldExpress game (its meta has no "
                "game / params / fold / seed); use it with task.name: twx_coin"
            )
        rt, spec = twx.runtime(), twx.spec_of(problem.meta)
        if self.game is None or self.game.rt is not rt or self.game.loaded != spec.key:
            if self.game is not None:
                self._release.detach()
                self.game.rt.release(self.game)
            # a slot with this game's generator loaded; back to the pool when the env goes
            self.game = rt.acquire(spec)
            self._release = weakref.finalize(self, rt.release, self.game)
        out = self.game.reset(spec)
        self.actions = out.valid_actions
        self.score, self.steps, self.done = 0.0, 0, False
        first = render_prompt(self.template, problem)
        return Observation([{"role": "user", "content": self._text(first, self.actions)}])

    def info(self, success: bool) -> dict:
        return {"success": success, "score": self.score, "steps": self.steps}

    def step(self, action: str) -> StepResult:
        if self.done:
            raise RuntimeError("TwxEnv.step after the episode ended; reset first")
        self.steps += 1
        lines = action.strip().splitlines()
        line = lines[0].strip() if lines else ""
        by_key = {_action_key(a): a for a in self.actions}
        if _action_key(line) not in by_key:
            msg = f"not a valid action: {line!r}; valid actions: " + ", ".join(self.actions)
            return StepResult(
                Observation([{"role": "user", "content": msg}]), 0.0, False, self.info(False)
            )
        out = self.game.step(by_key[_action_key(line)])
        reward = out.score - self.score
        self.score, self.actions = out.score, out.valid_actions
        if out.success or out.failure:
            self.done = True
            return StepResult(None, reward, True, self.info(out.success))
        obs = Observation([{"role": "user", "content": self._text(out.observation, self.actions)}])
        return StepResult(obs, reward, False, self.info(False))

    def gold_actions(self, problem) -> list[str]:
        """The coin game's fixed shortest winning path (grpo_core.twx.coin_shortest_path, cached
        by the task when it is twx_coin), other games' the package's gold path."""
        from grpo_core import twx

        spec = twx.spec_of(problem.meta)
        if spec.game != "coin":
            return twx.gold_actions(spec)
        cache = self.task.__dict__.setdefault("_shortest", {}) if self.task is not None else {}
        if problem.id not in cache:
            cache[problem.id] = twx.coin_shortest_path(spec)
        return list(cache[problem.id])


_TW_POOL: dict[str, list] = {}  # game path -> started games not in use (this process's)


def _tw_acquire(path: str):
    from grpo_core import textworld_env as tw

    free = _TW_POOL.get(path)
    return free.pop() if free else tw.TwGame(path)


def _tw_release(game) -> None:
    _TW_POOL.setdefault(game.path, []).append(game)


@ENVS.register("textworld", params=P.TextWorldEnvParams)
class TextWorldEnv(TextGameEnv):
    """A TextWorld game (grpo_core.textworld_env; problems from the task tw_games). ``reset``
    starts the problem's game file (the episode seed is not used: the game is fixed by the
    problem; started games are pooled per file and reused) and shows the task's prompt (the
    objective and the first room). Each step takes the first line of the policy's text
    (stripped, matched to an admissible command ignoring case and repeated spaces). A bad action
    (longer than ``max_action_chars``, or not admissible when ``only_admissible``) is answered
    "not a valid action: '...'; valid actions: ..." with reward 0 and counts as a step. A
    step's reward is the score change (over the game's max score when ``normalize_score``); the
    episode ends when the game is won or lost, at env.max_turns or env.max_tokens (the
    runner's caps). An interpreter failure ends the episode (reward 0, ``error`` in the info),
    it never stops the run. Observations end with the admissible commands when
    ``show_actions``. ``info``: success (won), score, max_score, steps, bad_actions, error."""

    def _drop(self) -> None:
        if self.game is not None:
            self._release.detach()
            self.game.close()
            self.game = None

    def reset(self, problem, seed: int) -> Observation:
        import weakref

        from grpo_core.tasks import render_prompt

        path = problem.meta.get("path")
        if not path or "walkthrough" not in problem.meta:
            raise UserError(
                f"env textworld: problem {problem.id} is not a TextWorld game (its meta has no "
                "path / walkthrough); use it with task.name: tw_games"
            )
        if self.game is None or self.game.path != path:
            if self.game is not None:
                self._release.detach()
                _tw_release(self.game)
            self.game = _tw_acquire(path)
            self._release = weakref.finalize(self, _tw_release, self.game)
        _, out = self.game.reset()
        self.actions = out.valid_actions
        self.max_score = out.max_score or float(problem.meta.get("max_score") or 1.0)
        self.score, self.steps, self.bad, self.done = 0.0, 0, 0, False
        first = render_prompt(self.template, problem)
        return Observation([{"role": "user", "content": self._text(first, self.actions)}])

    def info(self, success: bool, error: str | None = None) -> dict:
        return {
            "success": success,
            "score": self.score,
            "max_score": self.max_score,
            "steps": self.steps,
            "bad_actions": self.bad,
            "error": error,
        }

    def step(self, action: str) -> StepResult:
        if self.done:
            raise RuntimeError("TextWorldEnv.step after the episode ended; reset first")
        self.steps += 1
        p = self.params
        lines = action.strip().splitlines()
        line = lines[0].strip() if lines else ""
        by_key = {_action_key(a): a for a in self.actions}
        cmd = by_key.get(_action_key(line))
        if len(line) > int(p["max_action_chars"]) or not line:
            cmd, error = None, "too_long" if line else "empty"
        elif cmd is None and p["only_admissible"]:
            error = "not_admissible"
        else:
            cmd, error = cmd or line, None
        if cmd is None:
            self.bad += 1
            msg = f"not a valid action: {line[: int(p['max_action_chars'])]!r}; valid actions: "
            msg += ", ".join(self.actions)
            obs = Observation([{"role": "user", "content": msg}])
            return StepResult(obs, 0.0, False, self.info(False, error))
        try:
            out = self.game.step(cmd)
        except Exception as e:  # noqa: BLE001 (the interpreter died: end this episode only)
            self.done = True
            self._drop()
            return StepResult(None, 0.0, True, self.info(False, f"engine: {type(e).__name__}: {e}"))
        delta = out.score - self.score
        reward = delta / self.max_score if p["normalize_score"] and self.max_score else delta
        self.score, self.actions = out.score, out.valid_actions
        if out.won or out.lost or out.done:
            self.done = True
            return StepResult(None, reward, True, self.info(out.won))
        obs = Observation([{"role": "user", "content": self._text(out.observation, self.actions)}])
        return StepResult(obs, reward, False, self.info(False))

    def gold_actions(self, problem) -> list[str]:
        """The generator's walkthrough (problem.meta: checked to win when the game was made)."""
        walk = list(problem.meta.get("walkthrough") or [])
        if not walk:
            raise UserError(f"env textworld: problem {problem.id} has no walkthrough (gold path)")
        return walk


@ENVS.register("search", params=P.SearchEnvParams)
class SearchEnv(Env):
    """A Search-R1 style search agent over the task's generated corpus (task search_qa;
    grpo_core.search). Each turn is one action (the first tag of the policy's text):
    ``<search>query</search>`` (or ``<search kb="name">`` to search one knowledge base) is
    answered ``<information>`` with the BM25 top ``top_k`` documents (reward 0);
    ``<answer>text</answer>`` ends the episode with reward = Search-R1's exact match against the
    gold answer (success = EM 1). A bad action (no tag, unclosed tag, empty query, unknown kb,
    a query over ``max_query_chars``, a search past ``max_searches``) is answered with what was
    wrong and the format, reward 0, and counts as a step. ``info``: success, em, searches
    (count), bad_actions (count), steps, queries ([kb or None, query] per search), trace ([kind,
    kb, query / answer / error] per step: what the step rewards of grpo_core.rewards read),
    answer."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core.tasks import render_prompt

        corpus = getattr(self.task, "corpus", None)
        if corpus is None or "support" not in problem.meta:
            raise UserError(
                f"env search: problem {problem.id} of task "
                f"{getattr(self.task, 'name', type(self.task).__name__)!r} has no search corpus; "
                "use it with task.name: search_qa"
            )
        self.corpus = corpus()
        self.problem = problem
        self.searches, self.bad, self.steps, self.done = 0, 0, 0, False
        self.queries: list[list] = []
        self.trace: list[list] = []  # per step: [kind, kb, query or answer or error]
        self.answer: str | None = None
        return Observation([{"role": "user", "content": render_prompt(self.template, problem)}])

    def info(self, em: float) -> dict:
        return {
            "success": em >= 1.0,
            "em": em,
            "searches": self.searches,
            "bad_actions": self.bad,
            "steps": self.steps,
            "queries": [list(q) for q in self.queries],
            "trace": [list(t) for t in self.trace],
            "answer": self.answer,
        }

    def step(self, action: str) -> StepResult:
        from grpo_core import search
        from grpo_core.tasks import exact_match

        if self.done:
            raise RuntimeError("SearchEnv.step after the episode ended; reset first")
        self.steps += 1
        kbs = self.corpus.kbs
        act = search.parse_action(action, kbs, int(self.params["max_query_chars"]))
        if act.kind == "search" and self.searches >= int(self.params["max_searches"]):
            act = search.Action(
                "bad",
                error=f"search limit reached ({self.searches} searches); answer now",
            )
        self.trace.append([act.kind, act.kb, act.query or act.answer or act.error])
        if act.kind == "answer":
            self.done, self.answer = True, act.answer
            em = exact_match(act.answer, [self.problem.answer])
            return StepResult(None, em, True, self.info(em))
        if act.kind == "bad":
            self.bad += 1
            text = search.bad_observation(act.error, kbs)
        else:
            self.searches += 1
            self.queries.append([act.kb, act.query])
            ids = search.retrieve(self.corpus, act.query, act.kb, int(self.params["top_k"]))
            text = search.information(self.corpus, ids)
        return StepResult(
            Observation([{"role": "user", "content": text}]), 0.0, False, self.info(0.0)
        )

    def gold_actions(self, problem) -> list[str]:
        """A search for each supporting entity's name (in its kb when ``gold_route``), then the
        answer: the chain the question was generated from."""
        route = bool(self.params.get("gold_route", True))
        out = [
            f'<search kb="{kb}">{name}</search>' if route else f"<search>{name}</search>"
            for name, kb in zip(problem.meta["support"], problem.meta["support_kbs"])
        ]
        return [*out, f"<answer>{problem.answer}</answer>"]


@ENVS.register("tools", params=P.ToolsEnvParams)
class ToolsEnv(Env):
    """Tool use (grpo_core.tools): each turn is one tool call, ``<tool name="calculator">3*(4+5)
    </tool>`` or ``<tool name="python">print(2**10)</tool>``, answered by the next observation
    ``<result>27</result>``, or the answer (a turn without a tool tag), which ends the episode
    and is graded by the task's one grading function (grpo_core.tasks.grade_texts): reward
    ``reward`` x grade, success when the grade is 1. The calculator is an ``ast`` evaluator,
    python the sandbox (grpo_core.sandbox, limits ``params.sandbox``). A bad action (an
    unparseable or repeated tag, an unknown tool, an empty or too long input, no answer in the
    text) or a failed tool (a calculator error, a python error / timeout) is answered
    ``<error>what was wrong; the format</error>`` with reward 0 and counts as a step; the
    episode then goes on, up to env.max_turns turns and env.max_tokens tokens. The first
    observation is the task's prompt, after the tools' description when ``instructions``.
    ``info``: success, tool_calls (calls made so far, failed ones too), bad_actions (so far),
    tool (this turn's tool or None), error (this turn's kind of failure or None), steps.
    Python calls run one at a time in the runner's loop (a fresh sandbox each, ~0.2-0.3 s)."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core.tasks import render_prompt
        from grpo_core.tools import INSTRUCTIONS

        self.problem = problem
        self.calls = self.bad = self.steps = 0
        self.done = False
        prompt = render_prompt(self.template, problem)
        if self.params.get("instructions", True):
            prompt = INSTRUCTIONS + "\n\n" + prompt
        return Observation([{"role": "user", "content": prompt}])

    def info(self, success: bool, tool: str | None = None, error: str | None = None) -> dict:
        return {
            "success": success,
            "tool_calls": self.calls,
            "bad_actions": self.bad,
            "tool": tool,
            "error": error,
            "steps": self.steps,
        }

    def _reply(self, text: str, tool: str | None, error: str | None) -> StepResult:
        tag = "error" if error else "result"
        obs = Observation([{"role": "user", "content": f"<{tag}>{text}</{tag}>"}])
        return StepResult(obs, 0.0, False, self.info(False, tool, error))

    def step(self, action: str) -> StepResult:
        from grpo_core.sandbox import SandboxConfig
        from grpo_core.tasks import extract_answer, grade_texts
        from grpo_core.tools import Bad, format_hint, parse_action, run_tool

        if self.done:
            raise RuntimeError("ToolsEnv.step after the episode ended; reset first")
        self.steps += 1
        p = self.params
        parsed = parse_action(action, tuple(p["tools"]), int(p["max_input_chars"]))
        if isinstance(parsed, Bad):
            self.bad += 1
            return self._reply(parsed.message, None, parsed.kind)
        if parsed is not None:  # a tool call
            self.calls += 1
            ok, text = run_tool(parsed, SandboxConfig(**p["sandbox"]), int(p["max_result_chars"]))
            return self._reply(text, parsed.tool, None if ok else "tool_error")
        if extract_answer(action) is None:
            self.bad += 1
            return self._reply(
                f"no tool call and no answer in the turn; {format_hint(p['tools'])}",
                None,
                "no_answer",
            )
        (grade,) = grade_texts(self.task, [action], [self.problem])
        self.done = True
        success = grade.score >= 1.0
        return StepResult(None, float(p["reward"]) * grade.score, True, self.info(success))

    def gold_actions(self, problem) -> list[str]:
        """A calculator call on the problem's expression, then the answer (the task's SFT
        target); for a share 1 - ``gold_tool_frac`` of the problems (fixed by the problem id)
        the answer alone. Needs problems with an ``expression`` (the arithmetic tasks)."""
        import zlib

        answer = self.task.sft_target(problem) if self.task is not None else problem.answer
        expr = problem.meta.get("expression")
        frac = float(self.params.get("gold_tool_frac", 1.0))
        if zlib.crc32(problem.id.encode()) % 1000 >= frac * 1000:
            return [answer]
        if not expr:
            raise UserError(
                f"env tools: problem {problem.id} has no expression for the gold calculator "
                "call; use an arithmetic task (arith_mix) or env.params.gold_tool_frac: 0"
            )
        return [f'<tool name="calculator">{expr}</tool>', answer]


@ENVS.register("gui", params=P.GuiEnvParams)
class GuiEnv(Env):
    """GUI control, text first (grpo_core.gui; problems from the task gui_apps): the first
    observation is the task's prompt (the instruction) and the app's screen as an
    accessibility tree (element ids, roles, labels, values, the visible range). Each turn is
    one action, the first line of the policy's text: ``click(id)``, ``type(id, "text")``,
    ``scroll(up|down)`` or ``done``, answered with a status line and the new screen. ``done``
    ends the episode: reward ``reward`` and success when the app's state holds the task's goal,
    else 0. A bad action (empty, over ``max_action_chars``, unparseable, an id not on the
    screen, an element scrolled out of view, typing into a non-text element, a text over
    ``max_text_chars``) is answered "error: what was wrong; ..." with the allowed actions,
    reward 0, and counts as a step; the screen is shown again. Turn and token caps are
    env.max_turns / env.max_tokens. ``info``: success, steps, bad_actions, error (this turn's
    kind or None), done (``done`` was called), app, goal, state (the app's state now), diff
    (:func:`grpo_core.gui.state_diff` from the first screen's state: the world-state change a
    judge reads), trace ([action or error kind, keys the step changed] per step)."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core import gui
        from grpo_core.tasks import render_prompt

        m = problem.meta
        if not {"kind", "fold", "app_seed", "goal"} <= set(m):
            raise UserError(
                f"env gui: problem {problem.id} is not a GUI task (its meta has no kind / fold / "
                "app_seed / goal); use it with task.name: gui_apps"
            )
        self.problem = problem
        self.app = gui.build_app(m["kind"], m["fold"], int(m["app_seed"]))
        self.goal = dict(m["goal"])
        self.start = self.app.state()
        self.steps = self.bad = 0
        self.done = False
        self.trace: list[list] = []
        text = render_prompt(self.template, problem) + "\n" + self.app.screen()
        return Observation([{"role": "user", "content": text}])

    def info(self, success: bool, error: str | None = None) -> dict:
        from grpo_core import gui

        state = self.app.state()
        return {
            "success": success,
            "steps": self.steps,
            "bad_actions": self.bad,
            "error": error,
            "done": self.done,
            "app": self.problem.meta.get("app"),
            "goal": dict(self.goal),
            "state": state,
            "diff": gui.state_diff(self.start, state),
            "trace": [list(t) for t in self.trace],
        }

    def step(self, action: str) -> StepResult:
        from grpo_core import gui

        if self.done:
            raise RuntimeError("GuiEnv.step after the episode ended; reset first")
        self.steps += 1
        p = self.params
        act = gui.parse_action(action, int(p["max_action_chars"]))
        if isinstance(act, gui.Action) and act.kind == "done":
            self.done = True
            ok = gui.goal_met(self.goal, self.app.state())
            self.trace.append(["done", []])
            return StepResult(None, float(p["reward"]) if ok else 0.0, True, self.info(ok))
        before = self.app.state()
        if isinstance(act, gui.Bad):
            status, bad = act.message, act
        else:
            status, bad = self.app.apply(act, int(p["max_text_chars"]))
        if bad is not None:
            self.bad += 1
            self.trace.append([bad.kind, []])
            text = f"error: {bad.message}\nallowed: {gui.FORMAT}\n{self.app.screen()}"
        else:
            changed = [d[0] for d in gui.state_diff(before, self.app.state())]
            self.trace.append([act.kind, changed])
            text = f"{status}\n{self.app.screen()}"
        obs = Observation([{"role": "user", "content": text}])
        return StepResult(obs, 0.0, False, self.info(False, bad.kind if bad else None))

    def gold_actions(self, problem) -> list[str]:
        """The shortest action sequence that reaches the goal, then ``done``
        (grpo_core.gui.gold_actions)."""
        from grpo_core import gui

        m = problem.meta
        return gui.gold_actions(gui.build_app(m["kind"], m["fold"], int(m["app_seed"])), m["goal"])


def make_envs(env_cfg, task, template: str, n: int) -> list[Env]:
    """``n`` fresh envs of ``env_cfg`` (one per episode of a batch)."""
    cls = ENVS.get(env_cfg.name, "env.name")
    params = ENVS.resolve_params(env_cfg.name, dict(env_cfg.params), "env.params")
    return [cls(task, template, params) for _ in range(n)]


@dataclass
class Episodes:
    """Per episode of a batch (N rows): env rewards of each turn (None where the env gave
    none), the number of policy turns, the last info, the text of every policy turn, and why
    the episode ended: "done" (the env said so), "max_turns", "length" (a turn hit
    max_new_tokens), "max_tokens" (the trajectory hit env.max_tokens)."""

    turn_rewards: list[list[float | None]]
    n_turns: list[int]
    infos: list[dict]
    turn_texts: list[list[str]]
    end_reasons: list[str]
    # the media of every observation shown (first observation first; None where it had none),
    # for a policy that reads images or video (a VLM's processor)
    media: list[list[dict | None]] = field(default_factory=list)
    # the text of the observation each turn's action was taken in (turn 0: the first
    # observation; turn t: what the env answered to turn t - 1), one per policy turn: the
    # state a step-level advantage (gigpo's anchor states, salt's graph) groups turns by
    obs_texts: list[list[str]] = field(default_factory=list)

    def env_reward(self) -> torch.Tensor:
        """[N] the sum of each episode's env rewards (0 where the env gave none)."""
        return torch.tensor(
            [sum(r for r in rs if r is not None) for rs in self.turn_rewards], dtype=torch.float32
        )

    def success(self) -> list[bool | None]:
        return [i.get("success") for i in self.infos]

    def select(self, idx: list[int]) -> Episodes:
        """The episodes ``idx`` (in that order)."""
        idx = list(idx)

        def pick(xs: list) -> list:
            return [xs[i] for i in idx] if xs else []

        return Episodes(
            pick(self.turn_rewards),
            pick(self.n_turns),
            pick(self.infos),
            pick(self.turn_texts),
            pick(self.end_reasons),
            media=pick(self.media),
            obs_texts=pick(self.obs_texts),
        )

    @staticmethod
    def concat(parts: list[Episodes]) -> Episodes:
        """The episodes of ``parts``, one after the other."""

        def cat(name: str) -> list:
            return [x for p in parts for x in getattr(p, name)]

        return Episodes(
            cat("turn_rewards"),
            cat("n_turns"),
            cat("infos"),
            cat("turn_texts"),
            cat("end_reasons"),
            media=cat("media"),
            obs_texts=cat("obs_texts"),
        )

    def tool_calls(self) -> list[int] | None:
        """[N] tool calls of each episode (an env that counts them, e.g. tools: info
        ``tool_calls``), None when the env does not."""
        if not self.infos or any("tool_calls" not in i for i in self.infos):
            return None
        return [int(i["tool_calls"]) for i in self.infos]


def message_text(messages: list[dict]) -> str:
    """The text of an observation's chat messages (their contents joined by newlines; the text
    parts of a content list)."""
    out = []
    for m in messages:
        c = m.get("content", "")
        if isinstance(c, list):
            c = "".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        out.append(str(c))
    return "\n".join(out)

    def tool_calls(self) -> list[int] | None:
        """[N] tool calls of each episode (an env that counts them, e.g. tools: info
        ``tool_calls``), None when the env does not."""
        if not self.infos or any("tool_calls" not in i for i in self.infos):
            return None
        return [int(i["tool_calls"]) for i in self.infos]


def run_episodes(
    envs: list[Env],
    problems: list,
    seeds: list[int],
    prompts: list[list[int]],
    engine,
    tokenizer,
    params: SamplingParams,
    max_turns: int = 1,
    max_tokens: int | None = None,
    turn_seed=None,
    first_media: list[dict | None] | None = None,
    first_texts: list[str] | None = None,
    media_inputs: list[dict | None] | None = None,
    processor=None,
) -> tuple[Rollouts, Episodes]:
    """Drive ``envs`` (already reset: ``prompts`` are their first observations' token ids) for
    up to ``max_turns`` policy turns. Turn 0 is one ``engine.generate`` over all prompts with
    ``params``; turn t > 0 generates for the running episodes from their whole trajectory, with
    the seed ``turn_seed(t)`` (default: params.seed + t). Returns the trajectories as Rollouts
    (see the module docstring) and their :class:`Episodes`. ``first_texts``: the first
    observations' texts (:func:`message_text`; default: the decoded prompts). ``media_inputs``:
    per episode a VLM's media tensors for its prompt (:func:`play` makes them with the
    policy's processor; the prompts' video tokens are already expanded): handed to every
    generate and carried in the rollouts (``Rollouts.media``). ``processor``: the VLM's
    (:class:`grpo_core.vision.VideoProcessor`) for observations after the first that show media
    (env video_com's frames and crops): their placeholder is expanded and their tensors are
    appended to the episode's media (:func:`grpo_core.vision.append_media`), so that every
    later turn and the training passes see all the clips shown so far."""
    from grpo_core.rollout import eos_token_ids

    n = len(envs)
    if not (len(problems) == len(seeds) == len(prompts) == n):
        raise ValueError("envs, problems, seeds and prompts must have one entry per episode")
    eos = eos_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    mkw = {} if media_inputs is None else {"media": list(media_inputs)}
    # rollout.carry_kv (the hf_static engine): each turn reuses the K/V of the episode's
    # trajectory so far instead of prefilling it again (grpo_core.decode.KVCarry)
    carry = engine.new_carry() if getattr(engine, "carry_kv", False) else None
    ckw = {} if carry is None else {"carry": carry}
    ro = engine.generate(prompts, params, **mkw, **ckw)
    if media_inputs is not None:
        media_inputs = list(media_inputs)  # later observations' media are appended per row
    # per episode: completion tokens, loss flags, turn ids, sampler log-probs
    comp: list[list[int]] = [[] for _ in range(n)]
    loss: list[list[int]] = [[] for _ in range(n)]
    turns: list[list[int]] = [[] for _ in range(n)]
    slp: list[list[float]] = [[] for _ in range(n)]
    has_slp = ro.sampler_logp is not None
    ep = Episodes(
        turn_rewards=[[] for _ in range(n)],
        n_turns=[0] * n,
        infos=[{} for _ in range(n)],
        turn_texts=[[] for _ in range(n)],
        end_reasons=["max_turns"] * n,
        media=[[m] for m in (first_media or [None] * n)],
        obs_texts=[
            [t]
            for t in (
                first_texts
                if first_texts is not None
                else [tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
            )
        ],
    )
    finish = list(ro.finish_reasons)
    texts = list(ro.texts)
    running = list(range(n))
    multi = False
    t = 0
    while True:
        nxt = []
        for j, i in enumerate(running):
            m = int(ro.completion_mask[j].sum())
            ids = ro.completion_ids[j, :m].tolist()
            comp[i] += ids
            loss[i] += [1] * m
            turns[i] += [t] * m
            if has_slp:
                slp[i] += ro.sampler_logp[j, :m].tolist()
            finish[i], texts[i] = ro.finish_reasons[j], ro.texts[j]
            ep.turn_texts[i].append(ro.texts[j])
            ep.n_turns[i] += 1
            res = envs[i].step(ro.texts[j])
            ep.turn_rewards[i].append(res.reward)
            ep.infos[i] = dict(res.info)
            if res.done or res.observation is None:
                ep.end_reasons[i] = "done"
                continue
            if t + 1 >= max_turns:
                continue  # "max_turns"
            if ro.finish_reasons[j] == "length":
                ep.end_reasons[i] = "length"
                continue
            obs = observation_ids(tokenizer, res.observation.messages, eos)
            shown = None  # a later observation's media tensors (the VLM's processor)
            if res.observation.media is not None:
                if processor is None:
                    raise UserError(
                        "the env shows media (video) in a later observation but the runner "
                        "has no VLM processor; use a VLM (model.name_or_path: tiny_vl, or a "
                        "Qwen2.5-VL checkpoint)"
                    )
                obs, shown = processor.process(obs, res.observation.media)
            if max_tokens is not None and len(prompts[i]) + len(comp[i]) + len(obs) >= max_tokens:
                ep.end_reasons[i] = "max_tokens"
                continue
            ep.media[i].append(res.observation.media)
            ep.obs_texts[i].append(message_text(res.observation.messages))
            if shown is not None:
                from grpo_core.vision import append_media

                if media_inputs is None:
                    media_inputs = [None] * n
                media_inputs[i] = append_media(media_inputs[i], shown)
            comp[i] += obs
            loss[i] += [0] * len(obs)
            turns[i] += [-1] * len(obs)
            if has_slp:
                slp[i] += [0.0] * len(obs)
            nxt.append(i)
        if not nxt:
            break
        multi = True
        t += 1
        p = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            stop=list(params.stop),
            seed=turn_seed(t) if turn_seed is not None else params.seed + t,
        )
        if media_inputs is not None:
            mkw = {"media": [media_inputs[i] for i in nxt]}
        ro = engine.generate([prompts[i] + comp[i] for i in nxt], p, **mkw, **ckw)
        has_slp = has_slp and ro.sampler_logp is not None
        running = nxt
    if not multi:  # one turn everywhere: the engine's rollouts as they are
        return ro, ep
    width = max(1, max(len(c) for c in comp))
    c_ids = torch.full((n, width), pad, dtype=torch.long)
    c_mask = torch.zeros((n, width), dtype=torch.long)
    l_mask = torch.zeros((n, width), dtype=torch.long)
    t_ids = torch.full((n, width), -1, dtype=torch.long)
    s_lp = torch.zeros((n, width), dtype=torch.float32) if has_slp else None
    for i in range(n):
        k = len(comp[i])
        c_ids[i, :k] = torch.tensor(comp[i], dtype=torch.long)
        c_mask[i, :k] = 1
        l_mask[i, :k] = torch.tensor(loss[i], dtype=torch.long)
        t_ids[i, :k] = torch.tensor(turns[i], dtype=torch.long)
        if s_lp is not None:
            s_lp[i, :k] = torch.tensor(slp[i], dtype=torch.float32)
    from grpo_core.rollout import left_pad

    p_ids, p_mask = left_pad(prompts, pad)
    out = Rollouts(p_ids, p_mask, c_ids, c_mask, finish, texts, sampler_logp=s_lp)
    out.loss_mask, out.turn_ids = l_mask, t_ids
    if media_inputs is not None:
        out.media = list(media_inputs)
    return out, ep


def reset_prompts(envs: list[Env], problems: list, seeds: list[int], tokenizer) -> list[list[int]]:
    """Reset every env on its problem; the token ids of the first observations."""
    return [chat_ids(tokenizer, e.reset(p, s).messages) for e, p, s in zip(envs, problems, seeds)]


def play(
    env_cfg,
    task,
    template: str,
    problems: list,
    seeds: list[int],
    engine,
    tokenizer,
    params: SamplingParams,
    turn_seed=None,
    prompt_fn=None,
    processor=None,
) -> tuple[Rollouts, Episodes]:
    """One episode per problem in fresh envs of ``env_cfg`` (reset with ``seeds``), run by
    :func:`run_episodes`: the one episode of training, evaluation and the extra rounds.
    ``prompt_fn(r)``: row r's first-observation ids when the caller caches them (single-turn
    prompts do not change between visits). ``processor``: a VLM's
    (:class:`grpo_core.vision.VideoProcessor`), which turns observations' media into the
    prompts' video tokens and media tensors; needed when an observation has media."""
    envs = make_envs(env_cfg, task, template, len(problems))
    obs = [e.reset(p, s) for e, p, s in zip(envs, problems, seeds)]
    if prompt_fn is None:
        prompts = [chat_ids(tokenizer, o.messages) for o in obs]
    else:
        prompts = [prompt_fn(r) for r in range(len(problems))]
    media_inputs = None
    if any(o.media is not None for o in obs):
        prompts, media_inputs = media_prompts(processor, prompts, [o.media for o in obs])
    return run_episodes(
        envs,
        problems,
        seeds,
        prompts,
        engine,
        tokenizer,
        params,
        max_turns=env_cfg.max_turns,
        max_tokens=env_cfg.max_tokens,
        turn_seed=turn_seed,
        first_media=[o.media for o in obs],
        first_texts=[message_text(o.messages) for o in obs],
        **({} if media_inputs is None else {"media_inputs": media_inputs}),
        **({} if processor is None else {"processor": processor}),
    )


def media_prompts(processor, prompts: list[list[int]], media: list[dict | None]):
    """(prompts with their video tokens expanded, per prompt its media tensors) through a VLM's
    processor; a one-line error when the policy has none (a text model shown a video)."""
    if processor is None:
        raise UserError(
            "the env shows media (video) but the model is a text model; use a VLM "
            "(model.name_or_path: tiny_vl, or a Qwen2.5-VL checkpoint)"
        )
    out = [processor.process(p, m) for p, m in zip(prompts, media)]
    return [o[0] for o in out], [o[1] for o in out]


@ENVS.register("video_mc")
class VideoMCEnv(Env):
    """A multiple-choice question about a clip (task ``video_mc``): the observation is the
    task's prompt after the video placeholder (grpo_core.vision.VIDEO_PLACEHOLDER) with the
    clip's frames (uint8 [T, H, W, 3], rendered from the problem's scene, or read from its
    ``video`` file) in ``Observation.media["video"]``; one action ends the episode, graded
    by the task (reward functions), like a single turn."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core import vision
        from grpo_core.tasks import render_prompt

        frames = clip_frames(problem, "video_mc")
        text = vision.VIDEO_PLACEHOLDER + render_prompt(self.template, problem)
        return Observation([{"role": "user", "content": text}], media={"video": frames})

    def step(self, action: str) -> StepResult:
        return StepResult(None, None, True)


def clip_frames(problem, env_name: str):
    """uint8 frames [T, H, W, 3] of a video problem: rendered from its scene (task video_mc),
    sampled from a real benchmark's video, or read from its ``video`` file; with
    ``meta["perturb"]`` ({noise, seed}: a difficulty-raising augmentation, Task.perturbed)
    Gaussian pixel noise on top (grpo_core.vision.perturb_clip)."""
    from grpo_core import vision

    if "scene" in problem.meta:
        frames = vision.render_clip(problem.meta["scene"])
    elif "sampling" in problem.meta:  # a real video benchmark (evals.video_benchmarks)
        frames = vision.benchmark_frames(problem.meta)
    elif "video" in problem.meta:
        frames = vision.read_video(problem.meta["video"])
    else:
        raise UserError(
            f"env {env_name}: problem {problem.id} has no scene or video in its meta; use it "
            "with task.name: video_mc"
        )
    pert = problem.meta.get("perturb")
    if pert is not None:
        frames = vision.perturb_clip(frames, float(pert["noise"]), int(pert["seed"]))
    return frames


_COM_TAG = re.compile(r"<(frame|crop|answer)>(.*?)</\1>", re.S)
_COM_OPEN = re.compile(r"<(frame|crop|answer)>")


@ENVS.register("video_com", params=P.VideoComEnvParams)
class VideoComEnv(Env):
    """Video-CoM's interactive video reasoning (a chain of visual manipulations) on a video_mc
    clip. The first observation is video_mc's (the clip after the placeholder, the task's
    prompt), followed by the actions' description when ``instructions``. Each turn is one
    action, its tag anywhere in the policy's text:

    - ``<frame>k</frame>`` (k from 1 to T) shows frame k as new media and makes it the current
      frame (Video-CoM's find-frame);
    - ``<crop>x0,y0,x1,y1</crop>`` (pixels of the current frame, 0 <= x0 < x1 <= W, 0 <= y0 <
      y1 <= H, x1 / y1 exclusive) shows that region of the current frame upsampled to the
      frame's size (their spatial zoom);
    - ``<answer>...</answer>`` ends the episode, graded by the task (reward: the task's grade,
      success when it is 1); an answer tag wins over manipulation tags in the same turn, as
      their FINAL_ANSWER does.

    A bad action (no tag, an unclosed tag, two manipulations in one turn, a frame that is not
    an integer in range, a crop that is not four integers inside the frame or is empty, a crop
    before any frame was selected, tag content over ``max_action_chars``) is answered
    ``<error>what was wrong; the format</error>`` without media, reward 0, and counts as a
    step; the episode goes on up to env.max_turns turns (Video-CoM: 5) and env.max_tokens.

    Steps are checked against the question's evidence (grpo_core.tasks.mc_evidence): a frame
    is correct when it shows a queried shape, a crop when its IoU with a queried shape's box in
    the current frame is at least ``iou`` (scored only where the current frame has boxes). The
    env's reward of a manipulation turn is ``step_reward`` when it is correct (a frame the
    first time it is selected), else 0; ``info["trace"]`` holds [kind, arg, correct | None,
    error] per step, what the reward video_com (Video-CoM's accuracy + reasoning score) reads.
    ``info``: success, steps, bad_actions, manipulations, frame (the current, 1-based, or
    None), trace, answer, reasoning_score (so far)."""

    def reset(self, problem, seed: int) -> Observation:
        from grpo_core import vision
        from grpo_core.tasks import mc_evidence, render_prompt

        if "scene" not in problem.meta:
            raise UserError(
                f"env video_com: problem {problem.id} has no scene (the manipulations are "
                "checked against the clip's rendered objects); use it with task.name: video_mc"
            )
        self.problem = problem
        self.frames = clip_frames(problem, "video_com")
        self.valid_frames, self.boxes = mc_evidence(problem)
        self.frame: int | None = None
        self.steps = self.bad = self.manips = 0
        self.trace: list[list] = []
        self.answer: str | None = None
        self.done = False
        text = vision.VIDEO_PLACEHOLDER + render_prompt(self.template, problem)
        if self.params.get("instructions", True):
            text += "\n" + self.instructions()
        return Observation([{"role": "user", "content": text}], media={"video": self.frames})

    def instructions(self) -> str:
        t, h, w = self.frames.shape[:3]
        return (
            f"Look closer first: <frame>k</frame> shows frame k (1-{t}), "
            f"<crop>x0,y0,x1,y1</crop> zooms into the shown frame (0-{w} x 0-{h} px)."
        )

    def format_hint(self) -> str:
        t, h, w = self.frames.shape[:3]
        return (
            f"one action per turn: <frame>k</frame> with k from 1 to {t}, "
            f"<crop>x0,y0,x1,y1</crop> with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} "
            "after a frame, or <answer>letter</answer>"
        )

    def info(self, success: bool) -> dict:
        from grpo_core.tasks import com_reasoning_score

        return {
            "success": success,
            "steps": self.steps,
            "bad_actions": self.bad,
            "manipulations": self.manips,
            "frame": self.frame,
            "trace": [list(x) for x in self.trace],
            "answer": self.answer,
            "reasoning_score": com_reasoning_score(self.trace)[0],
        }

    def _bad(self, msg: str, arg: str = "") -> StepResult:
        self.bad += 1
        self.trace.append(["bad", arg, None, msg])
        text = f"<error>{msg}; {self.format_hint()}</error>"
        return StepResult(
            Observation([{"role": "user", "content": text}]), 0.0, False, self.info(False)
        )

    def step(self, action: str) -> StepResult:
        from grpo_core import vision
        from grpo_core.tasks import box_iou, grade_texts, last_answer_tag

        if self.done:
            raise RuntimeError("VideoComEnv.step after the episode ended; reset first")
        self.steps += 1
        p = self.params
        cap = int(p.get("max_action_chars", 200))
        if last_answer_tag(action) is not None:  # the final answer
            (grade,) = grade_texts(self.task, [action], [self.problem])
            self.done, self.answer = True, last_answer_tag(action)
            self.trace.append(["answer", self.answer[:cap], None, None])
            return StepResult(None, float(grade.score), True, self.info(grade.score >= 1.0))
        tags = [(k, v.strip()) for k, v in _COM_TAG.findall(action) if k != "answer"]
        if not tags:
            opened = _COM_OPEN.search(action)
            if opened:
                return self._bad(
                    f"unclosed <{opened.group(1)}> tag (close it: </{opened.group(1)}>)"
                )
            return self._bad("no action in the turn")
        if len(tags) > 1:
            return self._bad(f"{len(tags)} manipulations in one turn")
        kind, arg = tags[0]
        if len(arg) > cap:
            return self._bad(
                f"<{kind}> content of {len(arg)} characters (at most {cap})", arg[:cap]
            )
        t, h, w = self.frames.shape[:3]
        if kind == "frame":
            try:
                k = int(arg)
            except ValueError:
                return self._bad(f"frame {arg!r} is not an integer", arg)
            if not 1 <= k <= t:
                return self._bad(f"frame {k} is out of range", arg)
            self.frame, self.manips = k, self.manips + 1
            first = all(not (x[0] == "frame" and x[1] == str(k)) for x in self.trace)
            correct = k in self.valid_frames
            self.trace.append(["frame", str(k), correct, None])
            shown = self.frames[k - 1 : k]
            text = f"{vision.VIDEO_PLACEHOLDER}frame {k} of {t}"
            reward = float(p.get("step_reward", 1.0)) if correct and first else 0.0
            obs = Observation([{"role": "user", "content": text}], media={"video": shown})
            return StepResult(obs, reward, False, self.info(False))
        # crop
        parts = [x.strip() for x in arg.split(",")]
        try:
            box = [int(x) for x in parts]
        except ValueError:
            box = []
        if len(box) != 4 or len(parts) != 4:
            return self._bad(f"crop {arg!r} is not four integers x0,y0,x1,y1", arg)
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            return self._bad(f"crop {x0},{y0},{x1},{y1} is empty or outside the frame", arg)
        if self.frame is None:
            return self._bad("no frame to crop: select one with <frame>k</frame> first", arg)
        self.manips += 1
        gt = self.boxes.get(self.frame)
        correct = None if not gt else max(box_iou(box, b) for b in gt) >= float(p.get("iou", 0.35))
        self.trace.append(["crop", f"{self.frame}:{x0},{y0},{x1},{y1}", correct, None])
        region = self.frames[self.frame - 1 : self.frame, y0:y1, x0:x1]
        shown = vision.resize_frames(region, h, w)
        text = f"{vision.VIDEO_PLACEHOLDER}zoom of frame {self.frame} at {x0},{y0},{x1},{y1}"
        reward = float(p.get("step_reward", 1.0)) if correct else 0.0
        obs = Observation([{"role": "user", "content": text}], media={"video": shown})
        return StepResult(obs, reward, False, self.info(False))

    def gold_actions(self, problem) -> list[str]:
        """Video-CoM-Instruct's shape of chain at toy scale (``gold``): a frame with the
        evidence (count: 1; direction: the last; order / changed: the first that shows it),
        a crop of the queried shape's box in it with a 1 px margin (not for count, where
        every shape matters), then the task's SFT target (rationale and answer)."""
        from grpo_core.tasks import mc_evidence

        answer = self.task.sft_target(problem) if self.task is not None else problem.answer
        mode = self.params.get("gold", "frame_crop")
        if mode == "none":
            return [answer]
        frames, boxes = mc_evidence(problem)
        if not frames:
            return [answer]
        qtype = problem.meta["qtype"]
        k = frames[-1] if qtype == "direction" else frames[0]
        out = [f"<frame>{k}</frame>"]
        if mode == "frame_crop" and qtype != "count":
            size = int(problem.meta["scene"]["size"])
            x0, y0, x1, y1 = boxes[k][0]
            box = [max(0, x0 - 1), max(0, y0 - 1), min(size, x1 + 1), min(size, y1 + 1)]
            out.append(f"<crop>{','.join(str(v) for v in box)}</crop>")
        return [*out, answer]


def single_turn_prompts(tokenizer, template: str, problems: list) -> list[list[int]]:
    """The first observations of single-turn episodes on ``problems`` (SFT's prompts)."""
    envs = [SingleTurnEnv(None, template, {}) for _ in problems]
    return reset_prompts(envs, problems, [0] * len(problems), tokenizer)


def episode_seed(run_seed: int, problem_index: int) -> int:
    """The seed an env is reset with: fixed per (run seed, problem), like the task's data."""
    return random.Random(f"{run_seed}:{problem_index}").getrandbits(31)


__all__ = [
    "ENVS",
    "Env",
    "Episodes",
    "GuessNumberEnv",
    "GuiEnv",
    "Observation",
    "SearchEnv",
    "SingleTurnEnv",
    "StepResult",
    "ToolsEnv",
    "TextWorldEnv",
    "TwxEnv",
    "VideoComEnv",
    "VideoMCEnv",
    "clip_frames",
    "chat_ids",
    "make_envs",
    "media_prompts",
    "message_text",
    "observation_ids",
    "play",
    "reset_prompts",
    "run_episodes",
    "single_turn_prompts",
]
