"""Tasks: the arithmetic grader is exact-match only (no substring partial credit)."""

from evals.tasks import ArithMix, Problem


def _p(gold: str) -> Problem:
    return Problem(id="x", question="?", answer=gold, meta={"source": "basic_arithmetic"})


def test_arith_grade_is_exact_match_without_substring_credit():
    task = ArithMix(10, 2, 0, {"add2": 1}, None)
    assert task.grade("45", _p("45")) == 1.0
    # reasoning-gym's score_answer gives len(gold)/len(answer) = 2/3 to "145" and 1/2 to "15"
    # for gold "5"; as a reward GRPO learned to append digits, so both must grade 0
    assert task.grade("145", _p("45")) == 0.0
    assert task.grade("15", _p("5")) == 0.0
    assert task.grade("44", _p("45")) == 0.0
    assert task.grade(None, _p("45")) == 0.0
    assert task.grade("", _p("45")) == 0.0
