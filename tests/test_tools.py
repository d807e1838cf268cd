"""The env tools (grpo_core.episodes.ToolsEnv, grpo_core.tools) and OTC-GRPO's reward
(rewards.otc_tool): the calculator, hand-written trajectories (token ids, loss mask, tool calls
in the info and Episodes), zero gradient through observation tokens on a real tiny model, the
gold conversation, OTC's reward on hand-computed groups, agent metrics with tool calls, and a
smoke training of otc_grpo on a shrunken tiny_tools."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_episodes import ScriptedEngine

from grpo_core.config import load_config
from grpo_core.episodes import ENVS, Episodes, ToolsEnv, chat_ids, make_envs, run_episodes
from grpo_core.errors import UserError
from grpo_core.models import build_char_tokenizer
from grpo_core.rewards import REWARDS, GroupContext, otc_tool_score
from grpo_core.rollout import SamplingParams
from grpo_core.tasks import Problem, numeric_match
from grpo_core.tools import ToolError, calculate


class _Task:
    """Exact numeric match of the extracted answer (what the arithmetic tasks do)."""

    def grade(self, answer, problem):
        return numeric_match(answer, problem.answer)

    def sft_target(self, problem):
        return problem.answer


def _env(**params) -> ToolsEnv:
    p = ENVS.resolve_params("tools", {"instructions": False, **params}, "env.params")
    return ToolsEnv(_Task(), "expr", p)


MUL = Problem("mul2-1", "Calculate 36 * 32.", "1152", {"expression": "36*32"})
ADD = Problem("add1-1", "Calculate 3 + 4.", "7", {"expression": "3+4"})
CALL = '<tool name="calculator">36*32</tool>'


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_calculator_hand_values():
    assert calculate("3*(4+5)") == "27"
    assert calculate("36*32") == "1152"
    assert calculate("7/2") == "3.5" and calculate("6/3") == "2"
    assert calculate("2**10") == "1024" and calculate("-3+5") == "2"
    assert calculate("10//3") == "3" and calculate("10%3") == "1"
    assert calculate(" 12 \u00d7 3 ") == "36"  # the multiplication sign
    with pytest.raises(ToolError, match="division by zero"):
        calculate("1/(2-2)")
    with pytest.raises(ToolError, match="names are not allowed"):
        calculate("__import__")


def test_env_steps_and_infos():
    env = _env()
    assert env.reset(MUL, 0).messages == [{"role": "user", "content": "36*32="}]
    r = env.step("let me compute " + CALL)
    assert r.observation.messages == [{"role": "user", "content": "<result>1152</result>"}]
    assert (r.reward, r.done) == (0.0, False)
    assert r.info == {
        "success": False,
        "tool_calls": 1,
        "bad_actions": 0,
        "tool": "calculator",
        "error": None,
        "steps": 1,
    }
    r = env.step("1152")
    assert (r.observation, r.reward, r.done) == (None, 1.0, True)
    assert r.info["success"] and r.info["tool_calls"] == 1 and r.info["steps"] == 2
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("1152")
    # a wrong answer ends it too, reward 0; python runs in the sandbox
    env = _env(reward=2.0)
    env.reset(ADD, 0)
    r = env.step('<tool name="python">print(3 + 4)</tool>')
    assert r.observation.messages[0]["content"] == "<result>7</result>"
    assert r.info["tool"] == "python"
    r = env.step("8")
    assert r.done and r.reward == 0.0 and r.info["success"] is False
    env.reset(ADD, 0)
    assert env.step("7").reward == 2.0
    # with instructions the tools are described before the task's prompt
    env = ToolsEnv(_Task(), "expr", ENVS.resolve_params("tools", {}, "env.params"))
    first = env.reset(ADD, 0).messages[0]["content"]
    assert first.startswith('Tools: <tool name="calculator">') and first.endswith("\n\n3+4=")


def test_trajectory_hand_written(tok):
    """Episode 0 calls the calculator, then answers; episode 1 answers at once. The result
    observation's tokens are in the trajectory with loss mask 0 and turn id -1."""
    envs = [_env(), _env()]
    problems = [MUL, ADD]
    prompts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
    eng = ScriptedEngine(tok, [[CALL, "7"], ["1152"]])
    ro, ep = run_episodes(envs, problems, [0, 0], prompts, eng, tok, SamplingParams(), 3)
    v = tok.get_vocab()
    end, user, asst = v["<|end|>"], v["<|user|>"], v["<|assistant|>"]
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    obs = [user, *enc("<result>1152</result>"), end, asst]
    want0 = enc(CALL) + [end] + obs + enc("1152") + [end]
    n_call, n_obs = len(enc(CALL)) + 1, len(obs)
    assert ro.completion_ids[0, : len(want0)].tolist() == want0
    assert ro.loss_mask[0, : len(want0)].tolist() == [1] * n_call + [0] * n_obs + [1] * 5
    assert ro.turn_ids[0, : len(want0)].tolist() == [0] * n_call + [-1] * n_obs + [1] * 5
    assert ro.completion_mask[0].tolist() == [1] * len(want0)
    assert ro.loss_mask[1].tolist()[:2] == [1, 1] and int(ro.loss_mask[1].sum()) == 2
    assert tok.decode(ro.completion_ids[0][ro.loss_mask[0] == 0]) == (
        "<|user|><result>1152</result><|end|><|assistant|>"
    )
    assert ep.n_turns == [2, 1] and ep.end_reasons == ["done", "done"]
    assert ep.success() == [True, True] and ep.env_reward().tolist() == [1.0, 1.0]
    assert ep.tool_calls() == [1, 0]
    assert ep.turn_texts == [[CALL, "1152"], ["7"]]
    # an env without tool calls: none
    assert Episodes([[1.0]], [1], [{"success": True}], [["5"]], ["done"]).tool_calls() is None


def test_observation_tokens_get_zero_gradient(smoke_cfg, tmp_path, tok):
    """Issue 14, done-when 3: a loss backpropagated through the policy's log-probs of a real
    tiny model's two-turn trajectory (the trainer's own micro-batch loss) has zero gradient on
    the tool-result tokens' log-probs, and perturbing those log-probs leaves it unchanged."""
    from grpo_core.trainer import Batch, Trainer

    cfg = smoke_cfg(
        "grpo",
        [
            "env.name=tools",
            "env.max_turns=3",
            "env.params={instructions: false}",
            "loss.kl.beta=0.0",
        ],
    )
    tr = Trainer(cfg, tmp_path / "run")
    envs = make_envs(cfg.env, _Task(), cfg.task.template, 2)
    problems = [MUL, ADD]
    prompts = [chat_ids(tr.tok, e.reset(p, 0).messages) for e, p in zip(envs, problems)]
    script = [[CALL, '<tool name="calculator">3+4</tool>'], ["1152", "8"]]
    ro, ep = run_episodes(
        envs, problems, [0, 0], prompts, ScriptedEngine(tr.tok, script), tr.tok, SamplingParams(), 3
    )
    obs = (ro.completion_mask == 1) & (ro.loss_mask == 0)
    # "<|user|><result>1152</result><|end|><|assistant|>" (24 tokens) and "...7..." (21)
    assert obs.sum(-1).tolist() == [24, 21]
    batch = Batch(ro, problems, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), None, None)
    batch.group_sizes = [2]
    seen, shift = {}, {"by": 0.0}
    orig = tr.policy.forward_logprobs

    def spy(*a, **k):
        lp, ent = orig(*a, **k)
        if lp.requires_grad:
            lp.retain_grad()
            seen["lp"] = lp
        return lp + shift["by"] * obs.to(lp.dtype), ent  # perturb the observations' log-probs

    tr.policy.forward_logprobs = spy
    ix = torch.arange(2)
    n_tok = int(ro.loss_mask.sum())
    loss, _ = tr.micro_loss(batch, ix, 2, n_tok, cfg.rollout.max_new_tokens)
    loss.backward()
    g = seen["lp"].grad
    assert torch.all(g[obs] == 0.0)
    assert bool((g[ro.loss_mask == 1] != 0).all())  # every policy token gets a gradient
    assert sum(float(p.grad.abs().sum()) for p in tr.model.parameters() if p.grad is not None) > 0
    with torch.no_grad():
        for by in (5.0, -3.0):
            shift["by"] = by
            loss2, _ = tr.micro_loss(batch, ix, 2, n_tok, cfg.rollout.max_new_tokens)
            assert float(loss2) == float(loss)


def test_gold_conversation_masks_the_result(tok):
    from grpo_core.prepare import gold_conversation

    env = _env()
    assert env.gold_actions(MUL) == [CALL, "1152"]
    prompt, comp, labels = gold_conversation(env, MUL, 0, tok, max_turns=3)
    assert prompt == chat_ids(tok, [{"role": "user", "content": "36*32="}])
    masked = [c for c, lab in zip(comp, labels) if lab == -100]
    assert tok.decode(masked) == "<|user|><result>1152</result><|end|><|assistant|>"
    assert tok.decode([c for c, lab in zip(comp, labels) if lab != -100]) == (
        CALL + "<|end|>1152<|end|>"
    )
    # gold_tool_frac 0: the answer alone; a problem without an expression cannot call
    assert _env(gold_tool_frac=0.0).gold_actions(MUL) == ["1152"]
    with pytest.raises(UserError, match="problem q has no expression.*gold_tool_frac: 0"):
        _env().gold_actions(Problem("q", "Guess", "3"))


# ------------------------------------------------------------------ OTC-GRPO


def test_otc_tool_score_hand_values():
    # n = 0: 1 without calls, else cos(m pi / (2m + c)); c = 1: m = 1 -> cos(pi/3) = 0.5
    assert otc_tool_score(0, 0) == 1.0 and otc_tool_score(0, None) == 1.0
    assert otc_tool_score(1, 0) == pytest.approx(0.5)
    assert otc_tool_score(1, 0, c=3.0) == pytest.approx(math.cos(math.pi / 5))  # 0.809017
    assert otc_tool_score(2, 0) == pytest.approx(math.cos(2 * math.pi / 5))  # 0.309017
    # n > 0: sin(f pi / 2n), f = 2nm / (m + n): m = n -> 1; m = 2n -> sin(2pi/3) = 0.866025;
    # m = 3, n = 1 -> f = 1.5, sin(3pi/4) = 0.707107; m = 0 -> 0
    assert otc_tool_score(1, 1) == pytest.approx(1.0)
    assert otc_tool_score(2, 2) == pytest.approx(1.0)
    assert otc_tool_score(2, 1) == pytest.approx(0.8660254)
    assert otc_tool_score(4, 2) == pytest.approx(0.8660254)
    assert otc_tool_score(3, 1) == pytest.approx(0.7071068)
    assert otc_tool_score(0, 1) == pytest.approx(0.0)


def _otc_ctx(calls, success, sizes):
    n = len(calls)
    probs = [Problem(f"p{g}", "q", "1") for g, s in enumerate(sizes) for _ in range(s)]
    infos = [{"success": s, "tool_calls": m} for m, s in zip(calls, success)]
    return GroupContext(
        ["x"] * n, probs, ["stop"] * n, [1] * n, sizes, 8, task=_Task(),
        episodes=Episodes([[None]] * n, [1] * n, infos, [["x"]] * n, ["done"] * n),
    )  # fmt: skip


def test_otc_tool_reward_hand_computed():
    # group 0: calls 1, 2, 3, 0; right, right, wrong, wrong -> n = 1:
    #   1 * sin(pi/2) = 1; sin(2pi/3) = 0.866025; 0; 0
    # group 1: calls 0, 1, 2, 1; right, right, wrong, right -> n = 0: 1; cos(pi/3) = .5; 0; .5
    # group 2: calls 2, 2; both wrong -> no n: 0, 0
    calls = [1, 2, 3, 0, 0, 1, 2, 1, 2, 2]
    succ = [True, True, False, False, True, True, False, True, False, False]
    fn = REWARDS.get("otc_tool", "test")
    r, logs = fn(_otc_ctx(calls, succ, [4, 4, 2]))
    want = [1.0, 0.8660254, 0.0, 0.0, 1.0, 0.5, 0.0, 0.5, 0.0, 0.0]
    assert r.tolist() == pytest.approx(want, abs=1e-6)
    # tool_calls: 14 / 10; n_opt: (1 + 0) / 2; r_tool of the 6 correct: (1 + .866 + 1 + .5 + .5
    # + ... ) -> (1 + 0.8660254 + 1 + 0.5 + 0.5) / 5 (five correct)
    assert logs["tool_calls"] == pytest.approx(1.4)
    assert logs["n_opt"] == pytest.approx(0.5)
    assert logs["r_tool"] == pytest.approx(3.8660254 / 5)
    r2, _ = fn(_otc_ctx(calls, succ, [4, 4, 2]), alpha=2.0, c=3.0)
    # alpha doubles; c = 3 changes only n = 0 groups: cos(pi/5) = 0.809017 for one call
    want2 = [2.0, 1.7320508, 0, 0, 2.0, 2 * 0.809017, 0, 2 * 0.809017, 0, 0]
    assert r2.tolist() == pytest.approx(want2, abs=1e-6)
    # a sub-context keeps each row's info
    sub = _otc_ctx(calls, succ, [4, 4, 2]).select([4, 5, 6, 7])
    assert fn(sub)[0].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.5])


def test_otc_tool_reward_without_tool_counts():
    ctx = GroupContext(["1"], [Problem("p", "q", "1")], ["stop"], [1], [1], 8, task=_Task())
    with pytest.raises(UserError, match="otc_tool needs episodes of an env that counts tool"):
        REWARDS.get("otc_tool", "test")(ctx)
    with pytest.raises(UserError, match="c must be > 0"):
        REWARDS.get("otc_tool", "test")(_otc_ctx([0], [True], [1]), c=0.0)


def test_agent_metrics_count_tool_calls():
    from evals.agent import agent_metrics

    infos = [{"success": s, "tool_calls": m} for s, m in [(True, 1), (True, 0), (False, 3)]]
    ep = Episodes([[1.0], [1.0], [0.0]], [2, 1, 3], infos, [[], [], []], ["done"] * 3)
    m = agent_metrics(ep)["metrics"]
    assert m["tool_calls_mean"] == pytest.approx(4 / 3)
    assert m["tool_productivity"] == pytest.approx(2 / 4)  # 2 successes, 4 calls
    assert m["success_rate"] == pytest.approx(2 / 3)


def test_tiny_tools_profile_resolves():
    from grpo_core.config import list_reproductions

    for repro in list_reproductions():
        load_config(repro, "tiny_tools", [])
    cfg = load_config("otc_grpo", "tiny_tools", [])
    assert cfg.env.name == "tools" and cfg.task.difficulty == {"add2": 1, "mul2": 1}
    assert [r.name for r in cfg.rewards] == ["otc_tool"]
    assert [r.name for r in load_config("grpo", "tiny_tools", []).rewards] == ["env"]
    assert cfg.workflow.reproductions == [
        "grpo",
        "rloo",
        "otc_grpo",
        "arpo",
        "flow_grpo",
        "m_grpo",
        "mashost",
    ]
    assert {c.metric for c in cfg.meta.claims} == {"tool_calls_mean", "success_rate"}


def test_otc_grpo_smoke_training(tmp_path):
    """otc_grpo on a shrunken tiny_tools: a few multi-turn SFT steps on gold conversations,
    then two training steps in the env tools; the tool-call metrics are logged."""
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    cfg = load_config(
        "otc_grpo",
        "tiny_tools",
        [
            f"run.results_dir={tmp_path}",
            "run.threads=1",
            "workflow.seeded_start=false",
            "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
            "num_kv_heads: 2}",
            "task.n_train=32",
            "task.n_test=8",
            "sft.steps=4",
            "sft.batch_size=8",
            "rollout.group_size=4",
            "rollout.prompts_per_step=2",
            "train.steps=2",
            "train.micro_batch_size=8",
        ],
    )
    prepare(cfg, threads=1, log=lambda *a: None)
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        for k in ("loss", "tool_calls_mean", "reward/otc_tool/tool_calls", "reward/otc_tool/n_opt"):
            assert math.isfinite(r[k]), (k, r)
        assert r["tool_calls_mean"] == r["reward/otc_tool/tool_calls"]
        assert 0.0 <= r["accuracy"] <= 1.0
    # evaluation in the env: agent metrics with the tool calls, per-sample actions
    from evals.evaluate import evaluate

    ecfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_prompts": 3, "k": 2})})
    out = evaluate(ecfg, tmp_path / "run" / "checkpoint", tmp_path / "eval", threads=1)
    m = out["metrics"]
    for k in ("success_rate", "tool_calls_mean", "tool_productivity", "avg@2"):
        assert math.isfinite(m[k]), k
    assert m["avg@2"] == m["success_rate"]
    assert "tool_calls_mean" in out["ci"]
    samples = (tmp_path / "eval" / "arith_mix.samples.jsonl").read_text().splitlines()
    assert len(samples) == 6 and all("actions" in json.loads(x) for x in samples)


def test_train_tool_calls_enter_the_summary(tmp_path):
    """The final-window training metrics (benchmark "train", what the train claim reads) carry
    tool_calls_mean when a run logged it, and nothing new for a run that did not."""
    from evals.aggregate import _final_window

    f = tmp_path / "metrics.jsonl"
    f.write_text("\n".join(json.dumps({"accuracy": 0.5, "tool_calls_mean": x}) for x in (2, 1)))
    assert _final_window(f)["tool_calls_mean"] == 1.0  # the last 10% (one row) of two
    f.write_text(json.dumps({"accuracy": 0.5}))
    assert _final_window(f) == {"accuracy": 0.5}


def test_turn_and_token_caps(tok):
    """A policy that keeps calling the calculator ends at env.max_turns (no success); a
    trajectory cap ends it where the next result would pass env.max_tokens."""
    envs = [_env()]
    prompts = [chat_ids(tok, envs[0].reset(MUL, 0).messages)]
    eng = ScriptedEngine(tok, [[CALL], [CALL], [CALL]])
    ro, ep = run_episodes(envs, [MUL], [0], prompts, eng, tok, SamplingParams(), 3)
    assert ep.end_reasons == ["max_turns"] and ep.n_turns == [3]
    assert ep.success() == [False] and ep.tool_calls() == [3]
    assert ep.env_reward().tolist() == [0.0]
    envs = [_env()]
    prompts = [chat_ids(tok, envs[0].reset(MUL, 0).messages)]
    cap = len(prompts[0]) + len(CALL) + 1 + 10  # the 24-token result does not fit
    eng = ScriptedEngine(tok, [[CALL]])
    ro, ep = run_episodes(envs, [MUL], [0], prompts, eng, tok, SamplingParams(), 3, max_tokens=cap)
    assert ep.end_reasons == ["max_tokens"] and ep.n_turns == [1] and ep.tool_calls() == [1]


def test_mul2_level_is_two_digit_products():
    from grpo_core.tasks import ArithMix

    # reasoning-gym's basic_arithmetic with 2 digits: mostly 2 x 2 digits (325 of the first 400
    # train rows of seed 0), some with a 1- or 3-digit factor
    task = ArithMix(40, 4, 0, {"mul2": 1}, None)
    rows = task.train() + task.test()
    two = 0
    for p in rows:
        a, b = p.meta["expression"].split("*")
        assert int(a) * int(b) == int(p.answer) and p.question == f"Calculate {a} * {b}."
        assert task.grade(p.answer, p) == 1.0 and task.grade(str(int(p.answer) + 1), p) == 0.0
        two += len(a) == len(b) == 2
    assert two >= 0.7 * len(rows)
