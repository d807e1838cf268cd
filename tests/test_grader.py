"""evals.grader: math-verify grading with a per-sample timeout that works in any thread, the
multi-answer guard, the numeric fallback, and inputs that must score without crashing."""

import threading
import time

import pytest

pytest.importorskip("math_verify")

from evals.grader import (  # noqa: E402
    MathGrader,
    answer_key,
    extract_prediction,
    grade_math,
    last_boxed,
    split_top_level,
    to_number,
)
from grpo_core.errors import UserError  # noqa: E402

# LaTeX that keeps math-verify's parser busy for seconds (3000 unclosed parentheses)
HANG = "\\boxed{" + "(" * 3000 + "}"


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout_s=2.0) as g:
        yield g


def test_extraction_helpers():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"  # escaped braces do not close
    assert last_boxed("no box") is None
    # boxed preferred over a later number; numeric golds fall back to '####' / the last number
    assert extract_prediction("\\boxed{5} so 7 apples", numeric_gold=True) == "5"
    assert extract_prediction("...\n#### 1,234", numeric_gold=True) == "1,234"
    assert extract_prediction("she has 3 then 12 eggs.", numeric_gold=True) == "12"
    assert extract_prediction("she has 3 then 12 eggs.", numeric_gold=False) is None
    assert extract_prediction("", numeric_gold=True) is None
    assert to_number("1,234.5") == 1234.5 and to_number("\\$18") == 18.0
    assert to_number("1,2") is None  # two answers, not a thousands separator
    assert to_number("\\frac{3}{4}") == 0.75 and to_number("x+1") is None
    assert split_top_level("(1,2), 3; 1,000") == ["(1,2)", "3", "1,000"]
    assert answer_key("18.0") == answer_key("18") == answer_key(" 18 ")
    assert answer_key("x + 1") == answer_key("x  +  1") == "x + 1"


def test_numeric_and_symbolic_matches(grader):
    cases = [
        ("The answer is \\boxed{18}.", "18", 1.0, "numeric"),
        ("so she makes $1,000 a week.\n#### 1,000", "1000", 1.0, "numeric"),
        ("\\boxed{18.0}", "18", 1.0, "numeric"),
        ("\\boxed{17}", "18", 0.0, "mismatch"),
        ("\\boxed{\\frac12}", "\\frac{1}{2}", 1.0, "match"),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0, "numeric"),
        ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0, "match"),
        ("\\boxed{x^2+1}", "(x+1)^2", 0.0, "mismatch"),
    ]
    res = grader.grade_many([(c, g) for c, g, _, _ in cases])
    for (c, g, score, reason), r in zip(cases, res):
        assert (r.score, r.reason) == (score, reason), (c, g, r)


def test_text_answers_and_dead_workers(grader):
    # a text gold math-verify cannot parse still matches the same text
    assert grader.grade("\\boxed{\\text{Venus}}", "\\text{Venus}").reason == "exact"
    assert grader.grade("\\boxed{\\text{Mars}}", "\\text{Venus}").score == 0.0
    # a worker that died while idle is replaced, the sample still graded
    for w in grader._workers:
        w.proc.kill()
        w.proc.wait(5)
    assert grader.grade("\\boxed{\\sqrt{9}}", "3").reason in ("match", "numeric")
    assert grader.grade("\\boxed{2\\pi}", "2\\pi").score == 1.0


def test_multi_answer_guard(grader):
    # a gold with several answers needs all of them: one of the two roots scores 0
    assert grader.grade("\\boxed{1}", "1, 2").score == 0.0
    assert grader.grade("\\boxed{2}", "\\pm 2").score == 0.0
    assert grader.grade("\\boxed{3}", "3, 5").reason in ("multi_answer", "mismatch")
    assert grader.grade("\\boxed{1, 2, 3}", "1, 2").score == 0.0
    # all of them (any order, or written as a set / with \pm) score 1
    assert grader.grade("\\boxed{2, 1}", "1, 2").score == 1.0
    assert grader.grade("\\boxed{2, -2}", "\\pm 2").score == 1.0


def test_bad_inputs_score_without_crashing(grader):
    t0 = time.monotonic()
    res = grader.grade_many(
        [
            ("", "5"),  # empty completion
            (None, "5"),  # not even a string
            ("x" * 50_000, "5"),  # 50,000 characters, no answer
            ("y" * 50_000 + " \\boxed{5}", "5"),  # 50,000 characters, boxed answer at the end
            ("\\boxed{5}", ""),  # a malformed gold
            (HANG, "5"),  # the parser hangs -> timeout -> 0
            ("\\boxed{\\frac{1}{3}}", "\\frac13"),  # the grader still works after a timeout
        ]
    )
    assert [r.reason for r in res] == [
        "no_answer",
        "no_answer",
        "no_answer",
        "numeric",
        "error:no_gold",
        "timeout",
        "match",
    ]
    assert [r.score for r in res] == [0, 0, 0, 1, 0, 0, 1]
    assert grader.stats["timeout"] >= 1  # counted
    # one 2 s timeout plus a worker restart; no hang
    assert time.monotonic() - t0 < 60


def test_timeout_works_outside_the_main_thread():
    """math-verify's own timeout (SIGALRM) raises in a thread; this grader's does not."""
    out = {}

    def work():
        try:
            with MathGrader(timeout_s=1.0) as g:
                out["res"] = g.grade_many([(HANG, "5"), ("\\boxed{\\sqrt{4}}", "2")])
        except Exception as e:  # pragma: no cover - the failure being tested for
            out["err"] = e

    th = threading.Thread(target=work)
    th.start()
    th.join(120)
    assert "err" not in out, out.get("err")
    assert [(r.score, r.reason) for r in out["res"]] == [(0.0, "timeout"), (1.0, "match")]


def test_grade_math_and_bad_settings():
    assert grade_math("\\boxed{\\frac{6}{4}}", "\\frac32").score == 1.0
    with pytest.raises(UserError, match="timeout"):
        MathGrader(timeout_s=0)
    with pytest.raises(UserError, match="workers"):
        MathGrader(workers=0)


def test_last_number_fallback_keeps_thousands_but_not_trailing_commas():
    from evals.grader import extract_prediction

    assert extract_prediction("It had 366, in total", numeric_gold=True) == "366"
    assert extract_prediction("The profit is $70,000.", numeric_gold=True) == "70,000"
    assert extract_prediction("so 1,2 and 3", numeric_gold=True) == "3"
