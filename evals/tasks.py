"""Tasks: prompts with gold answers, fixed train/test splits, prompt templates and graders.

A task yields :class:`Problem` rows and grades an extracted answer with its own grader. The
training reward (grpo_core.rewards.correctness) and the evaluation score (evals.evaluate) both
call :meth:`Task.grade`, so they can never disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.grader import NUMBER_RE, last_boxed
from grpo_core.errors import UserError
from grpo_core.params import ArithCotParams
from grpo_core.registry import Registry

TASKS: Registry = Registry("task")
TEMPLATES: Registry = Registry("prompt template")


@dataclass
class Problem:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# prompt templates: data, not code paths


TEMPLATES.register("plain")("{question}")
TEMPLATES.register("expr")("{expression}=")
TEMPLATES.register("boxed")(
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)

# GSM8K chain of thought ending in the "#### N" line of the dataset's own solutions
TEMPLATES.register("gsm8k_cot")(
    "{question}\nSolve the problem step by step. End with a final line of the form "
    "'#### <number>' and also write the number within \\boxed{{}}."
)
# DeepSeek-R1 style: think first, then answer; the boxed answer is graded
TEMPLATES.register("r1_think")(
    "{question}\nThink through the problem inside <think> </think> tags first, then give the "
    "answer. Put your final answer within \\boxed{{}}."
)


def render_prompt(template: str, p: Problem) -> str:
    tpl = TEMPLATES.get(template, "task.template")
    fields = {"question": p.question, **p.meta}
    if "{expression}" in tpl and "expression" not in fields:
        raise UserError(
            f"template {template!r} needs an 'expression' field, problem {p.id} has none"
        )
    return tpl.format(**fields)


# --------------------------------------------------------------------------------------------
# answer extraction

# one answer parser for training rewards and evaluation: the grader's (boxed with balanced and
# escaped braces, thousands separators kept whole)
def extract_answer(completion: str) -> str | None:
    """Final answer of a completion: the last \\boxed{...}, else <answer>...</answer>, else the
    last number. None when there is none."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    m = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.S)
    if m:
        return m[-1].strip()
    nums = NUMBER_RE.findall(completion)
    return nums[-1] if nums else None


def is_well_formed(completion: str) -> bool:
    """Format check for the short-answer tasks: the completion is just the answer (a number,
    optionally boxed), nothing else."""
    c = completion.strip()
    b = last_boxed(c)
    if b is not None and c.startswith("\\boxed{") and c.endswith("}"):
        c = b
    return bool(re.fullmatch(r"-?\d+(?:\.\d+)?", c))


# --------------------------------------------------------------------------------------------
# tasks


class Task:
    """Base task: ``train()`` / ``test()`` splits and ``grade(answer, problem)`` in [0, 1]."""

    name = "task"

    def __init__(
        self,
        n_train: int,
        n_test: int,
        seed: int,
        difficulty: dict,
        path: str | None,
        params: dict | None = None,
    ):
        self.n_train, self.n_test, self.seed = n_train, n_test, seed
        self.difficulty, self.path = difficulty, path
        self.params = dict(params or {})
        self._train: list[Problem] | None = None
        self._test: list[Problem] | None = None

    def _split(self) -> None:
        raise NotImplementedError

    def train(self) -> list[Problem]:
        if self._train is None:
            self._split()
        return self._train  # type: ignore[return-value]

    def test(self) -> list[Problem]:
        if self._test is None:
            self._split()
        return self._test  # type: ignore[return-value]

    def grade(self, answer: str | None, problem: Problem) -> float:
        return numeric_match(answer, problem.answer)

    def sft_target(self, problem: Problem) -> str:
        """The completion SFT teaches (the gold answer in the task's answer format)."""
        return problem.answer


def numeric_match(answer: str | None, gold: str) -> float:
    if answer is None:
        return 0.0
    a, g = answer.strip().replace(",", ""), gold.strip().replace(",", "")
    try:
        return float(abs(float(a) - float(g)) < 1e-6)
    except ValueError:
        return float(a == g)


# Difficulty levels of the tiny arithmetic mix: (reasoning-gym dataset, its config). The mix
# keeps easy items (learnable quickly) beside hard ones so that variants stay below the ceiling.
_ADD = dict(operators=("+",), allow_parentheses=False, allow_negation=False)
ARITH_LEVELS: dict[str, tuple[str, dict]] = {
    # additions (reasoning-gym basic_arithmetic restricted to +)
    "add1": (
        "basic_arithmetic",
        dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, **_ADD),
    ),
    "add2": (
        "basic_arithmetic",
        dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2, **_ADD),
    ),
    "add3": (
        "basic_arithmetic",
        dict(min_terms=3, max_terms=3, min_digits=1, max_digits=2, **_ADD),
    ),
    # chain sums with + and - (harder: signs and borrows)
    "sum1": ("chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1)),
    "sum2": ("chain_sum", dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2)),
    "chain3": ("chain_sum", dict(min_terms=3, max_terms=3, min_digits=1, max_digits=2)),
}


@TASKS.register("arith_mix")
class ArithMix(Task):
    """A mix of reasoning-gym arithmetic difficulty levels (procedural, generated offline).

    ``difficulty`` maps level names (see ARITH_LEVELS) to mixture weights, e.g.
    ``{add1: 1, add2: 2, add3: 1}``. Graded by reasoning-gym's own ``score_answer``.
    """

    name = "arith_mix"

    def _split(self) -> None:
        import reasoning_gym as rg

        weights = self.difficulty or {"add1": 1, "add2": 2, "add3": 1}
        unknown = set(weights) - set(ARITH_LEVELS)
        if unknown:
            raise UserError(
                f"task.difficulty: unknown level(s) {sorted(unknown)}; valid: {sorted(ARITH_LEVELS)}"
            )
        total = sum(weights.values())
        n_all = self.n_train + self.n_test
        rows: list[Problem] = []
        seen: set[str] = set()
        for li, (level, w) in enumerate(sorted(weights.items())):
            ds_name, kw = ARITH_LEVELS[level]
            n = max(1, round(n_all * w / total)) * 2  # oversample, duplicates are dropped
            ds = rg.create_dataset(ds_name, size=n, seed=self.seed + 1000 * li, **kw)
            for i, e in enumerate(ds):
                expr = e["metadata"]["expression"].replace(" ", "")
                if expr in seen:
                    continue
                seen.add(expr)
                rows.append(
                    Problem(
                        id=f"{level}-{i}",
                        question=e["question"],
                        answer=str(e["answer"]),
                        meta={"expression": expr, "level": level, "source": ds_name},
                    )
                )
        import random

        rng = random.Random(self.seed)
        rng.shuffle(rows)
        # test set stratified by level: the same weights as train
        by_level: dict[str, list[Problem]] = {}
        for r in rows:
            by_level.setdefault(r.meta["level"], []).append(r)
        test: list[Problem] = []
        for level, w in sorted(weights.items()):
            k = round(self.n_test * w / total)
            test += by_level[level][:k]
        test_ids = {p.id for p in test}
        train = [r for r in rows if r.id not in test_ids]
        # keep the level mix in train as well
        quota = {lv: round(self.n_train * w / total) for lv, w in weights.items()}
        self._train = []
        for r in train:
            if quota[r.meta["level"]] > 0:
                self._train.append(r)
                quota[r.meta["level"]] -= 1
        self._test = sorted(test, key=lambda p: p.id)

    def grade(self, answer: str | None, problem: Problem) -> float:
        """1.0 when reasoning-gym's own score_answer says the answer is exact, else 0.0.

        score_answer also gives partial credit len(gold)/len(answer) to any answer that merely
        contains the gold as a substring ("145" for 45 scores 0.67, "15" for 5 scores 0.5). As a
        training reward that partial credit is a hack that GRPO learns (appending digits), so it
        is not passed on: reward and accuracy are the same exact-match grade."""
        ds = _rg_scorer(problem.meta.get("source", "chain_sum"))
        score = ds.score_answer(answer, {"answer": problem.answer, "metadata": problem.meta})
        return float(score >= 1.0)


@TASKS.register("arith_cot", params=ArithCotParams)
class ArithCoT(ArithMix):
    """Two-term additions whose SFT targets mix a direct answer ("83") with a digit-by-digit
    scratchpad ("5+8=13;4+3+1=8;83") in proportion ``task.params.cot_frac`` (default 0.5), so
    the start policy has a short and a long way to answer. Length-reducing variants (ConciseR,
    S-GRPO, TLTS, ARM) have something to shorten; the grader reads the last number either way.
    """

    name = "arith_cot"

    def _split(self) -> None:
        self.difficulty = self.difficulty or {"add1": 1, "add2": 2}
        super()._split()
        bad = {p.meta["level"] for p in self._train + self._test} - {"add1", "add2"}
        if bad:
            raise UserError(f"task arith_cot: only add1 / add2 levels have a scratchpad, got {sorted(bad)}")
        frac = float(self.params.get("cot_frac", 0.5))
        if not 0.0 <= frac <= 1.0:
            raise UserError(f"task.params.cot_frac must be in [0, 1], got {frac}")

    @staticmethod
    def scratchpad(expression: str) -> str:
        """'45+38' -> '5+8=13;4+3+1=8;83': units, then tens with the carry, then the sum."""
        a, b = expression.split("+")
        a, b = a.zfill(2), b.zfill(2)
        u = int(a[1]) + int(b[1])
        carry = u // 10
        t = int(a[0]) + int(b[0]) + carry
        tens = f"{a[0]}+{b[0]}" + (f"+{carry}" if carry else "") + f"={t}"
        return f"{a[1]}+{b[1]}={u};{tens};{int(a) + int(b)}"

    def sft_target(self, problem: Problem) -> str:
        import zlib

        frac = float(self.params.get("cot_frac", 0.5))
        if zlib.crc32(problem.id.encode()) % 1000 < frac * 1000:
            return self.scratchpad(problem.meta["expression"])
        return problem.answer


@TASKS.register("jsonl")
class JsonlTask(Task):
    """Problems from a local JSONL file (``task.path``): one object per line with a question
    (``question`` or ``problem``) and an ``answer``; the last ``n_test`` rows are the test split.
    Graded by numeric match (exact string match for non-numeric golds)."""

    name = "jsonl"

    def _split(self) -> None:
        if not self.path:
            raise UserError("task.path: the jsonl task needs a local file path (task.path=...)")
        path = Path(self.path)
        if not path.exists():
            raise UserError(f"task.path: file {path} does not exist")
        rows = []
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{ln}: expected a JSON object, got {type(obj).__name__}")
            q = obj.get("question", obj.get("problem"))
            if not isinstance(q, str) or "answer" not in obj or obj["answer"] is None:
                have = sorted(obj)
                raise UserError(
                    f"{path}:{ln}: row needs a string 'question' (or 'problem') and an 'answer'; "
                    f"it has fields {have}"
                )
            meta = {k: v for k, v in obj.items() if k not in ("question", "problem", "answer")}
            rows.append(
                Problem(id=str(obj.get("id", ln)), question=q, answer=str(obj["answer"]), meta=meta)
            )
        if len(rows) <= self.n_test:
            raise UserError(f"{path}: {len(rows)} rows, need more than task.n_test={self.n_test}")
        self._train = rows[: len(rows) - self.n_test][: self.n_train]
        self._test = rows[len(rows) - self.n_test :]


_SCORERS: dict[str, Any] = {}


def _rg_scorer(name: str):
    if name not in _SCORERS:
        import reasoning_gym as rg

        _SCORERS[name] = rg.create_dataset(name, size=1, seed=0)
    return _SCORERS[name]


def make_task(cfg) -> Task:
    """Build the task of a TaskCfg."""
    cls = TASKS.get(cfg.name, "task.name")
    return cls(
        cfg.n_train, cfg.n_test, cfg.seed, dict(cfg.difficulty), cfg.path, dict(cfg.params)
    )
