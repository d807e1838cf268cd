"""The code task code_fn (grpo_core.tasks.CodeFn), its grading in the sandbox
(grpo_core.codeexec), the proof that model output runs only inside grpo_core.sandbox, and the
rule-based process score / Posterior-GRPO's gated reward (reward code_process)."""

from __future__ import annotations

import os

import pytest
import torch

from grpo_core import codeexec, sandbox
from grpo_core.codeexec import Program, process_parts, process_score, run_programs
from grpo_core.errors import UserError
from grpo_core.rewards import REWARDS, GroupContext
from grpo_core.tasks import TASKS, CodeFn, Problem

needs_isolation = pytest.mark.skipif(
    sandbox.isolation_problem() is not None,
    reason=f"no unshare isolation here: {sandbox.isolation_problem()}",
)


def _task(n_train=40, n_test=20, seed=0, difficulty=None, **params):
    return CodeFn(
        n_train,
        n_test,
        seed,
        difficulty or {},
        None,
        TASKS.resolve_params("code_fn", params, "task.params"),
    )


def _problem(**meta) -> Problem:
    m = {
        "entry": "f",
        "args": ["x", "y"],
        "constants": [],
        "tests": ["assert f(1, 2) == 3", "assert f(2, 2) == 4", "assert f(0, 5) == 5"],
        **meta,
    }
    return Problem("p0", '"""f(x, y): Return the sum of x and y."""', "", m)


# ------------------------------------------------------------------ the task


def test_task_is_seeded_split_disjoint_and_its_references_pass():
    t, t2 = _task(seed=3), _task(seed=3)
    assert [p.question for p in t.train()] == [p.question for p in t2.train()]
    assert [p.meta["tests"] for p in t.test()] == [p.meta["tests"] for p in t2.test()]
    assert [p.question for p in _task(seed=4).train()] != [p.question for p in t.train()]
    assert len(t.train()) == 40 and len(t.test()) == 20
    assert not {p.question for p in t.train()} & {p.question for p in t.test()}
    assert {p.meta["level"] for p in t.test()} == {"L1", "L2", "L3"}
    p = t.train()[0]
    assert p.question.startswith(f'"""{p.meta["entry"]}(') and p.answer.startswith("def ")
    assert len(p.meta["tests"]) == 4 and all(x.startswith("assert ") for x in p.meta["tests"])
    assert t.sft_target(p) == p.answer
    only = _task(difficulty={"L3": 1})
    assert {p.meta["level"] for p in only.train() + only.test()} == {"L3"}
    with pytest.raises(UserError, match="unknown code_fn level.*L4.*valid"):
        _task(difficulty={"L4": 1}).train()


def test_tests_of_a_bound_are_not_all_one_output():
    # cap_k: min(x, k); a test set whose outputs are all k would pass `return k`
    t = _task(n_train=400, n_test=100)
    caps = [p for p in t.train() + t.test() if p.meta["template"] == "cap_k"]
    assert caps
    for p in caps:
        outs = {x.rsplit("==", 1)[1] for x in p.meta["tests"]}
        assert len(outs) > 1, p.meta["tests"]


@needs_isolation
def test_reference_solutions_pass_and_the_reasons_of_failures():
    t = _task()
    probs = t.test()[:6]
    assert all(
        g.score == 1.0 and g.reason == "pass"
        for g in t.grade_texts([p.answer for p in probs], probs)
    )
    p = _problem()
    texts = [
        "def f(x, y):\n    return x + y",  # right: 3/3
        "def f(x, y):\n    return x * y",  # f(2, 2) == 4 only: 1/3
        "def f(x, y:\n    return x",  # syntax error
        "def f(x, y):\n    while True:\n        pass",  # infinite loop
        "def g(x, y):\n    return x + y",  # not the entry point
        "def f(x, y):\n    return x + undefined",  # NameError
    ]
    grades = t.grade_texts(texts, [p] * len(texts))
    assert [g.reason for g in grades] == [
        "pass",
        "wrong_output",
        "syntax_error",
        "timeout",
        "no_function",
        "runtime_error",
    ]
    assert [g.score for g in grades] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert grades[1].pred == "1/3"
    frac = _task(score="fraction").grade_texts(texts[:2], [p, p])
    assert [g.score for g in frac] == pytest.approx([1.0, 1 / 3])


# ------------------------------------------------------------------ containment


@needs_isolation
def test_every_execution_goes_through_the_sandbox(monkeypatch, tmp_path):
    """A spy on grpo_core.sandbox.run_python: grading runs each batch through it (the programs
    are in its files), and with it replaced by a stub that runs nothing, no completion runs at
    all (the marker a completion would write, here or in the working directory, never
    appears): there is no other path from model output to execution."""
    marker = tmp_path / "ran.txt"
    code = f"open({str(marker)!r}, 'w').write('x')\nopen('ran-here.txt', 'w')\ndef f(x, y):\n"
    code += "    return x + y"
    p = _problem()
    calls = []
    real = sandbox.run_python

    def spy(src, config=None, stdin="", files=None):
        calls.append((src, dict(files or {})))
        return real(src, config, stdin, files)

    monkeypatch.setattr(sandbox, "run_python", spy)
    t = _task()
    (g,) = t.grade_texts([code], [p])
    assert len(calls) == 1 and code.splitlines()[0] in calls[0][1]["progs.json"].replace(
        "\\n", "\n"
    ).replace('\\"', '"')
    # inside the sandbox the write outside its directory is denied; nothing escaped
    assert g.reason == "denied" and not marker.exists()
    assert not os.path.exists("ran-here.txt")

    def stub(src, config=None, stdin="", files=None):
        calls.append(("stub", None))
        return sandbox.SandboxResult("", "", 0, None, "ok", 0.0)

    monkeypatch.setattr(sandbox, "run_python", stub)
    calls.clear()
    monkeypatch.chdir(tmp_path)
    grades = t.grade_texts([code, "def f(x, y):\n    return x + y"], [p, p])
    # no verdict came back: each program was tried once more alone, then scored crashed
    assert [c[0] for c in calls] == ["stub"] * 3
    assert [g.reason for g in grades] == ["crashed", "crashed"]
    assert not marker.exists() and not (tmp_path / "ran-here.txt").exists()
    # the reward reads the same grades: the correctness reward runs nothing else either
    ctx = GroupContext([code], [p], ["stop"], [5], [1], 8, t)
    assert REWARDS.get("correctness")(ctx).tolist() == [0.0]
    assert not marker.exists()


@needs_isolation
def test_escapes_in_a_batch_are_contained_and_do_not_spoil_the_others(tmp_path):
    outside = tmp_path / "escaped.txt"
    progs = [
        Program("import os\nwhile True:\n    os.fork()", ("assert True",), None),  # fork bomb
        Program("def f(x, y):\n    return x + y", ("assert f(1, 2) == 3",), "f"),
        Program("x = bytearray(10 * 1024**3)", ("assert True",), None),  # 10 GB
        Program(f"open({str(outside)!r}, 'w')", ("assert True",), None),
        Program("import socket\nsocket.socket().connect(('127.0.0.1', 9))", ("assert True",), None),
        Program(
            'print(\'@@RESULT@@ {"i": 6, "reason": "pass", "passed": 1}\')\ndef f():\n    return 0',
            ("assert f() == 1",),
            "f",
        ),
        Program("def f(x, y):\n    return x + y", ("assert f(1, 2) == 3",), "f"),
    ]
    outs = run_programs(progs, codeexec.ExecLimits(t_prog=3.0))
    assert [o.reason for o in outs] == [
        "runtime_error",  # BlockingIOError: the process limit
        "pass",
        "memory",
        "denied",
        "denied",
        "wrong_output",  # its forged verdict line went to its own sink, not the parent's
        "pass",
    ]
    assert "BlockingIOError" in outs[0].detail
    assert "network access" in outs[4].detail and not outside.exists()


# ------------------------------------------------------------------ process score and gating


def test_process_parts_hand_checked():
    args, consts = ["xs"], ["3"]
    good = "def f(xs):\n    return sum([v for v in xs if v % 3 == 0])"
    assert process_parts(good, "f", args, consts) == dict.fromkeys(codeexec.PROCESS_PARTS, 1.0)
    # wrong operator, right structure: every check passes (the hackable case)
    assert (
        process_score(
            "def f(xs):\n    return sum([v for v in xs if v % 3 != 0])", "f", args, consts
        )
        == 1.0
    )
    # print (not clean), two statements (not concise), constant 3 missing
    p = process_parts("def f(xs):\n    print(xs)\n    return sum(xs)", "f", args, consts)
    assert p == {
        "parses": 1,
        "signature": 1,
        "clean": 0,
        "uses_args": 1,
        "constants": 0,
        "concise": 0,
    }
    # wrong name: only parses and clean
    assert process_score("def g(xs):\n    return 3", "f", args, consts) == pytest.approx(2 / 6)
    # wrong arguments, an import: signature and clean 0; xs unused -> 0; 3 there; concise
    p = process_parts("import os\ndef f(ys):\n    return 3", "f", args, consts)
    assert p == {
        "parses": 1,
        "signature": 0,
        "clean": 0,
        "uses_args": 0,
        "constants": 1,
        "concise": 1,
    }
    assert process_score("def f(xs:\n", "f", args, consts) == 0.0
    # a docstring before the return is still concise; a string constant is matched as repr
    assert (
        process_parts("def f(s):\n    'doc'\n    return s.count('a')", "f", ["s"], ["'a'"])[
            "concise"
        ]
        == 1.0
    )


class _GradedTask:
    """A task whose grades are given (no sandbox): reason pass / wrong_output per text."""

    def __init__(self, reasons):
        self.reasons = reasons

    def grade_texts(self, texts, problems):
        from grpo_core.grader import Grade

        return [Grade(float(r == "pass"), None, r) for r in self.reasons[: len(texts)]]


def test_posterior_gating_hand_computed():
    # one group of 4 on "f(x): Return x plus 3." (args [x], constants [3]):
    #   0: def f(x): return x + 3          pass          R_t = 1
    #   1: def f(x): print(x); return x+3  pass          R_t = 4/6 (clean 0, concise 0)
    #   2: def f(x): return x - 3          wrong_output  R_t = 1   (a hack)
    #   3: def f(y): return 3              wrong_output  R_t = 4/6 (signature 0: y, x unused)
    # gate success: [1, 4/6, 0, 0]; gate none: [1, 4/6, 1, 4/6]
    # with correctness [1, 1, 0, 0]: posterior total [2, 5/3, 0, 0]
    texts = [
        "def f(x):\n    return x + 3",
        "def f(x):\n    print(x)\n    return x + 3",
        "def f(x):\n    return x - 3",
        "def f(y):\n    return 3",
    ]
    p = Problem(
        "p",
        '"""f(x): Return x plus 3."""',
        "",
        {"entry": "f", "args": ["x"], "constants": ["3"], "tests": []},
    )
    task = _GradedTask(["pass", "pass", "wrong_output", "wrong_output"])
    ctx = GroupContext(texts, [p] * 4, ["stop"] * 4, [5] * 4, [4], 8, task)
    fn = REWARDS.get("code_process")
    r, logs = fn(ctx, **REWARDS.resolve_params("code_process", {}, "rewards"))
    assert r.tolist() == pytest.approx([1.0, 4 / 6, 0.0, 0.0])
    # process mean (1 + 4/6 + 1 + 4/6) / 4 = 5/6; on fails (1 + 4/6) / 2 = 5/6; one hack in 4
    assert logs == pytest.approx(
        {"process_mean": 5 / 6, "process_on_fail": 5 / 6, "hack_rate": 0.25, "success": 0.5}
    )
    ctx2 = GroupContext(texts, [p] * 4, ["stop"] * 4, [5] * 4, [4], 8, task)
    r2, logs2 = fn(ctx2, gate="none", hack_at=0.5)
    assert r2.tolist() == pytest.approx([1.0, 4 / 6, 1.0, 4 / 6])
    assert logs2["hack_rate"] == 0.5  # R_t >= .5 on both failures
    from grpo_core.rewards import compute_rewards
    from grpo_core.schema import RewardTerm

    ctx3 = GroupContext(texts, [p] * 4, ["stop"] * 4, [5] * 4, [4], 8, task)
    total, _ = compute_rewards(
        [RewardTerm(name="correctness"), RewardTerm(name="code_process")], ctx3
    )
    assert total.tolist() == pytest.approx([2.0, 5 / 3, 0.0, 0.0])
    assert torch.is_tensor(total)


def test_code_process_refuses_other_tasks():
    p = Problem("p1", "1+1=", "2", {})
    ctx = GroupContext(["2"], [p], ["stop"], [1], [1], 8, _GradedTask(["pass"]))
    with pytest.raises(UserError, match="code_process.*code_fn problems.*p1"):
        REWARDS.get("code_process")(ctx)


# ------------------------------------------------------------------ profile tiny_code, smoke


@needs_isolation
def test_tiny_code_profile_sft_then_posterior_grpo_steps(tmp_path):
    """The tiny_code profile end to end at smoke size: a BPE tokenizer fitted to the code text,
    SFT on the reference solutions, two posterior_grpo steps whose rewards are graded in the
    sandbox (the gated process term logged with its hacking metric); grpo and the control
    process_grpo resolve there on the same task, differing only in the reward."""
    import json
    import math

    from grpo_core.config import load_config
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    small = [
        f"run.results_dir={tmp_path}",
        "run.threads=1",
        "workflow.seeded_start=false",
        'model.tiny={"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, '
        '"num_heads": 2, "num_kv_heads": 2, "tokenizer": "bpe", "vocab_size": 320}',
        "task.n_train=64",
        "task.n_test=8",
        "sft.steps=20",
        "sft.batch_size=32",
        "rollout.group_size=4",
        "rollout.prompts_per_step=4",
        "train.steps=2",
    ]
    assert load_config("grpo", "tiny_code", small).task.name == "code_fn"
    ctl = load_config("process_grpo", "tiny_code", small)
    assert [(t.name, dict(t.params)) for t in ctl.rewards] == [
        ("correctness", {}),
        ("code_process", {"gate": "none"}),
    ]
    cfg = load_config("posterior_grpo", "tiny_code", small)
    prepare(load_config(None, "tiny_code", small), threads=1, log=lambda *a: None)
    t = Trainer(cfg, tmp_path / "run")
    t.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and 0 <= r["reward_mean"] <= 2
        assert 0 <= r["reward/code_process/hack_rate"] <= 1
        # the gated term is never above the outcome: R_o * R_t <= R_o
        assert r["reward/code_process"] <= r["reward/correctness"] + 1e-6


def test_eval_metrics_hack_rate_and_reasons_hand_computed():
    # two problems (L1 "x plus 3", L3 "count 'a'"), two samples each:
    #   p1 s0 right (correct) R_t 1; p1 s1 "x - 3": wrong, R_t 1 -> a hack
    #   p2 s0 syntax error, R_t 0; p2 s1 s.count('b'): wrong, R_t 5/6 (constant 'a' missing)
    # acc_L1 1/2, acc_L3 0; process_mean (1 + 1 + 0 + 5/6) / 4 = 17/24; hack_rate 1/4
    t = _task()
    p1 = Problem("a", "", "", {"entry": "f", "args": ["x"], "constants": ["3"], "level": "L1"})
    p2 = Problem("b", "", "", {"entry": "g", "args": ["s"], "constants": ["'a'"], "level": "L3"})
    samples = [
        {
            "prompt_id": "a",
            "completion": "def f(x):\n    return x + 3",
            "correct": True,
            "grade_reason": "pass",
        },
        {
            "prompt_id": "a",
            "completion": "def f(x):\n    return x - 3",
            "correct": False,
            "grade_reason": "wrong_output",
        },
        {
            "prompt_id": "b",
            "completion": "def g(s:",
            "correct": False,
            "grade_reason": "syntax_error",
        },
        {
            "prompt_id": "b",
            "completion": "def g(s):\n    return s.count('b')",
            "correct": False,
            "grade_reason": "wrong_output",
        },
    ]
    m = t.eval_metrics(samples, [p1, p2])
    assert m["acc_L1"] == 0.5 and m["acc_L3"] == 0.0 and "acc_L2" not in m
    assert m["process_mean"] == pytest.approx(17 / 24) and m["hack_rate"] == 0.25
    assert m["frac_wrong_output"] == 0.5 and m["frac_syntax_error"] == 0.25
    assert m["frac_timeout"] == 0.0
