"""Tasks: the arithmetic grader is exact-match only (no substring partial credit); one grading
function per task for reward and evaluation; the math task's file checks."""

import json
from pathlib import Path

import pytest

from grpo_core.tasks import ArithMix, Problem


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
    from grpo_core.config import TaskCfg
    from grpo_core.tasks import ArithCoT, extract_answer, make_task

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

    from grpo_core.config import TaskCfg
    from grpo_core.errors import UserError
    from grpo_core.tasks import make_task

    with pytest.raises(UserError, match="cot_frac"):
        make_task(TaskCfg(name="arith_cot", n_train=20, n_test=5, params={"cot_frac": 2})).train()
    with pytest.raises(UserError, match="add1 / add2"):
        make_task(TaskCfg(name="arith_cot", n_train=20, n_test=5, difficulty={"chain3": 1})).train()


def test_extract_answer_keeps_thousands_separators_whole():
    from grpo_core.tasks import extract_answer, numeric_match

    assert extract_answer("The profit is $70,000.") == "70,000"
    assert numeric_match(extract_answer("The profit is $70,000."), "70000") == 1.0
    assert extract_answer("It had 366, in total") == "366"
    assert extract_answer("-1,234.5 in all") == "-1,234.5"
    # scratchpads separate their steps with ";" so the last number stays the answer
    assert extract_answer("1+9=10;9+1+1=11;110") == "110"


# --------------------------------------------------------------------------------------------
# one grader per task: the training reward and the evaluation grade are the same function

# completions where exact match of the extracted answer and math-verify disagree; the math task
# must grade every one of them like the benchmarks do (math-verify), in reward and eval alike
MATH_CASES = [
    # (completion, gold, math-verify grade, reason, old exact-match reward of the jsonl task)
    ("so \\boxed{\\frac12}", "1/2", 1.0, "match", 0.0),
    ("so \\boxed{1/2}", "\\frac12", 1.0, "match", 0.0),
    ("so \\boxed{0.5}", "\\frac12", 1.0, "match", 0.0),
    ("so \\boxed{\\frac12}", "0.5", 1.0, "match", 0.0),
    ("so \\boxed{x=3}", "3", 1.0, "match", 0.0),
    ("so \\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0, "match", 0.0),
    ("so \\boxed{\\$18}", "18", 1.0, "numeric", 0.0),
    ("so \\boxed{1e400}", "1e400", 1.0, "numeric", 0.0),  # float: inf vs inf, a miss
    ("\\boxed{3}" + " and that is all." * 300, "3", 1.0, "numeric", 1.0),  # box before the tail
    ("so \\boxed{3", "3", 0.0, "unbalanced_boxed", 1.0),  # cut off: the last number is no answer
    ("so \\boxed{4}", "3", 0.0, "mismatch", 0.0),
    ("no answer here", "\\frac12", 0.0, "no_answer", 0.0),
]


def _jsonl_task(tmp_path, golds, **params):
    from grpo_core.config import TaskCfg
    from grpo_core.tasks import make_task

    f = tmp_path / "math.jsonl"
    rows = [{"question": f"q{i}", "answer": g} for i, g in enumerate(golds)] + [
        {"question": "test", "answer": "1"}
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TaskCfg(name="jsonl", path=str(f), n_train=len(golds), n_test=1, params=params)
    return make_task(cfg)


def test_math_task_reward_equals_eval_grade_equals_benchmark_grade(tmp_path):
    """Old code: the reward of `task: jsonl` was numeric/exact match (``\\frac12`` vs 1/2 -> 0)
    while the benchmarks graded 1; now reward == evaluate()'s grade == MathGrader's."""
    from grpo_core.grader import MathGrader
    from grpo_core.rewards import GroupContext, correctness_reward
    from grpo_core.tasks import extract_answer, grade_texts, numeric_match

    texts = [c for c, *_ in MATH_CASES]
    task = _jsonl_task(tmp_path, [g for _, g, *_ in MATH_CASES])
    try:
        probs = task.train()
        assert [p.answer for p in probs] == [g for _, g, *_ in MATH_CASES]
        n = len(texts)
        ctx = GroupContext(texts, probs, ["stop"] * n, [1] * n, [n], 16, task=task)
        reward = correctness_reward(ctx).tolist()
        evals = grade_texts(task, texts, probs)  # what evaluate() calls
        with MathGrader() as g:
            bench = g.grade_many([(t, p.answer) for t, p in zip(texts, probs)])
        for (c, gold, score, reason, old), r, e, b in zip(MATH_CASES, reward, evals, bench):
            assert (e.score, e.reason) == (score, reason), (c[:40], gold, e)
            assert r == e.score == b.score and e.reason == b.reason, (c[:40], gold)
            assert numeric_match(extract_answer(c), gold) == old  # the old reward
        # the cases where the old reward was wrong
        assert sum(o != s for *_, s, _r, o in MATH_CASES) == 9
        # an already extracted answer (majority vote, label_acc) is graded as \boxed{answer}
        assert task.grade("\\frac{1}{2}", probs[0]) == 1.0 and task.grade(None, probs[0]) == 0.0
    finally:
        task.close()


def test_evaluate_writes_the_reward_grades(tmp_path, monkeypatch):
    """evaluate() on the math task scores each sample with the grade the reward gives."""
    import torch

    import evals.evaluate as ev
    from grpo_core.config import load_config
    from grpo_core.tasks import grade_texts

    texts = [c for c, *_ in MATH_CASES]
    golds = [g for _, g, *_ in MATH_CASES]
    f = tmp_path / "math.jsonl"
    rows = [{"question": "train", "answer": "1"}] + [
        {"question": f"q{i}", "answer": g} for i, g in enumerate(golds)
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        None,
        "smoke",
        [
            "task.name=jsonl",
            f"task.path={f}",
            f"task.n_test={len(golds)}",
            "eval.k=1",
            "task.template=plain",
        ],
    )

    from grpo_core.models import build_char_tokenizer
    from grpo_core.rollout import Rollouts

    class Engine:  # the completions above, three tokens each, after a two-token prompt
        def generate(self, prompts, params):
            n = len(prompts)
            ones = torch.ones(n, 3, dtype=torch.long)
            return Rollouts(ones[:, :2], ones[:, :2], ones, ones, ["stop"] * n, texts[:n])

    monkeypatch.setattr(
        ev,
        "load_model_and_tokenizer",
        lambda *a, **k: (torch.nn.Linear(1, 1), build_char_tokenizer()),
    )
    monkeypatch.setattr(ev, "make_engine", lambda *a, **k: Engine())
    monkeypatch.setattr(ev, "single_turn_prompts", lambda tok, tpl, ps: [[1, 2] for _ in ps])
    res = ev.evaluate(cfg, tmp_path / "model", tmp_path / "out")
    samples = [json.loads(x) for x in (tmp_path / "out" / "jsonl.samples.jsonl").open()]
    assert [s["score"] for s in samples] == [s for _, _, s, _, _ in MATH_CASES]
    assert [s["grade_reason"] for s in samples] == [r for _, _, _, r, _ in MATH_CASES]
    assert res["metrics"]["avg@1"] == pytest.approx(9 / 12)
    from grpo_core.tasks import make_task

    task = make_task(cfg.task)
    try:
        assert [g.score for g in grade_texts(task, texts, task.test())] == [
            s["score"] for s in samples
        ]
    finally:
        task.close()


def test_arith_grade_texts_is_the_old_reward():
    """The arithmetic tasks keep their exact grade: grade_texts == grade(extract_answer(.))."""
    from grpo_core.tasks import extract_answer, grade_texts

    task = ArithMix(10, 2, 0, {"add2": 1}, None)
    texts = ["45", "\\boxed{45}", "\\boxed{45", "145", "", "x", "4 5", "<answer>45</answer>"]
    g = grade_texts(task, texts, [_p("45")] * len(texts))
    assert [x.score for x in g] == [task.grade(extract_answer(t), _p("45")) for t in texts]
    assert [x.score for x in g] == [1, 1, 1, 0, 0, 0, 0, 1]
    assert [x.reason for x in g] == [
        "match", "match", "match", "mismatch", "no_answer", "no_answer", "mismatch", "match"
    ]  # fmt: skip


def test_math_task_workers_end_with_the_task_and_with_the_parent(tmp_path):
    """The reward path leaks no processes: close() (and garbage collection) ends the workers,
    and a trainer process that dies without closing takes them with it."""
    import gc
    import os
    import subprocess
    import sys
    import time

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    task = _jsonl_task(tmp_path, ["\\frac12", "2"], grader_workers=2)
    task.grade_texts(["\\boxed{0.5}", "\\boxed{x^2}"], task.train())
    pids = [w.proc.pid for w in task._grader._workers]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    task.close()
    assert not any(alive(p) for p in pids)
    task.grade_texts(["\\boxed{x^2}"], task.train()[:1])  # usable again after close
    pids = [w.proc.pid for w in task._grader._workers]
    del task
    gc.collect()
    time.sleep(0.2)
    assert not any(alive(p) for p in pids)

    code = (
        "import json, os, sys\n"
        "from grpo_core.tasks import JsonlTask, Problem\n"
        "t = JsonlTask(1, 1, 0, {}, None, {'grader_workers': 1})\n"
        "t.grade_texts(['\\\\boxed{x^2}'], [Problem('a', 'q', 'x^{2}')])\n"
        "print(json.dumps([w.proc.pid for w in t._grader._workers]), flush=True)\n"
        "os._exit(0)\n"  # no close, no __del__: as if the trainer were killed
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    pids = json.loads(r.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_jsonl_task_rejects_empty_golds_with_file_line(tmp_path):
    from grpo_core.config import TaskCfg
    from grpo_core.errors import UserError
    from grpo_core.tasks import make_task

    f = tmp_path / "t.jsonl"
    f.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": ""}\n')
    with pytest.raises(UserError, match=rf"^{f}:2: answer: empty answer '' \(an empty"):
        make_task(TaskCfg(name="jsonl", path=str(f), n_test=1)).train()
