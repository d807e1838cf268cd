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


def test_arith_cot_scratchpad_and_mix():
    from evals.tasks import ArithCoT, extract_answer, make_task
    from grpo_core.config import TaskCfg

    # units, then tens with the carry, then the sum; the last number is the answer
    assert ArithCoT.scratchpad("45+38") == "5+8=13;4+3+1=8;83"
    assert ArithCoT.scratchpad("12+30") == "2+0=2;1+3=4;42"
    assert ArithCoT.scratchpad("7+5") == "7+5=12;0+0+1=1;12"
    assert extract_answer(ArithCoT.scratchpad("45+38")) == "83"

    task = make_task(TaskCfg(name="arith_cot", n_train=400, n_test=10, params={"cot_frac": 0.5}))
    targets = [task.sft_target(p) for p in task.train()]
    long = [t for t in targets if "=" in t]
    assert 0.35 < len(long) / len(targets) < 0.65
    for p, t in zip(task.train(), targets):
        assert task.grade(extract_answer(t), p) == 1.0
    none = make_task(TaskCfg(name="arith_cot", n_train=50, n_test=5, params={"cot_frac": 0.0}))
    assert all("=" not in none.sft_target(p) for p in none.train())


def test_arith_cot_rejects_bad_params():
    import pytest

    from evals.tasks import make_task
    from grpo_core.config import TaskCfg
    from grpo_core.errors import UserError

    with pytest.raises(UserError, match="cot_frac"):
        make_task(TaskCfg(name="arith_cot", n_train=20, n_test=5, params={"cot_frac": 2})).train()
    with pytest.raises(UserError, match="add1 / add2"):
        make_task(TaskCfg(name="arith_cot", n_train=20, n_test=5, difficulty={"chain3": 1})).train()


def test_extract_answer_keeps_thousands_separators_whole():
    from evals.tasks import extract_answer, numeric_match

    assert extract_answer("The profit is $70,000.") == "70,000"
    assert numeric_match(extract_answer("The profit is $70,000."), "70000") == 1.0
    assert extract_answer("It had 366, in total") == "366"
    assert extract_answer("-1,234.5 in all") == "-1,234.5"
    # scratchpads separate their steps with ";" so the last number stays the answer
    assert extract_answer("1+9=10;9+1+1=11;110") == "110"
