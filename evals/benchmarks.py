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


EXTRACTORS: dict[str, Callable[[Any], str]] = {
    "gsm8k_hash": _gsm8k_hash,
    "boxed": _boxed,
    "plain": _plain,
    "answer_list": _answer_list,
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

    def as_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "k": self.k,
            "max_new_tokens": self.max_new_tokens,
            "template": self.template,
            "source": self.source,
        }


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
            paper=Protocol(1.0, 0.7, 32, 20480, "boxed", "DAPO: avg@32, T=1.0, top_p=0.7"),
            standard=_std(16),
        ),
        Benchmark(
            name="aime25",
            hf_id="math-ai/aime25",
            revision="main",
            split="test",
            question_fields=("problem", "question"),
            answer_fields=(("answer", "plain"), ("solution", "boxed")),
            paper=Protocol(1.0, 0.7, 32, 20480, "boxed", "DAPO-style: avg@32, T=1.0, top_p=0.7"),
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
            ),
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
    pid = next((row[f] for f in b.id_fields if f in row and row[f] is not None), index)
    meta = {f: row[f] for f in b.keep_fields if f in row}
    meta["benchmark"] = b.name
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
    rows = _read_local(Path(path).expanduser(), max_line_bytes) if path else _read_hub(b)
    rep = report if report is not None else LoadReport()
    rep.source = str(path) if path else f"hf://{b.hf_id}@{b.revision}"
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
