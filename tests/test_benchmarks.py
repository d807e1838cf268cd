"""evals.benchmarks: declarations, gold extraction, local files with malformed rows; the
benchmark evaluation end to end on a tiny model (eval seeds, CIs, merge over seeds); and, where
the reference data is present, each real test set graded against itself and shuffled."""

import json
import os
import random
from pathlib import Path

import pytest

from evals.benchmarks import BENCHMARKS, EXTRACTORS, LoadReport, load_benchmark
from grpo_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data relative to the repo root (GRPO_REFERENCE_DATA points elsewhere, e.g. from a
# git worktree that does not sit beside shared/)
DATA = Path(os.environ.get("GRPO_REFERENCE_DATA", ROOT.parent / "shared" / "data")) / "math"


def test_declarations():
    math = {n: b for n, b in BENCHMARKS.items() if b.kind == "math"}
    assert set(math) == {
        "gsm8k",
        "math500",
        "aime24",
        "aime25",
        "amc23",
        "minerva_math",
        "olympiadbench",
    }
    # the code benchmarks (tests/test_code_benchmarks.py)
    assert set(BENCHMARKS) - set(math) == {"humaneval", "mbpp"}
    for b in math.values():
        assert "/" in b.hf_id and b.revision and b.split and b.question_fields and b.answer_fields
        assert all(ext in EXTRACTORS for _, ext in b.answer_fields)
        # the standard protocol: T=0.6, top_p=0.95
        assert (b.standard.temperature, b.standard.top_p) == (0.6, 0.95)
        assert b.paper.source
    for name in ("aime24", "aime25", "amc23"):  # avg@k with k >= 16 on AIME and AMC
        assert BENCHMARKS[name].standard.k >= 16


def test_gold_extractors():
    assert EXTRACTORS["gsm8k_hash"]("She makes 9 * 2 = <<9*2=18>>18.\n#### 1,018") == "1018"
    assert EXTRACTORS["boxed"]("so $s=\\boxed{\\frac{1}{2}}$ cm and \\boxed{4.5e33}") == "4.5e33"
    assert EXTRACTORS["plain"](27.0) == "27" and EXTRACTORS["plain"]("3.0") == "3"
    assert EXTRACTORS["plain"](0.25) == "0.25" and EXTRACTORS["plain"](7) == "7"
    assert EXTRACTORS["answer_list"](["$\\frac{1}{2}$", "$3$"]) == "\\frac{1}{2}, 3"
    for ext, bad in [("gsm8k_hash", "no marker"), ("boxed", "no box"), ("plain", None)]:
        with pytest.raises(ValueError):
            EXTRACTORS[ext](bad)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7", "idx": 0},
    {"question": "What is 10 times 12?", "answer": "#### 120", "idx": 1},
]


def test_local_file_and_malformed_rows(tmp_path):
    f = _write_jsonl(
        tmp_path / "gsm.jsonl",
        GOOD[:1]
        + ["{not json"]  # line 2
        + [{"question": "Q?", "answer": "no final answer"}]  # line 3
        + [{"answer": "#### 5"}]  # line 4: no question
        + GOOD[1:],  # line 5
    )
    with pytest.raises(UserError, match=r"gsm\.jsonl:2: <line>: not valid JSON"):
        load_benchmark("gsm8k", f)
    rep = LoadReport()
    ps = load_benchmark("gsm8k", f, on_error="skip", report=rep)
    assert [(p.id, p.answer) for p in ps] == [("gsm8k-0", "7"), ("gsm8k-1", "120")]
    assert [s.split(": ", 1)[0].rsplit(":", 1)[1] for s in rep.skipped] == ["2", "3", "4"]
    assert "answer: no '#### N' final answer" in rep.skipped[1]
    assert "question: missing" in rep.skipped[2]
    assert load_benchmark("gsm8k", f, on_error="skip", n=1)[0].answer == "7"
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark("gsm8k", tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("gsm9k", f)


def test_parquet_and_answer_field_fallback(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"problem": "Find x.", "solution": "So $x=\\boxed{\\frac{3}{4}}$.", "idx": 0},
        {"problem": "Find y.", "solution": "Thus \\boxed{2\\sqrt{2}}", "idx": 1},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    ps = load_benchmark("minerva_math", tmp_path / "m.parquet")
    assert [p.answer for p in ps] == ["\\frac{3}{4}", "2\\sqrt{2}"]
    # an 'answer' column wins over the boxed solution
    f = _write_jsonl(tmp_path / "a.jsonl", [{"problem": "P", "answer": 204.0, "id": 60}])
    assert load_benchmark("aime24", f)[0].answer == "204"


def test_benchmark_evaluation_end_to_end(tmp_path):
    """A tiny random model on a 3-problem GSM8K-style file: k=4 samples (the standard protocol's
    k for GSM8K), two eval seeds, a
    malformed row skipped and counted; metrics, CIs, std over seeds and the protocol recorded;
    merging the two single-seed runs gives the two-seed run's metrics."""
    pytest.importorskip("math_verify")
    from evals.aggregate import merge_eval_seeds
    from evals.evaluate import evaluate_benchmark
    from grpo_core.config import load_config
    from grpo_core.models import build_char_tokenizer, build_tiny_model

    cfg = load_config(None, "smoke", ["run.threads=1"])
    tok = build_char_tokenizer()
    build_tiny_model(cfg.model.tiny, tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = _write_jsonl(
        tmp_path / "g.jsonl",
        GOOD + [{"question": "2+2?"}, {"question": "1+1?", "answer": "#### 2"}],
    )
    # line 5 is not UTF-8, line 6 is over eval.max_line_bytes=200: both skipped and reported
    with data.open("ab") as fh:
        fh.write(b'{"question": "caf\xe9?", "answer": "#### 1"}\n')
        fh.write(b'{"question": "' + b"x" * 300 + b'", "answer": "#### 1"}\n')
    cfg = load_config(
        None,
        "smoke",
        [
            "run.threads=1",
            f"eval.benchmark_paths.gsm8k={data}",
            "eval.benchmark_max_new_tokens=6",
            "eval.k=2",  # below the protocol's k=4: the protocol's wins
            "eval.pass_ks=[1,2,8]",  # 8 > k: left out
            "eval.grader_timeout_s=5",
            "eval.max_line_bytes=200",
        ],
    )
    log: list[str] = []
    res = evaluate_benchmark(
        cfg, tmp_path / "m", tmp_path / "both", "gsm8k", eval_seeds=[0, 1], log=log.append
    )
    assert res["n_prompts"] == 3 and res["k"] == 4 and res["eval_seeds"] == [0, 1]
    assert len(res["skipped_rows"]) == 3 and "g.jsonl:3" in res["skipped_rows"][0]
    assert res["skipped_rows"][1:] == [
        f"{data}:5: <line>: not valid UTF-8 (byte 0xe9 at byte 18)",
        f"{data}:6: <line>: line is 336 bytes, over eval.max_line_bytes=200",
    ]
    assert any("skipped malformed row" in x for x in log)
    assert p_ks(res) == [1, 2]
    for m in ("avg@4", "pass@1", "pass@2", "maj@4"):
        assert 0.0 <= res["metrics"][m] <= 1.0
        lo, hi = res["ci"][m]
        assert lo <= res["metrics"][m] <= hi
        assert m in res["std_over_seeds"]
    p = res["protocol"]
    assert (p["temperature"], p["top_p"], p["max_new_tokens"], p["template"]) == (
        0.6,
        0.95,
        6,
        "boxed",
    )
    assert p["name"] == "standard" and "torch" in p["versions"] and p["grader"]["timeout_s"] == 5
    samples = [
        json.loads(x) for x in (tmp_path / "both/gsm8k.samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 3 * 4 * 2  # problems x k x eval seeds
    assert {
        "prompt_id",
        "eval_seed",
        "completion",
        "answer",
        "gold",
        "score",
        "grade_reason",
    } <= set(samples[0])
    assert sum(res["grader"]["stats"].values()) == 24
    # one eval seed per job, then merged: the same metrics as the joint run
    for es in (0, 1):
        evaluate_benchmark(cfg, tmp_path / "m", tmp_path / f"es{es}", "gsm8k", eval_seeds=[es])
    merged = merge_eval_seeds(
        [tmp_path / "es0/gsm8k.json", tmp_path / "es1/gsm8k.json"], tmp_path / "merged/gsm8k.json"
    )
    for m in ("avg@4", "pass@1", "pass@2", "maj@4"):
        assert merged["metrics"][m] == pytest.approx(res["metrics"][m])
        assert merged["std_over_seeds"][m] == pytest.approx(res["std_over_seeds"][m], nan_ok=True)
    assert (tmp_path / "merged/gsm8k.samples.jsonl").read_text().count("\n") == 24


def p_ks(res) -> list[int]:
    return res["protocol"]["pass_ks"]


def test_protocols():
    from evals.evaluate import benchmark_label, resolve_protocol
    from grpo_core.config import load_config

    cfg = load_config(None, "smoke", ["eval.k=4", "eval.benchmark_max_new_tokens=512"])
    std = resolve_protocol(cfg, "aime24")
    assert (std["temperature"], std["top_p"], std["k"], std["max_new_tokens"]) == (
        0.6,
        0.95,
        16,
        512,
    )
    paper = resolve_protocol(cfg, "aime24", "paper")
    assert (paper["temperature"], paper["top_p"], paper["k"]) == (1.0, 0.7, 32)
    assert resolve_protocol(cfg, "gsm8k", "paper")["temperature"] == 0.0
    assert benchmark_label("aime24", "standard") == "aime24"
    assert benchmark_label("aime24", "paper") == "aime24-paper"


# --------------------------------------------------------------------------------------------
# the real test sets in ../shared/data (reference material beside the project)


def _self_grade(name: str):
    from grpo_core.grader import MathGrader, answer_key

    f = DATA / name / "test.jsonl"
    if not f.exists():
        pytest.skip(
            f"reference data {f} is absent (../shared/data beside the repo; or set "
            "GRPO_REFERENCE_DATA=/path/to/shared/data)"
        )
    ps = load_benchmark(name, f)
    boxed = lambda a: f"So the final answer is $\\boxed{{{a}}}$."  # noqa: E731
    with MathGrader(timeout_s=10) as g:
        res = g.grade_many([(boxed(p.answer), p.answer) for p in ps])
        misses = [(p.id, p.answer, r.reason) for p, r in zip(ps, res) if r.score < 1]
        rate = 1 - len(misses) / len(ps)
        assert rate >= 0.995, f"{name}: self-grade {rate:.4f}, misses {misses}"
        # answers shuffled across problems; only pairs whose golds differ count
        perm = list(range(len(ps)))
        random.Random(0).shuffle(perm)
        pairs = [
            (ps[j].answer, ps[i].answer)
            for i, j in enumerate(perm)
            if answer_key(ps[j].answer) != answer_key(ps[i].answer)
        ]
        hits = [
            (a, gold, r.reason)
            for (a, gold), r in zip(pairs, g.grade_many([(boxed(a), gold) for a, gold in pairs]))
            if r.score >= 1
        ]
        assert len(hits) <= 0.01 * len(pairs), f"{name}: shuffled answers scored {hits}"
    return len(ps), misses


@pytest.mark.parametrize("name", ["gsm8k", "aime24", "amc23"])
def test_real_test_sets_grade_against_themselves(name):
    n, misses = _self_grade(name)
    assert n > 0


@pytest.mark.slow
def test_minerva_grades_against_itself():
    n, misses = _self_grade("minerva_math")
    assert n == 272


def test_bad_completions_are_scored_in_a_run(tmp_path, monkeypatch):
    """Done-when 5 inside a whole evaluation: a malformed row, an empty completion, a
    50,000-character completion and LaTeX that hangs the parser are each scored (the hang times
    out -> 0 and is counted) and the run writes its results."""
    pytest.importorskip("math_verify")
    import torch

    import evals.evaluate as ev_mod
    from grpo_core.config import load_config
    from grpo_core.models import build_char_tokenizer, build_tiny_model
    from grpo_core.rollout import Rollouts

    cfg = load_config(None, "smoke", ["run.threads=1"])
    tok = build_char_tokenizer()
    build_tiny_model(cfg.model.tiny, tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = _write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"question": "Q1", "answer": "#### 7"},
            '{"question": ',
            {"question": "Q2", "answer": "#### 5"},
        ],
    )
    texts = [
        "",  # empty
        "z" * 50_000 + " so \\boxed{7}",  # 50,000 characters, right
        "\\boxed{" + "(" * 3000 + "}",  # hangs the parser
        "\\boxed{7}",  # right
        "\\boxed{5}",
        "w" * 50_000,
        "",
        "The answer is 5.",
    ]

    class Scripted:
        def __init__(self, *a, **kw):
            pass

        def generate(self, prompts, params):
            n = len(prompts)
            z = torch.zeros(n, 1, dtype=torch.long)
            return Rollouts(z, z + 1, z, z + 1, ["stop"] * n, texts[:n])

        def close(self):
            pass

    monkeypatch.setattr(ev_mod, "make_engine", lambda *a, **kw: Scripted())
    cfg = load_config(
        None,
        "smoke",
        ["run.threads=1", f"eval.benchmark_paths.gsm8k={data}", "eval.grader_timeout_s=2"],
    )
    res = ev_mod.evaluate_benchmark(cfg, tmp_path / "m", tmp_path / "out", "gsm8k", eval_seeds=[0])
    assert res["n_prompts"] == 2 and len(res["skipped_rows"]) == 1
    reasons = [
        json.loads(x)["grade_reason"]
        for x in (tmp_path / "out/gsm8k.samples.jsonl").read_text().splitlines()
    ]
    # the boxed "((((..." is not a number: it goes to math-verify, which hangs -> timeout
    assert reasons == ["no_answer", "numeric", "timeout", "numeric"] + [
        "numeric",
        "no_answer",
        "no_answer",
        "numeric",
    ]
    assert res["metrics"]["avg@4"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert res["grader"]["timeouts"] == 1
    # a symbolic gold: the hanging LaTeX reaches math-verify and times out
    sym = _write_jsonl(tmp_path / "m.jsonl", [{"problem": "P", "solution": "\\boxed{x^2}"}] * 2)
    cfg = load_config(
        None,
        "smoke",
        ["run.threads=1", f"eval.benchmark_paths.minerva_math={sym}", "eval.grader_timeout_s=2"],
    )
    res = ev_mod.evaluate_benchmark(
        cfg, tmp_path / "m", tmp_path / "out", "minerva_math", eval_seeds=[0]
    )
    assert res["grader"]["timeouts"] == 1 and res["grader"]["stats"]["timeout"] == 1
    assert res["metrics"]["avg@4"] == 0.0


def test_small_sampled_benchmarks_get_ten_eval_seeds_under_the_paper_protocol():
    """AIME under the paper protocol (avg@32 at T = 1) runs >= 10 eval seeds: eval.seeds
    extended with the next integers; amc23's paper protocol is greedy (seed-free) and the
    standard protocol keeps eval.seeds; an undeclared benchmark keeps them too."""
    from evals.benchmarks import BENCHMARKS, eval_seeds_for

    assert eval_seeds_for("aime24", "paper", [0, 1, 2]) == list(range(10))
    assert eval_seeds_for("aime25", "paper", [3, 7]) == [3, 7, *range(8, 16)]
    assert eval_seeds_for("aime24", "paper", list(range(12))) == list(range(12))
    assert eval_seeds_for("aime24", "standard", [0, 1, 2]) == [0, 1, 2]
    assert eval_seeds_for("amc23", "paper", [0]) == [0]
    assert eval_seeds_for("not_declared", "paper", [5]) == [5]
    assert BENCHMARKS["aime24"].paper.as_dict()["min_eval_seeds"] == 10
    assert BENCHMARKS["aime24"].paper.temperature > 0  # sampled: seeds matter
