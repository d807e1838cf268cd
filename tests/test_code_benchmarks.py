"""Code benchmarks (evals.benchmarks: humaneval, mbpp): loading, the program of a completion,
grading in the sandbox and pass@k with the unbiased estimator, on fixed completions whose
scores are known (the canonical solutions pass; a wrong one, a syntax error and an infinite
loop fail, each with its reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.benchmarks import (
    code_program,
    get_benchmark,
    grade_code,
    humaneval_body,
    load_benchmark,
    mbpp_code,
    mbpp_entry,
)
from evals.metrics import pass_at_k, score_groups
from grpo_core import sandbox
from grpo_core.errors import UserError
from grpo_core.tasks import render_prompt

needs_isolation = pytest.mark.skipif(
    sandbox.isolation_problem() is not None,
    reason=f"no unshare isolation here: {sandbox.isolation_problem()}",
)
MBPP = Path(__file__).parent / "data" / "mbpp_sample.jsonl"


def test_declarations():
    he, mb = get_benchmark("humaneval"), get_benchmark("mbpp")
    assert (he.kind, mb.kind) == ("humaneval", "mbpp")
    assert mb.hf_id == "google-research-datasets/mbpp" and mb.hf_config == "full"
    assert mb.split == "test" and he.split == "test"
    assert he.paper.temperature == 0.8 and he.standard.temperature == 0.2
    assert get_benchmark("gsm8k").kind == "math"  # the math benchmarks are unchanged


def test_humaneval_loads_from_the_package():
    probs = load_benchmark("humaneval")
    assert len(probs) == 164
    p = probs[0]
    assert p.id == "humaneval-HumanEval/0" and p.meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in p.meta["test"] and p.question.startswith("from typing")
    assert render_prompt("humaneval", p) == p.question


def test_mbpp_loads_from_a_local_file_in_its_schema():
    probs = load_benchmark("mbpp", MBPP)
    assert [p.id for p in probs] == ["mbpp-9001", "mbpp-9002", "mbpp-9003"]
    p = probs[2]
    assert p.meta["test_setup_code"].startswith("D = ") and len(p.meta["test_list"]) == 3
    text = render_prompt("mbpp", probs[0])
    assert text == (
        "You are an expert Python programmer, and here is your task: Write a function to "
        "return the sum of the squares of a list of integers. Your code should pass these "
        "tests:\n\nassert sum_squares([1, 2, 3]) == 14\nassert sum_squares([]) == 0\n"
        "assert sum_squares([-2, 5]) == 29\n[BEGIN]\n"
    )
    assert mbpp_entry(p.meta["test_list"]) == "max_value"


def test_mbpp_malformed_rows_name_file_line_and_field(tmp_path):
    rows = [json.loads(x) for x in MBPP.read_text().splitlines()]
    bad = dict(rows[0])
    del bad["test_list"]
    worse = dict(rows[1], test_list="assert f() == 1")
    f = tmp_path / "mbpp.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [rows[2], bad, worse]) + "\n")
    with pytest.raises(UserError, match=r"mbpp\.jsonl:2: test_list: missing"):
        load_benchmark("mbpp", f)
    from evals.benchmarks import LoadReport

    rep = LoadReport()
    probs = load_benchmark("mbpp", f, on_error="skip", report=rep)
    assert [p.id for p in probs] == ["mbpp-9003"]
    assert len(rep.skipped) == 2 and "test_list: expected a non-empty list" in rep.skipped[1]


def test_completion_post_processing():
    # HumanEval: the body ends at a new top-level block
    assert humaneval_body("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert humaneval_body("    return 1\nprint(f())") == "    return 1"
    # MBPP: a fenced block, else the text up to [DONE]
    assert mbpp_code("Here:\n```python\ndef f():\n    return 1\n```\nok") == (
        "def f():\n    return 1\n"
    )
    assert mbpp_code("def f():\n  return 1\n[DONE] more") == "def f():\n  return 1\n"
    p = load_benchmark("mbpp", MBPP)[2]
    prog = code_program(p, "def max_value(d):\n  return max(d.values())")
    assert prog.source.startswith("D = {") and prog.entry == "max_value"
    assert prog.tests == tuple(p.meta["test_list"])


@needs_isolation
def test_fixed_completions_score_exactly_and_pass_at_k():
    """Three HumanEval problems and the three MBPP rows, four completions each: the canonical
    solution (passes), a wrong one, a syntax error, an infinite loop. Each problem has n = 4,
    c = 1: pass@1 = 1/4, pass@2 = 1 - C(3, 2) / C(4, 2) = 1 - 3/6 = 1/2, pass@4 = 1."""
    he = load_benchmark("humaneval", n=3)
    mb = load_benchmark("mbpp", MBPP)
    wrong = {"humaneval": "    return None\n", "mbpp": "def {e}(*a):\n  return None"}
    syntax = {"humaneval": "    return (\n", "mbpp": "def {e}(:\n  pass"}
    loop = {"humaneval": "    while True:\n        pass\n", "mbpp": "def {e}(*a):\n  while 1: pass"}
    probs, texts = [], []
    for p in he + mb:
        b = p.meta["benchmark"]
        e = p.meta.get("entry_point") or mbpp_entry(p.meta["test_list"])
        for t in (p.answer, wrong[b], syntax[b], loop[b]):
            probs.append(p)
            texts.append(t.replace("{e}", e))
    from grpo_core.codeexec import ExecLimits

    # 1 s per test: the loops time out sooner than under the benchmarks' 3 s
    grades = grade_code(probs, texts, ExecLimits(t_src=1.0, t_test=1.0, t_prog=2.0))
    reasons = [g.reason for g in grades]
    assert reasons == ["pass", "wrong_output", "syntax_error", "timeout"] * 6, reasons
    assert [g.score for g in grades] == [1.0, 0.0, 0.0, 0.0] * 6
    assert grades[4 * 3].pred == "3/3"  # MBPP: the three asserts counted one by one
    scores = [[g.score for g in grades[i : i + 4]] for i in range(0, 24, 4)]
    m = score_groups(scores, [[None] * 4] * 6, [1, 2, 4])
    assert m["pass@1"] == pytest.approx(0.25) and m["avg@4"] == pytest.approx(0.25)
    assert m["pass@2"] == pytest.approx(0.5) and m["pass@4"] == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


@needs_isolation
def test_every_canonical_humaneval_solution_passes():
    """The whole benchmark's reference solutions in the sandbox (one call per 64 programs)."""
    probs = load_benchmark("humaneval")
    grades = grade_code(probs, [p.answer for p in probs])
    failed = [(p.id, g.reason) for p, g in zip(probs, grades) if g.reason != "pass"]
    assert not failed
