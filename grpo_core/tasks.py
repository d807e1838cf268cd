"""Tasks: prompts with gold answers, fixed train/test splits, prompt templates and graders.

A task yields :class:`Problem` rows and grades whole completions with its one grading function,
:meth:`Task.grade_texts` (through :func:`grade_texts`): the training reward
(grpo_core.rewards.correctness), the training accuracy and the evaluation score (evals.evaluate)
all call it, so they can never disagree. The arithmetic tasks grade the extracted answer exactly
(:meth:`Task.grade`); the math task (``jsonl``) grades with the benchmarks' math-verify grader
(grpo_core.grader.MathGrader), in training and evaluation alike.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grpo_core.errors import UserError
from grpo_core.grader import NUMBER_RE, Grade, last_answer_tag, last_boxed
from grpo_core.params import (
    ArithCotParams,
    ClinicParams,
    CodeFnTaskParams,
    GeoAnglesParams,
    GuessNumberTaskParams,
    GuiTaskParams,
    JsonlTaskParams,
    RecRankTaskParams,
    SearchQATaskParams,
    TwGamesTaskParams,
    TwxCoinTaskParams,
    VideoMCParams,
    WirelessMathParams,
)
from grpo_core.registry import Registry

TASKS: Registry = Registry("task")
TEMPLATES: Registry = Registry("prompt template")


@dataclass
class Problem:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    # text appended to the rendered prompt (a hint-giving sampler's; :meth:`Task.hinted`)
    hint: str | None = None
    # text put before the rendered prompt (a prior: Training-Free GRPO's experience library,
    # grpo_core.samplers.ExperienceSampler.prefix)
    prefix: str | None = None


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
# Search-R1 style search agent (task search_qa, env search): the protocol in one line
TEMPLATES.register("search")(
    "Answer the question. Search with <search>query</search> or "
    '<search kb="name">query</search> (kbs: {kbs}); answer with <answer>text</answer>.\n'
    "Question: {question}"
)


# GUI control (task gui_apps, env gui): the instruction; the env shows the screen after it
TEMPLATES.register("gui")("Task: {question}")


# code benchmarks (evals.benchmarks): HumanEval's prompt as it is (signature + docstring, the
# completion continues the body); MBPP's prompt of Austin et al. 2021 as lm-eval writes it
# (the task, its asserts, [BEGIN]; the completion ends at [DONE])
TEMPLATES.register("humaneval")("{question}")
TEMPLATES.register("mbpp")(
    "You are an expert Python programmer, and here is your task: {question} Your code should "
    "pass these tests:\n\n{tests}\n[BEGIN]\n"
)


def render_prompt(template: str, p: Problem) -> str:
    tpl = TEMPLATES.get(template, "task.template")
    fields = {"question": p.question, **p.meta}
    if "{expression}" in tpl and "expression" not in fields:
        raise UserError(
            f"template {template!r} needs an 'expression' field, problem {p.id} has none"
        )
    try:
        text = tpl.format(**fields)
    except KeyError as e:
        raise UserError(
            f"template {template!r} needs a field {e.args[0]!r}, problem {p.id} has none (its "
            f"fields: {sorted(fields)}); use a template of its task"
        ) from None
    text = text + p.hint if p.hint else text
    return p.prefix + text if p.prefix else text


def extract_answer(completion: str) -> str | None:
    """Final answer of a completion: the last \\boxed{...}, else <answer>...</answer>, else the
    last number. None when there is none."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    tag = last_answer_tag(completion)
    if tag is not None:
        return tag
    nums = NUMBER_RE.findall(completion)
    return nums[-1] if nums else None


def normalise_answer(a: str | None) -> str | None:
    """An answer's identity for counting votes: numbers compare by value ("083", "83.0" and
    "83" are one answer), anything else by its stripped text. None stays None (no answer)."""
    if a is None:
        return None
    a = a.strip()
    try:
        x = float(a)
    except ValueError:
        return a
    if math.isfinite(x) and x == int(x):
        return str(int(x))
    return repr(x)


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

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """The task's one grade of whole completions (reward, training accuracy, evaluation):
        here :meth:`grade` of the extracted answer, reason no_answer / match / mismatch."""
        return default_grade_texts(self, texts, problems)

    def close(self) -> None:
        """Release what grading holds (worker processes); the task stays usable."""

    def sft_target(self, problem: Problem) -> str:
        """The completion SFT teaches (the gold answer in the task's answer format)."""
        return problem.answer

    # what separates the prompt from a hint (:meth:`hinted`)
    hint_sep = "\nHint: "

    def hint_parts(self, problem: Problem) -> list[str]:
        """The pieces of a worked solution, in order and without the final answer: the material
        of hint-giving samplers (scaf: the first k pieces; seele: a prefix of their text).
        Here the problem's ``hints`` field (a list of strings, or one string), else none."""
        h = problem.meta.get("hints")
        if isinstance(h, str):
            return [h] if h.strip() else []
        if isinstance(h, list):
            return [str(x) for x in h if str(x).strip()]
        return []

    def hint_text(self, problem: Problem, level: int) -> str:
        """The first ``level`` hint pieces as one text (pieces joined by a space)."""
        return " ".join(self.hint_parts(problem)[:level])

    def hinted(self, problem: Problem, text: str | None) -> Problem:
        """``problem`` with ``text`` appended to its prompt after :attr:`hint_sep` (unchanged
        for no text); its id and answer stay (one group, the same grade)."""
        if not text:
            return problem
        return replace(problem, hint=self.hint_sep + text)

    def perturbed(self, problem: Problem, strength: float, seed: int) -> Problem | None:
        """``problem`` made harder by perturbing its input without changing its answer
        (a difficulty-raising augmentation: sampler ``difficulty_aug``), or None where the task
        has no perturbation that keeps the gold answer right. Here none (text prompts)."""
        return None


def default_grade_texts(task, texts: list[str], problems: list[Problem]) -> list[Grade]:
    """``task.grade(extract_answer(text), problem)`` per completion, as a :class:`Grade`."""
    out = []
    for t, p in zip(texts, problems):
        a = extract_answer(t) if isinstance(t, str) else None
        score = float(task.grade(a, p))
        reason = "no_answer" if a is None else "match" if score >= 1.0 else "mismatch"
        out.append(Grade(score, a, reason))
    return out


def grade_texts(task, texts: list[str], problems: list[Problem]) -> list[Grade]:
    """The one grading call of training and evaluation: ``task.grade_texts`` where the task has
    it (every :class:`Task`), else its ``grade`` on the extracted answers (duck-typed tasks)."""
    fn = getattr(task, "grade_texts", None)
    if fn is not None:
        return fn(list(texts), list(problems))
    return default_grade_texts(task, texts, problems)


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
    # products of two numbers of (mostly) two digits, reasoning-gym's num_digits 2 (beyond a
    # tiny model's head: the env tools' calculator)
    "mul2": (
        "basic_arithmetic",
        dict(
            min_terms=2,
            max_terms=2,
            min_digits=2,
            max_digits=2,
            operators=("*",),
            allow_parentheses=False,
            allow_negation=False,
        ),
    ),
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

    hint_sep = ""  # the hint continues the expression prompt ("45+38=" + "5+8=13;")

    def hint_parts(self, problem: Problem) -> list[str]:
        """A two-term addition of numbers below 100: the scratchpad's steps before the answer
        ('45+38' -> ['5+8=13;', '4+3+1=8;'], :meth:`ArithCoT.scratchpad`); other problems: the
        problem's own ``hints`` (none on the generated levels)."""
        m = re.fullmatch(r"(\d{1,2})\+(\d{1,2})", str(problem.meta.get("expression", "")))
        if m is None:
            return super().hint_parts(problem)
        steps = ArithCoT.scratchpad(problem.meta["expression"]).split(";")[:-1]
        return [s + ";" for s in steps]

    def hint_text(self, problem: Problem, level: int) -> str:
        return "".join(self.hint_parts(problem)[:level])  # steps follow each other directly

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
            raise UserError(
                f"task arith_cot: only add1 / add2 levels have a scratchpad, got {sorted(bad)}"
            )

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

        frac = float(self.params["cot_frac"])  # (range checked by ArithCotParams)
        if zlib.crc32(problem.id.encode()) % 1000 < frac * 1000:
            return self.scratchpad(problem.meta["expression"])
        return problem.answer


def wireless_problem(kind: str, rng) -> tuple[str, str, int]:
    """One seeded wireless-communications formula problem of family ``kind``: (question,
    expression, exact integer answer). Numbers are drawn so that every logarithm is exact:
    linear SNRs 2^k - 1 under log2, powers of ten under log10.

    - capacity: Shannon C = B log2(1 + SNR), B in MHz -> Mbit/s
    - spectral: spectral efficiency log2(1 + SNR) in bit/s/Hz
    - snr_db: SNR = 10 log10(P_s / P_n) in dB
    - path_loss: log-distance PL(d) = PL(1 m) + 10 n log10(d / 1 m) in dB
    - link_budget: P_r = P_t + G_t + G_r - PL in dBm
    - noise_floor: N = -174 dBm/Hz + 10 log10(B) + NF in dBm
    """
    if kind == "capacity":
        b, k = rng.randint(1, 200), rng.randint(1, 8)
        s = 2**k - 1
        q = (
            f"A channel has a bandwidth of {b} MHz and a linear SNR of {s}. What is its Shannon "
            "capacity C = B log2(1 + SNR) in Mbit/s?"
        )
        return q, f"{b}*log2(1+{s})", b * k
    if kind == "spectral":
        k = rng.randint(1, 10)
        s = 2**k - 1
        q = f"What is the spectral efficiency log2(1 + SNR) in bit/s/Hz at a linear SNR of {s}?"
        return q, f"log2(1+{s})", k
    if kind == "snr_db":
        pn, k = rng.choice([1, 2, 5, 10, 20, 50]), rng.randint(0, 6)
        ps = pn * 10**k
        q = (
            f"The signal power is {ps} mW and the noise power is {pn} mW. What is the SNR "
            "10 log10(Ps / Pn) in dB?"
        )
        return q, f"10*log10({ps}/{pn})", 10 * k
    if kind == "path_loss":
        pl0, n, k = rng.randint(30, 60), rng.randint(2, 4), rng.randint(1, 3)
        d = 10**k
        q = (
            f"Log-distance path loss with PL(1 m) = {pl0} dB and path-loss exponent {n}: what "
            f"is PL(d) = PL(1 m) + 10 n log10(d) in dB at d = {d} m?"
        )
        return q, f"{pl0}+10*{n}*log10({d})", pl0 + 10 * n * k
    if kind == "link_budget":
        pt, gt, gr = rng.randint(0, 30), rng.randint(0, 15), rng.randint(0, 15)
        pl = rng.randint(60, 140)
        q = (
            f"A transmitter sends {pt} dBm through antennas of {gt} dBi and {gr} dBi over a path "
            f"loss of {pl} dB. What is the received power Pt + Gt + Gr - PL in dBm?"
        )
        return q, f"{pt}+{gt}+{gr}-{pl}", pt + gt + gr - pl
    if kind == "noise_floor":
        k, nf = rng.randint(3, 9), rng.randint(0, 15)
        b = 10**k
        q = (
            f"With thermal noise of -174 dBm/Hz, a bandwidth of {b} Hz and a noise figure of {nf} "
            "dB, what is the noise floor -174 + 10 log10(B) + NF in dBm?"
        )
        return q, f"-174+10*log10({b})+{nf}", -174 + 10 * k + nf
    raise UserError(f"task wireless_math: unknown formula family {kind!r}")


@TASKS.register("wireless_math", params=WirelessMathParams)
class WirelessMath(Task):
    """Wireless-communications math (WirelessMathLM's domain) generated with the data seed:
    Shannon capacity, spectral efficiency, SNR in dB, log-distance path loss, link budgets and
    noise floors (:func:`wireless_problem`), each with an exact integer answer, graded by exact
    numeric match. ``task.params.kinds``: the formula families drawn (uniformly; default all).
    ``test_split``: ``general`` (default) tests on the general arithmetic task built from the
    same task settings (``arith_mix`` with ``task.difficulty``, its grader and its name in
    evaluation results: the transfer the paper measures), ``wireless`` on held-out wireless
    problems. Meta: ``expression`` (the formula with numbers, for the ``expr`` template),
    ``kind``, ``source: wireless``."""

    name = "wireless_math"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._general: Task | None = None
        # the name evaluation results carry (evals.evaluate): the general task's under "general"
        general = self.params["test_split"] == "general"
        self.eval_name = self.params["general_task"] if general else self.name
        if general:  # a bad name fails when the task is made, not at the first test
            self._general_cls()

    def _general_cls(self) -> type[Task]:
        name = self.params["general_task"]
        if name == self.name:
            raise UserError(
                "task.params.general_task: wireless_math cannot be its own general task; "
                "name the profile's task (arith_mix, jsonl, ...)"
            )
        return TASKS.get(name, "task.params.general_task")

    def _general_task(self) -> Task:
        """The general task (``task.params.general_task``) from the same task settings."""
        if self._general is None:
            name = self.params["general_task"]
            cls = self._general_cls()
            params = TASKS.resolve_params(name, {}, "task.params.general_task")
            self._general = cls(
                self.n_train, self.n_test, self.seed, self.difficulty, self.path, params
            )
        return self._general

    def _split(self) -> None:
        import random as _random

        rng = _random.Random(f"wireless:{self.seed}")
        kinds = list(self.params["kinds"])
        general = self.params["test_split"] == "general"
        n_all = self.n_train + (0 if general else self.n_test)
        rows: list[Problem] = []
        seen: set[str] = set()
        tries = 0
        while len(rows) < n_all and tries < 50 * n_all:
            tries += 1
            kind = kinds[rng.randrange(len(kinds))]
            q, expr, ans = wireless_problem(kind, rng)
            if expr in seen:
                continue
            seen.add(expr)
            meta = {"expression": expr, "kind": kind, "source": "wireless"}
            rows.append(Problem(f"wl-{kind}-{len(rows)}", q, str(ans), meta))
        if len(rows) < n_all:
            raise UserError(
                f"task wireless_math: only {len(rows)} distinct problems of kinds {kinds}, "
                f"task.n_train + n_test asks for {n_all}; use fewer or more kinds"
            )
        self._train = rows[: self.n_train]
        self._test = self._general_task().test() if general else rows[self.n_train :]

    def grade(self, answer: str | None, problem: Problem) -> float:
        if problem.meta.get("source") == "wireless":
            return numeric_match(answer, problem.answer)
        return self._general_task().grade(answer, problem)

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """Wireless problems by exact numeric match; the general task's by its own grading."""
        wl = [i for i, p in enumerate(problems) if p.meta.get("source") == "wireless"]
        other = sorted(set(range(len(texts))) - set(wl))
        out: list[Grade | None] = [None] * len(texts)
        mine = default_grade_texts(self, [texts[i] for i in wl], [problems[i] for i in wl])
        for i, g in zip(wl, mine):
            out[i] = g
        if other:
            theirs = grade_texts(
                self._general_task(), [texts[i] for i in other], [problems[i] for i in other]
            )
            for i, g in zip(other, theirs):
                out[i] = g
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._general is not None:
            self._general.close()


DEFAULT_MAX_LINE_BYTES = 1_000_000


def iter_lines(
    path: Path, max_line_bytes: int, cap_name: str = "max_line_bytes"
) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, problem) for each line of a text file, read as bytes: ``problem`` is
    None for a good line, else why the line is unusable (not UTF-8; longer than
    ``max_line_bytes``: such a line is never held whole, its rest is skipped in 1 MiB chunks).
    A UTF-8 byte-order mark on line 1 is dropped."""
    with path.open("rb") as f:
        ln = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            ln += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                n = len(raw)
                while True:
                    chunk = f.readline(1 << 20)
                    n += len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
                n -= int(bool(chunk) and chunk.endswith(b"\n"))
                yield ln, None, f"line is {n} bytes, over {cap_name}={max_line_bytes}"
                continue
            if ln == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield ln, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                bad = raw[e.start]
                yield ln, None, f"not valid UTF-8 (byte 0x{bad:02x} at byte {e.start + 1})"


def gold_text(v: Any) -> str:
    """A row's gold answer as text: a non-empty string, or a finite number (27.0 -> "27");
    ValueError otherwise (an empty gold would score an empty completion 1.0)."""
    if isinstance(v, bool) or v is None:
        raise ValueError(f"expected a non-empty string or a number, got {v!r}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        if not v.strip():
            raise ValueError(f"empty answer {v!r} (an empty completion would score 1.0)")
        return v.strip()
    raise ValueError(f"expected a non-empty string or a number, got {type(v).__name__}")


def default_grader_workers() -> int:
    """Grader processes of the math task: half the CPUs, 1 to 4."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


@TASKS.register("guess_number", params=GuessNumberTaskParams)
class GuessNumber(Task):
    """Hidden integers in [lo, hi] to guess (the multi-turn env guess_number gives "higher" /
    "lower" hints between turns; grpo_core.episodes). Each problem's question names the range;
    its answer is the number. Problems are drawn with the data seed (task.seed); the last
    ``n_test`` are the test split. SFT teaches the answer itself."""

    def _split(self) -> None:
        import random as _random

        lo, hi = int(self.params["lo"]), int(self.params["hi"])
        rng = _random.Random(self.seed)
        rows = []
        for i in range(self.n_train + self.n_test):
            n = rng.randint(lo, hi)
            rows.append(
                Problem(
                    id=f"guess-{i}",
                    question=f"Guess the number from {lo} to {hi}.",
                    answer=str(n),
                    meta={"lo": lo, "hi": hi},
                )
            )
        self._train, self._test = rows[: self.n_train], rows[self.n_train :]


def item_segments(ids, mask, tokenizer, sep: str):
    """[N, C] index of the list entry each completion token belongs to (0, 1, ...; a separator
    token closes its entry, so it belongs to the entry before it), -1 on the EOS token and past
    the completion. Tokens are decoded one at a time (Rank-GRPO's segmentation by newline
    tokens; a token holding two separators closes two entries)."""
    import torch

    m = mask.bool()
    eos = getattr(tokenizer, "eos_token_id", None)
    seg = torch.full(ids.shape, -1, dtype=torch.long)
    for r in range(ids.shape[0]):
        item = 0
        for t in range(ids.shape[1]):
            if not m[r, t]:
                continue
            tid = int(ids[r, t])
            if tid == eos:
                continue
            seg[r, t] = item
            item += tokenizer.decode([tid]).count(sep)
    return seg


@TASKS.register("rec_rank", params=RecRankTaskParams)
class RecRank(Task):
    """A synthetic recommendation task with ranked-list answers (Rank-GRPO's setting at toy
    scale). The catalog is the first ``n_items`` lowercase letters on a circle; a user likes
    ``n_liked`` random items, shown in the prompt (``question`` "u:<liked>>", e.g. "u:cj>");
    the hidden relevance of an unseen item is 2 at circular distance 1 from a liked item, 1 at
    distance 2, else 0 (liked items: 0, already seen). The completion is a ranked list of ``k``
    items, one per line ("b\nd\nk"); its grade is NDCG@k with gains 2^rel - 1 and discounts
    1 / log2(rank + 2), rank from 0. Users are drawn with the data seed; the last ``n_test`` are
    the test split. SFT teaches an ideal list (relevance descending, ties by letter)."""

    name = "rec_rank"
    sep = "\n"

    def _split(self) -> None:
        import random as _random

        n, m = int(self.params["n_items"]), int(self.params["n_liked"])
        rng = _random.Random(self.seed)
        rows = []
        for i in range(self.n_train + self.n_test):
            liked = sorted(rng.sample(range(n), m))
            rel = {}
            for j in range(n):
                if j in liked:
                    continue
                d = min(min((j - x) % n, (x - j) % n) for x in liked)
                if d <= 2:
                    rel[chr(97 + j)] = 3 - d
            names = "".join(chr(97 + x) for x in liked)
            rows.append(
                Problem(
                    id=f"rec-{i}",
                    question=f"u:{names}>",
                    answer=self.sep.join(self.ideal(rel)),
                    meta={"liked": names, "rel": rel},
                )
            )
        self._train, self._test = rows[: self.n_train], rows[self.n_train :]

    def ideal(self, rel: dict[str, int]) -> list[str]:
        k = int(self.params["k"])
        return sorted(rel, key=lambda c: (-rel[c], c))[:k]

    @staticmethod
    def discount(j: int) -> float:
        return 1.0 / math.log2(j + 2)

    def parse(self, text: str, problem: Problem) -> tuple[list[str], str]:
        """The list's entries (the stripped lines; trailing empty lines dropped, an empty line
        inside the list is an entry, so that entry j is the j-th line as the rank-level
        advantage segments the tokens) and why it is malformed: "ok", "empty_list" (no
        non-empty line), "not_an_item" (an entry that is not one catalog letter),
        "seen_item" (an item the prompt shows as liked), "duplicate_item", "short_list"
        (fewer than k entries), "long_list" (more than k: the rest is ignored)."""
        n, k = int(self.params["n_items"]), int(self.params["k"])
        items = [x.strip() for x in text.split(self.sep)]
        while items and not items[-1]:
            items.pop()
        if not items:
            return [], "empty_list"
        catalog = {chr(97 + j) for j in range(n)}
        reason = "ok"
        seen: set[str] = set()
        for x in items[:k]:
            if x not in catalog:
                reason = "not_an_item"
            elif x in problem.meta["liked"]:
                reason = "seen_item" if reason == "ok" else reason
            elif x in seen:
                reason = "duplicate_item" if reason == "ok" else reason
            seen.add(x)
        if reason == "ok" and len(items) < k:
            reason = "short_list"
        if reason == "ok" and len(items) > k:
            reason = "long_list"
        return items, reason

    def rank_gains(self, text: str, problem: Problem) -> list[float]:
        """[k] gain 2^rel - 1 of the entry at each rank of the list (0 for a missing,
        malformed, seen or repeated entry: a repeat earns nothing the second time)."""
        k = int(self.params["k"])
        items, _ = self.parse(text if isinstance(text, str) else "", problem)
        rel, out, seen = problem.meta["rel"], [], set()
        for j in range(k):
            x = items[j] if j < len(items) else None
            out.append(float(2 ** rel[x] - 1) if x in rel and x not in seen else 0.0)
            seen.add(x)
        return out

    def idcg(self, problem: Problem) -> float:
        rel = problem.meta["rel"]
        return sum((2 ** rel[x] - 1) * self.discount(j) for j, x in enumerate(self.ideal(rel)))

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """NDCG@k of each list, with the reason of :meth:`parse` (a malformed list is scored:
        its valid entries count)."""
        out = []
        for t, p in zip(texts, problems):
            t = t if isinstance(t, str) else ""
            items, reason = self.parse(t, p)
            g = self.rank_gains(t, p)
            dcg = sum(x * self.discount(j) for j, x in enumerate(g))
            score = dcg / self.idcg(p)
            k = int(self.params["k"])
            out.append(Grade(float(score), self.sep.join(items[:k]) or None, reason))
        return out


@TASKS.register("twx_coin", params=TwxCoinTaskParams)
class TwxCoin(Task):
    """TextWorldExpress coin collector games (grpo_core.twx; played by the env ``twx``): find
    the coin in a small house and take it. A problem is one game, (fold, seed, game params):
    train problems from the package's train fold seeds, test problems from its
    ``task.params.test_fold`` seeds (test, or dev), each with a number of locations drawn from
    [locations_min, locations_max]; the (seed, locations) pairs of a fold are shuffled with the
    data seed (task.seed) and the first n_train / n_test taken. ``question``: the task
    description and the first observation; ``answer``: "" (the env grades: success is winning
    the game); ``meta``: fold, seed, game, params (the package's string), locations. Gold
    paths: ``grpo_core.twx.gold_path(problem)`` (the package's, a random walk that wins) and
    ``coin_shortest_path`` (fixed; SFT's)."""

    name = "twx_coin"

    def _split(self) -> None:
        import random as _random

        from grpo_core import twx

        p = TASKS.resolve_params("twx_coin", self.params, "task.params")
        self.params = p
        locs = list(range(p["locations_min"], p["locations_max"] + 1))
        rt = twx.runtime()
        rng = _random.Random(self.seed)
        out = []

        def game_params(k: int) -> str:
            return twx.params_string(
                {
                    "numLocations": k,
                    "includeDoors": p["include_doors"],
                    "numDistractorItems": p["distractor_items"],
                    "limitInventorySize": p["limit_inventory"],
                }
            )

        for fold, n, where in (
            ("train", self.n_train, "task.n_train"),
            (p["test_fold"], self.n_test, "task.n_test"),
        ):
            pairs = [(s, k) for s in rt.seeds("coin", game_params(locs[0]), fold) for k in locs]
            if n > len(pairs):
                raise UserError(
                    f"{where}={n}: the coin game's {fold} fold has {len(pairs)} games with "
                    f"{locs[0]}-{locs[-1]} locations; use at most that many"
                )
            rng.shuffle(pairs)
            rows = []
            for seed, k in pairs[:n]:
                gp = game_params(k)
                spec = twx.GameSpec("coin", gp, fold, int(seed))
                desc, obs, _, _ = twx.first_observation(spec)
                rows.append(
                    Problem(
                        id=f"twx-coin-{fold}-{seed}-L{k}",
                        question=f"{desc.strip()}\n\n{obs.strip()}",
                        answer="",
                        meta={
                            "fold": fold,
                            "seed": int(seed),
                            "game": "coin",
                            "params": gp,
                            "locations": k,
                        },
                    )
                )
            out.append(rows)
        self._train, self._test = out

    def sft_target(self, problem: Problem) -> str:
        """The first action of the game's shortest winning path (grpo_core.twx.
        coin_shortest_path: fixed, unlike the package's random-walk gold path); an episode's
        first turn. Multi-turn SFT would teach the whole path turn by turn."""
        return self.shortest_path(problem)[0]

    def shortest_path(self, problem: Problem) -> list[str]:
        """The game's fixed shortest winning path (grpo_core.twx.coin_shortest_path), cached."""
        from grpo_core import twx

        cache = self.__dict__.setdefault("_shortest", {})
        if problem.id not in cache:
            cache[problem.id] = twx.coin_shortest_path(twx.spec_of(problem.meta))
        return cache[problem.id]

    # the horizon split of eval_metrics: games whose shortest win takes at least this many
    # actions are "long" (on the default test games: 16 of 100 with 3-4 actions, 84 with 1-2)
    LONG_HORIZON = 3

    def eval_metrics(self, samples: list[dict], problems: list[Problem]) -> dict:
        """Success by horizon (GiGPO's claim is about long horizons): success_short /
        success_long over the episodes of games whose shortest winning path is under / at least
        LONG_HORIZON actions, and success_loc<k> per number of locations k; each the share of
        successful episodes (``correct``) of those games, absent when no game falls in it."""
        by_id = {p.id: p for p in problems}
        groups: dict[str, list[bool]] = {}
        for s in samples:
            p = by_id[s["prompt_id"]]
            long = len(self.shortest_path(p)) >= self.LONG_HORIZON
            horizon = "success_long" if long else "success_short"
            for key in (horizon, f"success_loc{p.meta['locations']}"):
                groups.setdefault(key, []).append(bool(s["correct"]))
        return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


@TASKS.register("tw_games", params=TwGamesTaskParams)
class TwGames(Task):
    """TextWorld games (grpo_core.textworld_env; played by the env ``textworld``): a problem is
    one game. Families simple and cooking are generated offline (seeded) and cached under
    ``task.params.games_dir``: train game i has seed i, test game j seed 1,000,000 + j (the
    splits' seed ranges are disjoint; cooking games also take the package's train / test
    ingredient split), so the games do not depend on task.seed and runs share the cache.
    Family alfworld lists ALFWorld's games under ``task.params.alfworld_dir`` (a download,
    declared by its local path). ``question``: the game's objective and first room
    description; ``answer``: "" (the env grades: success is winning); ``meta``: family, split,
    seed, key, path (the game file), max_score, walkthrough (the generator's winning command
    sequence: the gold path SFT teaches), game_id."""

    name = "tw_games"

    def games_root(self) -> Path:
        from grpo_core import textworld_env as tw

        return tw.games_root(self.params["games_dir"])

    def _split(self) -> None:
        from grpo_core import textworld_env as tw

        p = TASKS.resolve_params("tw_games", self.params, "task.params")
        self.params = p
        if p["family"] == "alfworld":
            self._train = self._alfworld(tw.alfworld_games(p["alfworld_dir"], "train"), "train")
            self._test = self._alfworld(
                tw.alfworld_games(p["alfworld_dir"], p["alfworld_test_split"]), "test"
            )
            return
        tw.require_textworld()
        root = self.games_root()
        out = []
        for split, n, seed0 in (("train", self.n_train, 0), ("test", self.n_test, tw.TEST_SEED0)):
            rows = []
            for i in range(n):
                spec = tw.GameSpec(
                    p["family"],
                    p["world_size"],
                    p["nb_objects"],
                    p["quest_length"],
                    split,
                    seed0 + i,
                    cook=p["cook"],
                    cut=p["cut"],
                )
                m = tw.generate(spec, root)
                rows.append(
                    Problem(
                        id=f"tw-{spec.key}-{spec.name}",
                        question=f"{m['objective']}\n\n{m['first']}",
                        answer="",
                        meta={
                            "family": spec.family,
                            "split": split,
                            "seed": spec.seed,
                            "key": spec.key,
                            "path": m["path"],
                            "max_score": m["max_score"],
                            "walkthrough": list(m["walkthrough"]),
                            "game_id": m["game_id"],
                        },
                    )
                )
            out.append(rows)
        self._train, self._test = out

    def _alfworld(self, games: list, split: str) -> list[Problem]:
        from grpo_core import textworld_env as tw

        n = self.n_train if split == "train" else self.n_test
        rows = []
        for path in games[:n]:
            objective, out = tw.first_observation(str(path))
            rows.append(
                Problem(
                    id=f"alfworld-{split}-{path.parent.parent.name}-{path.parent.name}",
                    question=f"{objective}\n\n{out.observation}".strip(),
                    answer="",
                    meta={
                        "family": "alfworld",
                        "split": split,
                        "seed": -1,
                        "key": "alfworld",
                        "path": str(path),
                        "max_score": out.max_score,
                        "walkthrough": [],
                        "game_id": str(path),
                    },
                )
            )
        return rows

    def sft_target(self, problem: Problem) -> str:
        """The first command of the game's walkthrough (an episode's first turn; multi-turn
        SFT teaches the whole walkthrough turn by turn: TextWorldEnv.gold_actions)."""
        walk = problem.meta.get("walkthrough") or []
        if not walk:
            raise UserError(f"task tw_games: problem {problem.id} has no walkthrough")
        return walk[0]


# --------------------------------------------------------------------------------------------
# search_qa: a generated entity corpus with 1-hop and 2-hop questions (env search)

SEARCH_KBS = ("people", "companies", "places")
_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"


def em_normalise(s: str) -> str:
    """Search-R1's answer normalisation (its qa_em ``normalize_answer``): lower case, drop
    punctuation, drop the articles a / an / the, collapse white space."""
    import string

    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str | None, golds: list[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (Search-R1's EM)."""
    if pred is None:
        return 0.0
    p = em_normalise(pred)
    return float(any(p == em_normalise(g) for g in golds))


def last_answer(text: str) -> str | None:
    """The content of the last <answer>...</answer> of a text (None: there is none)."""
    found = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return found[-1].strip() if found else None


@dataclass(frozen=True)
class SearchDoc:
    id: int
    title: str  # the entity's name
    kb: str  # one of SEARCH_KBS
    text: str


@dataclass
class SearchCorpus:
    """The documents (one per entity) and the knowledge bases they are split into."""

    docs: list[SearchDoc]
    key: str  # identity of the generated corpus (seed and sizes): the retriever's cache key

    @property
    def kbs(self) -> tuple[str, ...]:
        return SEARCH_KBS

    def doc_of(self, title: str) -> SearchDoc:
        return next(d for d in self.docs if d.title == title)


@TASKS.register("search_qa", params=SearchQATaskParams)
class SearchQA(Task):
    """A generated closed world for search agents (env search, Search-R1 style): people (born
    in a city, working for a company), companies (located in a city, founded in a year),
    cities (in a country) and countries, each with one short document; the documents are split
    into three knowledge bases (people, companies, places: cities and countries). Names are
    made-up two-syllable words ("bako"), unique, drawn with the data seed (task.seed). Questions:
    1-hop (where was P born, who does P work for, where is C located, when was C founded, which
    country is T in) and 2-hop (where is / when was founded the company P works for, which
    country was P born in), each with its gold answer and ``meta``: hops, kind, ``support`` (the
    entities whose documents hold the chain, in order), ``support_kbs`` (their kbs),
    ``entities`` (the gold entities of the reasoning: the support) and ``kbs``. All questions
    are shuffled with the data seed; the first n_train are train, the next n_test test."""

    name = "search_qa"

    def corpus(self) -> SearchCorpus:
        if getattr(self, "_corpus", None) is None:
            self._build()
        return self._corpus

    def _names(self, rng, n: int, used: set) -> list[str]:
        out = []
        while len(out) < n:
            w = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(2))
            if w not in used:
                used.add(w)
                out.append(w)
        return out

    def _build(self) -> None:
        import random as _random

        p = TASKS.resolve_params("search_qa", self.params, "task.params")
        self.params = p
        rng = _random.Random(f"search_qa:{self.seed}")
        used: set[str] = {"the", "was", "born", "works", "city", "company", "person", "country"}
        countries = self._names(rng, p["countries"], used)
        cities = self._names(rng, p["cities"], used)
        companies = self._names(rng, p["companies"], used)
        people = self._names(rng, p["people"], used)
        city_country = {c: rng.choice(countries) for c in cities}
        co_city = {c: rng.choice(cities) for c in companies}
        co_year = {c: str(rng.randint(1900, 2020)) for c in companies}
        born = {x: rng.choice(cities) for x in people}
        works = {x: rng.choice(companies) for x in people}
        docs: list[SearchDoc] = []

        def add(title: str, kb: str, text: str) -> None:
            docs.append(SearchDoc(len(docs), title, kb, text))

        for x in people:
            add(
                x,
                "people",
                f"{x} is a person. {x} was born in {born[x]}. {x} works for {works[x]}.",
            )
        for c in companies:
            add(
                c,
                "companies",
                f"{c} is a company. {c} is located in {co_city[c]}. {c} was founded in {co_year[c]}.",
            )
        for t in cities:
            add(t, "places", f"{t} is a city. {t} is in {city_country[t]}.")
        for k in countries:
            add(k, "places", f"{k} is a country.")
        key = f"{self.seed}:{p['people']}:{p['companies']}:{p['cities']}:{p['countries']}"
        self._corpus = SearchCorpus(docs, key)
        kb_of = {d.title: d.kb for d in docs}
        qs: list[tuple[str, str, str, list[str]]] = []  # kind, question, answer, support
        for x in people:
            qs.append(("born_in", f"Where was {x} born?", born[x], [x]))
            qs.append(("works_for", f"Who does {x} work for?", works[x], [x]))
        for c in companies:
            qs.append(("located_in", f"Where is {c} located?", co_city[c], [c]))
            qs.append(("founded", f"When was {c} founded?", co_year[c], [c]))
        for t in cities:
            qs.append(("city_country", f"Which country is {t} in?", city_country[t], [t]))
        if p["max_hops"] == 2:
            for x in people:
                w = works[x]
                qs.append(
                    (
                        "works_located",
                        f"Where is the company {x} works for located?",
                        co_city[w],
                        [x, w],
                    )
                )
                qs.append(
                    (
                        "works_founded",
                        f"When was the company {x} works for founded?",
                        co_year[w],
                        [x, w],
                    )
                )
                qs.append(
                    (
                        "born_country",
                        f"Which country was {x} born in?",
                        city_country[born[x]],
                        [x, born[x]],
                    )
                )
        self._questions = [
            Problem(
                id=f"search-{kind}-{sup[0]}",
                question=q,
                answer=a,
                meta={
                    "hops": len(sup),
                    "kind": kind,
                    "support": list(sup),
                    "support_kbs": [kb_of[s] for s in sup],
                    "entities": list(sup),
                    "kbs": ", ".join(SEARCH_KBS),
                },
            )
            for kind, q, a, sup in qs
        ]

    def _split(self) -> None:
        import random as _random

        self.corpus()
        rows = list(self._questions)
        if self.n_train + self.n_test > len(rows):
            raise UserError(
                f"task.n_train + task.n_test = {self.n_train + self.n_test}: task search_qa "
                f"generated {len(rows)} questions with task.params {self.params}; use at most "
                "that many or raise task.params.people / companies / cities"
            )
        _random.Random(self.seed).shuffle(rows)
        self._train = rows[: self.n_train]
        self._test = rows[self.n_train : self.n_train + self.n_test]

    def grade(self, answer: str | None, problem: Problem) -> float:
        return exact_match(answer, [problem.answer])

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """Search-R1's EM of the last <answer>...</answer> (reason no_answer / match /
        mismatch)."""
        out = []
        for t, p in zip(texts, problems):
            a = last_answer(t) if isinstance(t, str) else None
            s = self.grade(a, p)
            out.append(Grade(s, a, "no_answer" if a is None else "match" if s else "mismatch"))
        return out

    def sft_target(self, problem: Problem) -> str:
        """Single-turn SFT (no env): the answer in its tag; env search trains on whole gold
        conversations instead (SearchEnv.gold_actions)."""
        return f"<answer>{problem.answer}</answer>"


# --------------------------------------------------------------------------------------------
# gui_apps: generated app screens with multi-step tasks (env gui; grpo_core.gui)


@TASKS.register("gui_apps", params=GuiTaskParams)
class GuiApps(Task):
    """GUI control tasks on generated apps (grpo_core.gui: settings panels, forms, scrolling
    lists, file managers), played by the env ``gui``. Problem i of a split is task
    ``i % tasks_per_app`` on app ``i // tasks_per_app``, of kind ``kinds[app % len(kinds)]``,
    built from (kind, fold, data seed and app number); train apps from the fold
    ``train_apps`` (``train``, or ``novel``), test apps from the fold ``test`` (labels and
    layouts that neither other fold has: held-out apps are unseen). A task has ``level``
    sub-goals (1..max_level; cycling from 1 over an app's tasks, drawn for one task per app).
    ``question``: the instruction ("turn on Wi-Fi and set Device name to kamo-3"); ``answer``:
    "" (the env checks the final app state); ``meta``: kind, fold, app_seed, app (its id),
    level, goal (the sub-dict of the final state the task wants)."""

    name = "gui_apps"

    def _rows(self, fold: str, n: int, tpa: int) -> list[Problem]:
        import random as _random

        from grpo_core import gui

        p = self.params
        rows = []
        for i in range(n):
            j, t = divmod(i, tpa)
            kind = p["kinds"][j % len(p["kinds"])]
            seed = self.seed * 100_003 + j
            app = gui.build_app(kind, fold, seed)
            rng = _random.Random(f"gui-goal:{fold}:{kind}:{seed}:{t}")
            level = 1 + t % p["max_level"] if tpa > 1 else rng.randint(1, p["max_level"])
            text, goal = gui.make_goal(app, level, rng)
            rows.append(
                Problem(
                    id=f"gui-{fold}-{kind}-{seed}-t{t}",
                    question=text,
                    answer="",
                    meta={
                        "kind": kind,
                        "fold": fold,
                        "app_seed": seed,
                        "app": f"{fold}-{kind}-{seed}",
                        "level": level,
                        "goal": dict(goal),
                    },
                )
            )
        return rows

    def _split(self) -> None:
        self.params = TASKS.resolve_params("gui_apps", self.params, "task.params")
        p = self.params
        self._train = self._rows(p["train_apps"], self.n_train, int(p["tasks_per_app"]))
        self._test = self._rows("test", self.n_test, 1)

    def sft_target(self, problem: Problem) -> str:
        """The first gold action (single-turn SFT; env gui trains on whole gold
        conversations: GuiEnv.gold_actions)."""
        from grpo_core import gui

        m = problem.meta
        return gui.gold_actions(gui.build_app(m["kind"], m["fold"], m["app_seed"]), m["goal"])[0]


@TASKS.register("jsonl", params=JsonlTaskParams)
class JsonlTask(Task):
    """Math problems from a local JSONL file (``task.path``): one object per line with a
    question (``question`` or ``problem``) and an ``answer``; the last ``n_test`` rows are the
    test split. Graded by the benchmarks' math-verify grader (grpo_core.grader.MathGrader: boxed
    answer, numeric fallback, per-sample timeout in killable worker processes) in training and
    evaluation alike. ``task.params``: ``grader_workers`` (default half the CPUs, 1 to 4),
    ``grader_timeout_s`` (default 5). Lines over ``task.max_line_bytes`` raise, as malformed
    rows do."""

    name = "jsonl"
    max_line_bytes = DEFAULT_MAX_LINE_BYTES

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._grader = None
        self._lock = threading.Lock()

    def __getstate__(self):  # worker processes and locks do not travel
        st = dict(self.__dict__)
        st["_grader"], st["_lock"] = None, None
        return st

    def __setstate__(self, st):
        self.__dict__.update(st)
        self._lock = threading.Lock()

    def _math_grader(self):
        if self._grader is None:
            from grpo_core.grader import MathGrader

            self._grader = MathGrader(
                timeout_s=float(self.params.get("grader_timeout_s", 5.0)),
                workers=int(self.params.get("grader_workers") or default_grader_workers()),
            )
        return self._grader

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """MathGrader.grade_many on (completion, gold): the call benchmark evaluation makes."""
        with self._lock:
            return self._math_grader().grade_many([(t, p.answer) for t, p in zip(texts, problems)])

    def grade(self, answer: str | None, problem: Problem) -> float:
        """An already extracted answer (e.g. a majority vote), graded as ``\\boxed{answer}``."""
        if answer is None:
            return 0.0
        return self.grade_texts(["\\boxed{" + answer + "}"], [problem])[0].score

    def close(self) -> None:
        if self._grader is not None:
            self._grader.close()
            self._grader = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _split(self) -> None:
        if not self.path:
            raise UserError("task.path: the jsonl task needs a local file path (task.path=...)")
        path = Path(self.path)
        if not path.exists():
            raise UserError(f"task.path: file {path} does not exist")
        rows = []
        for ln, line, problem in iter_lines(path, self.max_line_bytes, "task.max_line_bytes"):
            if problem is not None:
                raise UserError(f"{path}:{ln}: {problem}")
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
            if not q.strip():
                raise UserError(f"{path}:{ln}: question: empty")
            try:
                gold = gold_text(obj["answer"])
            except ValueError as e:
                raise UserError(f"{path}:{ln}: answer: {e}") from None
            meta = {k: v for k, v in obj.items() if k not in ("question", "problem", "answer")}
            rows.append(Problem(id=str(obj.get("id", ln)), question=q, answer=gold, meta=meta))
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


# --------------------------------------------------------------------------------------------
# synthetic video multiple choice (env video_mc renders the clip; grpo_core.vision)

# level L1 (train and in-distribution test): these colours, backgrounds and speeds; L2: unseen
# colours, backgrounds and faster motion; L3: L2 with the held-out question type
VIDEO_COLOURS = {
    "L1": {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (50, 80, 230),
           "yellow": (230, 220, 40)},
    "L2": {"magenta": (220, 50, 220), "cyan": (40, 220, 220), "orange": (240, 140, 20),
           "white": (245, 245, 245)},
}  # fmt: skip
VIDEO_BACKGROUNDS = {"L1": [(0, 0, 0), (60, 60, 60)], "L2": [(20, 20, 90), (90, 60, 30)]}
VIDEO_SPEEDS = {"L1": (2, 3), "L2": (4, 4)}  # px per frame at 28 px (scaled with the size)
VIDEO_QTYPES = ("count", "direction", "order", "changed")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
LETTERS = "ABCD"
THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)
# a reasoning cue per question type (VideoMC.hint_parts' first piece): where the evidence is,
# without the answer; {target} is the claim's first word (the queried shape's colour)
VIDEO_CUES = {
    "count": "Count the shapes in one frame.",
    "direction": "Compare where the {target} shape is in the first and the last frame.",
    "order": "Find the first frame that shows each shape.",
    "changed": "Compare the colour of each shape in the first and the last frame.",
    "when": "Find the frames in which the {target} shape changes place.",
}


def video_scene(rng, qtype: str, level: str, frames: int, size: int):
    """(scene, question, options [4], answer index, claim) of one clip: the scene for
    grpo_core.vision.render_clip, the claim is the short rationale (it names the answer's
    option text and no other option's)."""
    look = "L1" if level == "L1" else "L2"
    names = list(VIDEO_COLOURS[look])
    bg = list(rng.choice(VIDEO_BACKGROUNDS[look]))
    r = max(2, size // 10)
    lo, hi = VIDEO_SPEEDS[look]
    speed = rng.randint(lo, hi) * size // 28

    def spot(dx=0, dy=0, taken=()):
        travel_x, travel_y = dx * (frames - 1), dy * (frames - 1)
        for _ in range(100):
            x0 = rng.randint(r - min(0, travel_x), size - 1 - r - max(0, travel_x))
            y0 = rng.randint(r - min(0, travel_y), size - 1 - r - max(0, travel_y))
            if all(abs(x0 - a) > 2 * r + 1 or abs(y0 - b) > 2 * r + 1 for a, b in taken):
                return x0, y0
        return x0, y0

    def obj(name, x, y, dx=0, dy=0, **kw):
        shape = rng.choice(["square", "disc"])
        rgb = list(VIDEO_COLOURS[look][name])
        return dict(rgb=rgb, shape=shape, r=r, x=x, y=y, dx=dx, dy=dy, **kw)

    objects, taken = [], []
    if qtype == "count":
        n = rng.randint(1, 4)
        for name in rng.sample(names, n):
            x, y = spot(taken=taken)
            taken.append((x, y))
            objects.append(obj(name, x, y))
        question = "How many shapes are in the video?"
        options, answer, claim = ["1", "2", "3", "4"], n - 1, f"count {n}"
    elif qtype == "direction":
        target, other = rng.sample(names, 2)
        d, d2 = rng.sample(list(DIRECTIONS), 2)
        for name, dd in ((target, d), (other, d2)) if rng.random() < 0.5 else ((target, d),):
            dx, dy = (v * speed for v in DIRECTIONS[dd])
            x, y = spot(dx, dy, taken)
            taken.append((x, y))
            objects.append(obj(name, x, y, dx, dy))
        question = f"Which way does the {target} shape move?"
        options = list(DIRECTIONS)
        rng.shuffle(options)
        answer, claim = options.index(d), f"{target} moves {d}"
    elif qtype == "order":
        present = rng.sample(names, 3)
        absent = [c for c in names if c not in present][0]
        times = sorted(rng.sample(range(frames), 3))
        which = rng.choice(["first", "last"])
        for name, t in zip(present, times):
            x, y = spot(taken=taken)
            taken.append((x, y))
            objects.append(obj(name, x, y, appear=t))
        gold = present[0] if which == "first" else present[-1]
        question = f"Which shape appears {which}?"
        options = [*present, absent]
        rng.shuffle(options)
        answer, claim = options.index(gold), f"{gold} appears {which}"
    elif qtype == "changed":
        present = rng.sample(names, 3)
        absent = [c for c in names if c not in present][0]
        gold = rng.choice(present)
        new = VIDEO_COLOURS[look][absent]
        for name in present:
            x, y = spot(taken=taken)
            taken.append((x, y))
            kw = {"change_at": frames // 2, "change_rgb": list(new)} if name == gold else {}
            objects.append(obj(name, x, y, **kw))
        question = "Which shape changes colour?"
        options = [*present, absent]
        rng.shuffle(options)
        answer, claim = options.index(gold), f"{gold} changes"
    else:
        raise UserError(f"task video_mc: unknown question type {qtype!r}")
    scene = {"size": size, "frames": frames, "bg": bg, "objects": objects}
    return scene, question, options, answer, claim


def grounding_scene(rng, frames: int, size: int):
    """(scene, question, gold [s, e], claim) of one temporal grounding clip (level L1 looks):
    the target shape is still, moves one step a frame from frame s to frame e (s < e), then
    stays; with probability 1/2 a second shape of another colour moves over another window.
    The gold answer is "s-e", the claim "red moves s-e" (the rationale SFT would teach)."""
    names = list(VIDEO_COLOURS["L1"])
    bg = list(rng.choice(VIDEO_BACKGROUNDS["L1"]))
    r = max(2, size // 10)
    lo, hi = VIDEO_SPEEDS["L1"]
    windows = [(a, b) for a in range(frames) for b in range(a + 1, frames)]
    target, other = rng.sample(names, 2)
    gold = rng.choice(windows)
    objects, taken = [], []
    movers = [(target, gold)]
    if rng.random() < 0.5 and len(windows) > 1:
        movers.append((other, rng.choice([w for w in windows if w != gold])))
    for name, (a, b) in movers:
        speed = rng.randint(lo, hi) * size // 28
        dx, dy = (v * speed for v in DIRECTIONS[rng.choice(list(DIRECTIONS))])
        steps = b - a
        for _ in range(100):
            x0 = rng.randint(r - min(0, dx * steps), size - 1 - r - max(0, dx * steps))
            y0 = rng.randint(r - min(0, dy * steps), size - 1 - r - max(0, dy * steps))
            if all(abs(x0 - u) > 2 * r + 1 or abs(y0 - v) > 2 * r + 1 for u, v in taken):
                break
        taken.append((x0, y0))
        objects.append(
            dict(rgb=list(VIDEO_COLOURS["L1"][name]), shape=rng.choice(["square", "disc"]),
                 r=r, x=x0, y=y0, dx=dx, dy=dy, move=[a, b])
        )  # fmt: skip
    question = f"When does the {target} shape move? Frames 0-{frames - 1}, first to last."
    scene = {"size": size, "frames": frames, "bg": bg, "objects": objects}
    return scene, question, list(gold), f"{target} moves {gold[0]}-{gold[1]}"


INTERVAL_RE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def interval_iou(answer: str | None, gold: str) -> tuple[float, str]:
    """(score, reason) of a temporal grounding answer ("s-e" frame indices, inclusive)
    against the gold "s-e": the IoU of the two frame sets,
    |pred & gold| / |pred | gold| with |[a, b]| = b - a + 1. Malformed answers:

    - no answer (no <answer> tag): 0, ``no_answer``;
    - anything but "a-b" or one index "a" (a letter, words, three numbers, a negative or a
      decimal): 0, ``malformed``;
    - one index "a": the one-frame interval [a, a] (a short form of an interval, so partial
      IoU, at most 1 / |gold|);
    - reversed bounds "b-a" with b > a: 0, ``malformed`` (not an interval; crediting the
      swapped one would reward a format the gold never uses);
    - indices past the clip's last frame are not clipped: those frames count in the union (the
      answer claims motion in frames the clip does not have).
    ``match`` when the IoU is 1, else ``mismatch``."""
    if answer is None:
        return 0.0, "no_answer"
    m = INTERVAL_RE.fullmatch(answer)
    if m is None:
        return 0.0, "malformed"
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        return 0.0, "malformed"
    s, e = (int(x) for x in gold.split("-"))
    inter = max(0, min(b, e) - max(a, s) + 1)
    iou = inter / ((b - a + 1) + (e - s + 1) - inter)
    return iou, "match" if iou >= 1.0 else "mismatch"


# TW-GRPO's negations of video_mc's four question types (its convert_star.py negates the
# question's verb: "what did" -> "what didn't"); the scene and its claim are unchanged
INVERTED_QUESTIONS = (
    (re.compile(r"^How many shapes are in the video\?$"),
     "Which of these is not the number of shapes in the video?"),
    (re.compile(r"^Which way does the (\w+) shape move\?$"),
     r"Which way does the \1 shape not move?"),
    (re.compile(r"^Which shape appears (first|last)\?$"), r"Which shape does not appear \1?"),
    (re.compile(r"^Which shape changes colour\?$"), "Which shape does not change colour?"),
)  # fmt: skip


def invert_question(question: str) -> str:
    """The negated question of a video_mc question (:data:`INVERTED_QUESTIONS`)."""
    for pat, repl in INVERTED_QUESTIONS:
        if pat.match(question):
            return pat.sub(repl, question)
    raise UserError(f"task video_mc: no inversion for the question {question!r}")


def invert_mc(question: str, options: list[str], answer: int, rng) -> tuple[str, list[str], str]:
    """TW-GRPO's question-answer inversion of one single-answer item (its convert_star.py
    ``negate_answer``, read, not copied): the question negated; the options are the original
    answer's and k of the others (k uniform in 1..n-1, the "random drop" that keeps the count
    of gold answers from being a giveaway), shuffled; the gold answer is every kept option but
    the original answer's, as letters in option order joined by "," ("A,C").
    Returns (question, options, gold)."""
    wrong = [o for i, o in enumerate(options) if i != answer]
    kept = rng.sample(wrong, rng.randint(1, len(wrong)))
    new = [options[answer], *kept]
    rng.shuffle(new)
    gold = ",".join(LETTERS[i] for i, o in enumerate(new) if o != options[answer])
    return invert_question(question), new, gold


def object_box(o: dict, f: int, size: int) -> list[int]:
    """[x0, y0, x1, y1] (x1, y1 exclusive, clipped to the frame) of a scene object's pixels at
    frame ``f`` (0-based; grpo_core.vision.render_clip draws |x - cx| <= r, |y - cy| <= r)."""
    cx, cy, r = o["x"] + o["dx"] * f, o["y"] + o["dy"] * f, o["r"]
    return [max(0, cx - r), max(0, cy - r), min(size, cx + r + 1), min(size, cy + r + 1)]


def mc_evidence(problem: Problem) -> tuple[list[int], dict[int, list[list[int]]]]:
    """The visual evidence of a video_mc question (Video-CoM's ``valid_frames`` and
    ``valid_bounding_box`` annotations, made by rule from the scene): (the frames, 1-based,
    that show it; per such frame the boxes of the queried objects). The queried objects: every
    shape for count, the named shape for direction, the shape that appears first / last for
    order, the shape that changes for changed. The frames: those where a queried object is
    drawn (from its ``appear`` frame on), for changed only those from its change on (where the
    new colour shows)."""
    m = problem.meta
    scene = m["scene"]
    size, t = int(scene["size"]), int(scene["frames"])
    names = {tuple(rgb): n for pal in VIDEO_COLOURS.values() for n, rgb in pal.items()}
    qtype = m["qtype"]
    if qtype == "count":
        objs = list(scene["objects"])
    else:  # the claim starts with the shape's colour ("red moves left", "red changes")
        name = m["claim"].split()[0]
        objs = [o for o in scene["objects"] if names.get(tuple(o["rgb"])) == name]
    frames: list[int] = []
    boxes: dict[int, list[list[int]]] = {}
    for f in range(t):
        first = [o.get("change_at", 0) if qtype == "changed" else o.get("appear", 0) for o in objs]
        shown = [o for o, a in zip(objs, first) if f >= a]
        if shown:
            frames.append(f + 1)
            boxes[f + 1] = [object_box(o, f, size) for o in shown]
    return frames, boxes


def box_iou(a: list[int], b: list[int]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes (0 when either is empty)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def com_reasoning_score(trace: list[list]) -> tuple[float, int, int]:
    """Video-CoM's reasoning score of one episode's manipulations (mbzuai-oryx/Video-CoM
    src/train/reward_funcs.py ``reasoning_reward``, read, not copied): (correct / scored,
    correct, scored), 0 when nothing was scored. ``trace``: per step [kind, arg, correct,
    error] (env video_com); a frame counts once however often it is selected (their set of
    predicted frames), each crop counts where its frame has annotated boxes (``correct`` not
    None), bad actions and answers count nothing."""
    frames: dict[str, bool] = {}
    crops = []
    for kind, arg, correct, _err in trace:
        if kind == "frame" and correct is not None:
            frames.setdefault(str(arg), bool(correct))
        elif kind == "crop" and correct is not None:
            crops.append(bool(correct))
    scored = len(frames) + len(crops)
    good = sum(frames.values()) + sum(crops)
    return (good / scored if scored else 0.0), good, scored


def mc_parts(text: str) -> tuple[str | None, str | None]:
    """(rationale inside <think>...</think>, letter inside <answer>...</answer>) of a
    completion (None where absent)."""
    th = THINK_RE.search(text)
    ans = last_answer_tag(text)
    return (th.group(1).strip() if th else None), (ans.strip().upper() if ans else None)


def mc_consistent(text: str, problem: Problem) -> bool:
    """The rationale names the option the answer chose and no other option (whole words,
    ignoring case): "<think>red moves left</think><answer>B</answer>" is consistent when
    option B is "left"."""
    think, letter = mc_parts(text)
    opts = problem.meta["options"]
    if think is None or letter is None or letter not in LETTERS[: len(opts)]:
        return False
    named = [i for i, o in enumerate(opts) if re.search(rf"\b{re.escape(o)}\b", think, re.I)]
    return named == [LETTERS.index(letter)]


@TASKS.register("video_mc", params=VideoMCParams)
class VideoMC(Task):
    """Synthetic video multiple choice after SEED-Bench-R1's three levels: clips of moving
    coloured shapes (``meta["scene"]``, rendered by the env video_mc), 4-option questions of
    four types (count, direction of motion, order of appearance, which shape changed colour).
    Train: level L1 (colours / backgrounds / speeds of L1, every type but ``held_out``). Test:
    a third each of L1 (in distribution), L2 (unseen colours, backgrounds, faster motion) and
    L3 (L2 looks with the held-out type). Answers are letters; SFT teaches
    "<think>claim</think><answer>X</answer>", the claim naming the answer's option
    (:func:`mc_consistent` checks that by rule).

    ``grounding: p`` (default 0): after the split is drawn, each train row is replaced with
    probability p by a temporal grounding question (``qtype`` "when", :func:`grounding_scene`;
    answer "s-e", graded by :func:`interval_iou`), both drawn from a stream of their own
    (``random.Random(f"video_mc-grounding-{seed}")``): every other row, and the whole test
    split, is the item of ``grounding: 0``."""

    def _split(self) -> None:
        import random as _random

        p = self.params
        if p["size"] % 14:
            raise UserError(f"task.params.size={p['size']}: must be a multiple of 14")
        rng = _random.Random(self.seed)
        held = p["held_out"]
        seen = [q for q in VIDEO_QTYPES if q != held]
        rows = []
        # TW-GRPO's inversion draws from its own stream (none at all when it is off)
        inv = p.get("qa_inversion", 0.0)
        irng = _random.Random(f"{self.seed}:qa_inversion") if inv > 0 else None
        for i in range(self.n_train + self.n_test):
            train = i < self.n_train
            level = "L1" if train else ("L1", "L2", "L3")[(i - self.n_train) % 3]
            qtype = held if level == "L3" else rng.choice(seen)
            scene, q, opts, ans, claim = video_scene(rng, qtype, level, p["frames"], p["size"])
            gold, fmt, extra = LETTERS[ans], "letter", {}
            if train and irng is not None and irng.random() < inv:
                q, opts, gold = invert_mc(q, opts, ans, irng)
                fmt, extra = "letters, comma-separated", {"inverted": True}
            text = (
                q
                + "".join(f"\n{LETTERS[k]}. {o}" for k, o in enumerate(opts))
                + f"\nAnswer: <think>reason</think><answer>{fmt}</answer>"
            )
            rows.append(
                Problem(
                    id=f"video-{level}-{i}",
                    question=text,
                    answer=gold,
                    meta={
                        "scene": scene,
                        "level": level,
                        "qtype": qtype,
                        "options": opts,
                        "claim": claim,
                        **extra,
                    },
                )
            )
        share = float(p.get("grounding", 0.0))  # (a params dict built by hand may omit it)
        if share > 0:
            g_rng = _random.Random(f"video_mc-grounding-{self.seed}")
            for i in range(self.n_train):
                if g_rng.random() >= share:
                    continue
                scene, q, gold, claim = grounding_scene(g_rng, p["frames"], p["size"])
                rows[i] = Problem(
                    id=f"video-when-{i}",
                    question=q + "\nAnswer: <think>reason</think><answer>start-end</answer>",
                    answer=f"{gold[0]}-{gold[1]}",
                    meta={"scene": scene, "level": "L1", "qtype": "when", "options": [],
                          "claim": claim},
                )  # fmt: skip
        self._train, self._test = rows[: self.n_train], rows[self.n_train :]

    def grade(self, answer: str | None, problem: Problem) -> float:
        if problem.meta.get("qtype") == "when":
            return interval_iou(answer, problem.answer)[0]
        return float(answer is not None and answer.strip().upper() == problem.answer)

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        """Multiple choice: the default (the letter of the last answer tag, exact match).
        Temporal grounding ("when"): the IoU of the answer tag's interval
        (:func:`interval_iou`; no tag: no answer, where the default would take a bare number)."""
        out = default_grade_texts(self, texts, problems)
        for i, (t, p) in enumerate(zip(texts, problems)):
            if p.meta.get("qtype") == "when":
                a = last_answer_tag(t) if isinstance(t, str) else None
                a = a.strip() if a is not None else None
                score, reason = interval_iou(a, p.answer)
                out[i] = Grade(score, a, reason)
        return out

    def sft_target(self, problem: Problem) -> str:
        return f"<think>{problem.meta['claim']}</think><answer>{problem.answer}</answer>"

    def hint_parts(self, problem: Problem) -> list[str]:
        """Two pieces of the clip's rationale: what to look at (:data:`VIDEO_CUES`, naming
        the queried shape, not the answer), then the gold claim ("red moves left", the
        rationale SFT teaches; it names the answer's option). Rows of another kind: the
        problem's own ``hints``."""
        cue = VIDEO_CUES.get(str(problem.meta.get("qtype")))
        claim = str(problem.meta.get("claim", ""))
        if cue is None or not claim:
            return super().hint_parts(problem)
        return [cue.format(target=claim.split()[0]), claim + "."]

    def perturbed(self, problem: Problem, strength: float, seed: int) -> Problem | None:
        """The clip with Gaussian pixel noise of std ``strength`` (a share of the 0-255 range)
        from the generator ``seed`` (``meta["perturb"]``, applied when the env renders it:
        grpo_core.vision.perturb_clip); question, options and answer unchanged."""
        if "scene" not in problem.meta and "video" not in problem.meta:
            return None
        meta = {**problem.meta, "perturb": {"noise": float(strength), "seed": int(seed)}}
        return replace(problem, meta=meta)

    def eval_metrics(self, samples: list[dict], problems: list[Problem]) -> dict:
        """Per-level accuracy (acc_L1 / acc_L2 / acc_L3: the share of correct samples), the
        share of samples whose rationale is consistent with their answer (consistency) and
        the share both correct and consistent (correct_consistent)."""
        by_id = {p.id: p for p in problems}
        out: dict[str, float] = {}
        for lv in ("L1", "L2", "L3"):
            rows = [s for s in samples if by_id[s["prompt_id"]].meta["level"] == lv]
            if rows:
                out[f"acc_{lv}"] = sum(bool(s["correct"]) for s in rows) / len(rows)
        cons = [mc_consistent(s["completion"], by_id[s["prompt_id"]]) for s in samples]
        out["consistency"] = sum(cons) / max(len(cons), 1)
        out["correct_consistent"] = sum(
            c and bool(s["correct"]) for c, s in zip(cons, samples)
        ) / max(len(samples), 1)
        return out


# --------------------------------------------------------------------------------------------
# code: generated small Python functions with unit tests (task code_fn)


# (level, key, argument kinds, description, reference body) per template; {k} is a digit 2-9,
# {c} a letter a-e. Arguments: x / y integers, xs a list of integers, s a string. The levels
# grade the difficulty: L1 one operator, L2 a builtin or a constant bound, L3 a comprehension,
# a method or a slice.
CODE_TEMPLATES: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("L1", "add_k", ("x",), "Return x plus {k}.", "return x + {k}"),
    ("L1", "sub_k", ("x",), "Return x minus {k}.", "return x - {k}"),
    ("L1", "mul_k", ("x",), "Return x times {k}.", "return x * {k}"),
    ("L1", "add_xy", ("x", "y"), "Return the sum of x and y.", "return x + y"),
    ("L1", "mul_xy", ("x", "y"), "Return the product of x and y.", "return x * y"),
    ("L2", "max_xy", ("x", "y"), "Return the larger of x and y.", "return max(x, y)"),
    ("L2", "min_xy", ("x", "y"), "Return the smaller of x and y.", "return min(x, y)"),
    ("L2", "sum_xs", ("xs",), "Return the sum of xs.", "return sum(xs)"),
    ("L2", "len_s", ("s",), "Return the length of s.", "return len(s)"),
    ("L2", "rep_s", ("s",), "Return s repeated {k} times.", "return s * {k}"),
    ("L2", "cap_k", ("x",), "Return x, but at most {k}.", "return min(x, {k})"),
    (
        "L3",
        "count_gt",
        ("xs",),
        "Return how many numbers in xs are greater than {k}.",
        "return len([v for v in xs if v > {k}])",
    ),
    (
        "L3",
        "sum_div",
        ("xs",),
        "Return the sum of the numbers in xs divisible by {k}.",
        "return sum([v for v in xs if v % {k} == 0])",
    ),
    ("L3", "count_c", ("s",), "Return how many times '{c}' occurs in s.", "return s.count('{c}')"),
    ("L3", "rev_s", ("s",), "Return s reversed.", "return s[::-1]"),
    ("L3", "abs_xy", ("x", "y"), "Return the absolute difference of x and y.", "return abs(x - y)"),
)
CODE_LEVELS = ("L1", "L2", "L3")
CODE_NAMES = ("f", "g", "h", "calc", "solve")


def code_arg_value(kind: str, rng) -> Any:
    """A random test input of an argument kind (x / y: -9..20, xs: 0-5 numbers 0..20, s: 0-6
    letters a-e)."""
    if kind in ("x", "y"):
        return rng.randint(-9, 20)
    if kind == "xs":
        return [rng.randint(0, 20) for _ in range(rng.randint(0, 5))]
    return "".join(rng.choice("abcde") for _ in range(rng.randint(0, 6)))


def code_source(name: str, args: tuple[str, ...], body: str) -> str:
    """The reference solution: ``def name(args):`` and its one-line body."""
    return f"def {name}({', '.join(args)}):\n    {body}"


@TASKS.register("code_fn", params=CodeFnTaskParams)
class CodeFn(Task):
    """Procedurally generated small Python functions (a reproduction's code task at toy scale).

    A problem is one of :data:`CODE_TEMPLATES` with a function name from :data:`CODE_NAMES`
    and its constants ({k} a digit 2-9, {c} a letter a-e) drawn with the data seed; the prompt
    is a docstring naming the signature and saying what to return
    (``\"\"\"calc(x, y): Return the sum of x and y.\"\"\"``); the completion writes the whole
    function (``def calc(x, y):\\n    return x + y``, the reference solution and SFT target).
    ``meta``: entry (the name), args, level, template, constants (the prompt's {k} / {c} as
    they appear in code), tests (``n_tests`` asserts on random inputs with the reference's
    outputs, distinct inputs where the template allows). ``difficulty`` weights the levels
    (default L1, L2, L3 equally); problems are distinct (template, name, constants), the last
    ``n_test`` of a seeded shuffle, stratified by level, are the test split.

    Grading (:meth:`grade_texts`): the completion and its tests run in grpo_core.sandbox via
    grpo_core.codeexec.run_programs (one sandbox call per ``chunk`` completions); the score is
    1 when every test passes (``score: all``) or the fraction passed (``score: fraction``), the
    reason codeexec's (pass, wrong_output, syntax_error, timeout, no_function, runtime_error,
    memory, denied, crashed)."""

    name = "code_fn"

    def _split(self) -> None:
        import random as _random

        weights = self.difficulty or {lv: 1 for lv in CODE_LEVELS}
        unknown = set(weights) - set(CODE_LEVELS)
        if unknown:
            raise UserError(
                f"task.difficulty: unknown code_fn level(s) {sorted(unknown)}; valid: "
                f"{list(CODE_LEVELS)}"
            )
        n_tests = int(self.params["n_tests"])
        rng = _random.Random(self.seed)
        # every distinct problem of the chosen levels, then a seeded shuffle
        cands = []
        for level, key, args, desc, body in CODE_TEMPLATES:
            if not weights.get(level):
                continue
            ks = range(2, 10) if "{k}" in desc else [None]
            cs = "abcde" if "{c}" in desc else [None]
            for name in CODE_NAMES:
                for k in ks:
                    for c in cs:
                        cands.append((level, key, args, desc, body, name, k, c))
        rng.shuffle(cands)
        by_level: dict[str, list] = {}
        for cand in cands:
            by_level.setdefault(cand[0], []).append(cand)
        levels = sorted(by_level)

        def quotas(n: int) -> dict[str, int]:  # n split by the weights, largest remainders
            total = sum(weights[lv] for lv in levels)
            exact = {lv: n * weights[lv] / total for lv in levels}
            q = {lv: int(exact[lv]) for lv in levels}
            for lv in sorted(levels, key=lambda lv: -(exact[lv] - q[lv]))[: n - sum(q.values())]:
                q[lv] += 1
            return q

        # test: at most half of a level's distinct problems; train: the rest, drawn with
        # repeats when a level has fewer distinct problems than asked (a repeat gets new test
        # inputs: a new row, the same function)
        train, test = [], []
        tq, rq = quotas(self.n_test), quotas(self.n_train)
        for lv in levels:
            rows = by_level[lv]
            t = min(tq[lv], len(rows) // 2)
            test += rows[:t]
            pool = rows[t:]
            train += [pool[i % len(pool)] for i in range(rq[lv])]
        rng.shuffle(train)
        self._train = [self._problem(c, f"code-{i}", rng, n_tests) for i, c in enumerate(train)]
        self._test = [self._problem(c, f"code-test-{i}", rng, n_tests) for i, c in enumerate(test)]

    def _problem(self, cand, pid: str, rng, n_tests: int) -> Problem:
        level, key, args, desc, body, name, k, c = cand
        fill = {"k": k, "c": c}
        desc_t, body_t = desc.format(**fill), body.format(**fill)
        ns: dict = {}
        exec(code_source("ref", args, body_t), ns)  # our own template, never model output
        # distinct inputs; when the first n_tests all give one output (min(x, 9) on 12, 19, 20),
        # the last is swapped for an input with another output, so no constant passes them all
        cases, seen = [], set()
        for _ in range(n_tests * 20):
            vals = tuple(code_arg_value(a, rng) for a in args)
            if repr(vals) not in seen:
                seen.add(repr(vals))
                cases.append((vals, ns["ref"](*vals)))
        chosen = cases[:n_tests]
        if n_tests > 1 and len({repr(o) for _, o in chosen}) == 1:
            other = next((c for c in cases[n_tests:] if repr(c[1]) != repr(chosen[0][1])), None)
            if other is not None:
                chosen[-1] = other
        tests = [
            f"assert {name}({', '.join(repr(v) for v in vals)}) == {out!r}" for vals, out in chosen
        ]
        consts = [str(k)] if k is not None else []
        consts += [repr(c)] if c is not None else []
        return Problem(
            id=pid,
            question=f'"""{name}({", ".join(args)}): {desc_t}"""',
            answer=code_source(name, args, body_t),
            meta={
                "entry": name,
                "args": list(args),
                "level": level,
                "template": key,
                "constants": consts,
                "tests": tests,
            },
        )

    def programs(self, texts: list[str], problems: list[Problem]):
        from grpo_core.codeexec import Program

        return [
            Program(t if isinstance(t, str) else "", tuple(p.meta["tests"]), p.meta["entry"])
            for t, p in zip(texts, problems)
        ]

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        from grpo_core.codeexec import ExecLimits, run_programs

        lim = ExecLimits(
            t_src=float(self.params["t_test"]),
            t_test=float(self.params["t_test"]),
            t_prog=float(self.params["t_prog"]),
        )
        outs = run_programs(self.programs(texts, problems), lim, int(self.params["chunk"]))
        mode = self.params["score"]
        return [Grade(o.score(mode), f"{o.passed}/{o.total}", o.reason) for o in outs]

    def grade(self, answer: str | None, problem: Problem) -> float:
        return self.grade_texts([answer or ""], [problem])[0].score

    def sft_target(self, problem: Problem) -> str:
        return problem.answer

    def eval_metrics(self, samples: list[dict], problems: list[Problem]) -> dict:
        """Per-level accuracy (acc_L1 / acc_L2 / acc_L3), the mean rule-based process score
        of the samples (process_mean, grpo_core.codeexec.process_score), the reward-hacking
        rate (hack_rate: the share of samples with a perfect process score that fail a test)
        and the share of each failure reason (frac_<reason>, e.g. frac_syntax_error)."""
        from grpo_core.codeexec import REASONS, process_score

        by_id = {p.id: p for p in problems}
        out: dict[str, float] = {}
        n = max(len(samples), 1)
        for lv in CODE_LEVELS:
            rows = [s for s in samples if by_id[s["prompt_id"]].meta["level"] == lv]
            if rows:
                out[f"acc_{lv}"] = sum(bool(s["correct"]) for s in rows) / len(rows)
        rt = []
        for s in samples:
            m = by_id[s["prompt_id"]].meta
            rt.append(process_score(s["completion"], m["entry"], m["args"], m["constants"]))
        out["process_mean"] = sum(rt) / n
        out["hack_rate"] = sum(r >= 1.0 and not s["correct"] for r, s in zip(rt, samples)) / n
        for reason in REASONS[1:]:
            out[f"frac_{reason}"] = sum(s.get("grade_reason") == reason for s in samples) / n
        return out


# --------------------------------------------------------------------------------------------
# geometry with an auxiliary construction (GeometryZero's GCPO; profile tiny_geo)

GEO_TOTAL = {"tri": 180, "quad": 360}
GEO_NAME = {"tri": "tri", "quad": "quad"}


def has_aux(text: str, open_tag: str = "<aux>", close_tag: str = "</aux>") -> bool:
    """Whether a completion constructs an auxiliary quantity: a non-empty ``open_tag`` ...
    ``close_tag`` span (GeometryZero triggers auxiliary construction with such tokens)."""
    i = text.find(open_tag)
    if i < 0:
        return False
    j = text.find(close_tag, i + len(open_tag))
    return j > i + len(open_tag) and bool(text[i + len(open_tag) : j].strip())


@TASKS.register("geo_angles", params=GeoAnglesParams)
class GeoAngles(Task):
    """The missing interior angle of a polygon (reasoning-gym ``simple_geometry``, integer
    answers), levels ``tri`` (a triangle's two known angles) and ``quad`` (a quadrilateral's
    three), asked compactly: "tri: 36, 85" (the polygon, then its known angles). A completion may first construct the
    auxiliary quantity, the sum of the known angles, in a tag, then the answer:
    "<aux>36+85=121</aux>180-121=59"; or answer at once: "59". The grade is reasoning-gym's
    exact answer against the last number (either way). SFT targets take the auxiliary form for
    ``aux_frac`` of the problems (fixed by the problem id)."""

    name = "geo_angles"

    def _split(self) -> None:
        import random as _random

        import reasoning_gym as rg

        levels = {k: float(v) for k, v in self.params["levels"].items() if v > 0}
        total = sum(levels.values())
        n_all = self.n_train + self.n_test
        rows: list[Problem] = []
        seen: set[tuple] = set()
        for li, (level, w) in enumerate(sorted(levels.items())):
            sides = 3 if level == "tri" else 4
            n = max(1, round(n_all * w / total))
            ds = rg.create_dataset(
                "simple_geometry",
                size=3 * n,
                seed=self.seed + 7919 * li,
                min_sides=sides,
                max_sides=sides,
                min_angle=int(self.params["min_angle"]),
                max_angle=int(self.params["max_angle"]),
            )
            got = 0
            for e in ds:
                known = [int(round(a)) for a in e["metadata"]["known_angles"]]
                if got >= n or tuple(known) in seen:
                    continue
                seen.add(tuple(known))
                got += 1
                q = f"{GEO_NAME[level]}: " + ", ".join(map(str, known))
                meta = {"level": level, "known": known, "total": GEO_TOTAL[level]}
                rows.append(Problem(f"geo-{level}-{len(rows)}", q, str(e["answer"]), meta))
        rng = _random.Random(f"geo:{self.seed}")
        rng.shuffle(rows)
        if len(rows) < n_all:
            raise UserError(
                f"task geo_angles: only {len(rows)} distinct problems for task.n_train + n_test "
                f"= {n_all}; widen task.params min_angle / max_angle or ask for fewer"
            )
        self._test = sorted(rows[: self.n_test], key=lambda p: p.id)
        self._train = rows[self.n_test : n_all]

    def aux_target(self, problem: Problem) -> str:
        """'<aux>36+85=121</aux>180-121=59': the sum of the known angles, then the answer."""
        known, total = problem.meta["known"], int(problem.meta["total"])
        s = sum(known)
        return f"<aux>{'+'.join(map(str, known))}={s}</aux>{total}-{s}={total - s}"

    def sft_target(self, problem: Problem) -> str:
        import zlib

        if zlib.crc32(problem.id.encode()) % 1000 < float(self.params["aux_frac"]) * 1000:
            return self.aux_target(problem)
        return problem.answer

    def eval_metrics(self, samples: list[dict], problems: list[Problem]) -> dict:
        """Per-level accuracy (acc_tri / acc_quad), the share of samples that construct
        (aux_rate) and the accuracy of those that do / do not (acc_aux / acc_plain)."""
        by_id = {p.id: p for p in problems}
        out: dict[str, float] = {}
        for lv in ("tri", "quad"):
            rows = [s for s in samples if by_id[s["prompt_id"]].meta["level"] == lv]
            if rows:
                out[f"acc_{lv}"] = sum(bool(s["correct"]) for s in rows) / len(rows)
        aux = [s for s in samples if has_aux(s["completion"])]
        plain = [s for s in samples if not has_aux(s["completion"])]
        out["aux_rate"] = len(aux) / max(len(samples), 1)
        for name, rows in (("acc_aux", aux), ("acc_plain", plain)):
            if rows:
                out[name] = sum(bool(s["correct"]) for s in rows) / len(rows)
        return out


# --------------------------------------------------------------------------------------------
# synthetic clinical records, several classification tasks with a rationale (OncoReason;
# profile tiny_clinic)

WHY_RE = re.compile(r"^<why>(.*?)</why>(.*)$", re.S)
# positive nodes drawn from this list (0: 40%, 1-3: 45%, 4-9: 15%), so no label dominates
CLINIC_NODES = [0] * 8 + [1, 2, 3] * 3 + [4, 6, 9]


def clinic_labels(age: int, size: int, nodes: int, grade: int) -> dict[str, tuple[str, str]]:
    """(rationale, label) of each record task, by fixed rules:

    - stage: T1 size <= 2 cm, T2 3-5, T3 >= 6; N0 no nodes, N1 1-3, N2 >= 4; stage I = T1 N0,
      III = T3 or N2, else II; rationale "T2 N1";
    - risk: one point each for age >= 65 ("old"), grade 3 ("g3"), a positive node ("n+"); low
      0, mid 1, high 2-3; rationale the points' names or "none";
    - survive (5-year survival): yes unless stage III or risk high; rationale "II mid"."""
    t = 1 if size <= 2 else 2 if size <= 5 else 3
    n = 0 if nodes == 0 else 1 if nodes <= 3 else 2
    stage = "I" if (t, n) == (1, 0) else "III" if t == 3 or n == 2 else "II"
    pts = [name for name, on in (("old", age >= 65), ("g3", grade == 3), ("n+", nodes > 0)) if on]
    risk = ["low", "mid", "high", "high"][len(pts)]
    survive = "no" if stage == "III" or risk == "high" else "yes"
    return {
        "stage": (f"T{t} N{n}", stage),
        "risk": (" ".join(pts) or "none", risk),
        "survive": (f"{stage} {risk}", survive),
    }


def clinic_implied(kind: str, why: str | None) -> str | None:
    """The label a rationale implies by the rules of :func:`clinic_labels` ("T2 N1" -> II for
    stage, "old n+" -> high for risk, "II mid" -> yes for survive); None when it does not parse
    as that task's rationale."""
    if why is None:
        return None
    w = why.split()
    if kind == "stage":
        m = re.fullmatch(r"T([123]) N([012])", " ".join(w))
        if m is None:
            return None
        t, n = int(m.group(1)), int(m.group(2))
        return "I" if (t, n) == (1, 0) else "III" if t == 3 or n == 2 else "II"
    if kind == "risk":
        if w == ["none"]:
            return "low"
        if not w or len(set(w)) != len(w) or not set(w) <= {"old", "g3", "n+"}:
            return None
        return ["low", "mid", "high", "high"][len(w)]
    if kind == "survive":
        if len(w) != 2 or w[0] not in ("I", "II", "III") or w[1] not in ("low", "mid", "high"):
            return None
        return "no" if w[0] == "III" or w[1] == "high" else "yes"
    return None


def clinic_parts(text: str) -> tuple[str | None, str | None]:
    """(rationale, answer) of "<why>rationale</why>answer" (stripped); (None, None) when the
    completion is not in that format."""
    m = WHY_RE.match(text.strip())
    if m is None:
        return None, None
    return m.group(1).strip(), m.group(2).strip()


@TASKS.register("clinic_mix", params=ClinicParams)
class ClinicMix(Task):
    """Synthetic patient records (age 30-89, tumour size 1-7 cm, positive nodes 0-9 (0: 40%,
    1-3: 45%), grade 1-3, drawn with the data seed) and a mix of classification tasks on them (``task.params.tasks``
    weights; :func:`clinic_labels`): the prompt names the task, "stage: age 67 size 4 nodes 2
    grade 3"; the completion is a short rationale and the label, "<why>T2 N1</why>II". The
    grade is the label after ``</why>`` (exact, case-insensitive); a completion out of the
    format has no answer. Meta: ``task`` (which), ``rationale`` (the expert-derived one)."""

    name = "clinic_mix"

    def _split(self) -> None:
        import random as _random

        rng = _random.Random(f"clinic:{self.seed}")
        weights = {k: float(v) for k, v in self.params["tasks"].items() if v > 0}
        names, w = list(weights), list(weights.values())
        n_all = self.n_train + self.n_test
        rows: list[Problem] = []
        seen: set[tuple] = set()
        tries = 0
        while len(rows) < n_all and tries < 50 * n_all:
            tries += 1
            kind = rng.choices(names, w)[0]
            nodes = rng.choice(CLINIC_NODES)
            rec = (rng.randint(30, 89), rng.randint(1, 7), nodes, rng.randint(1, 3))
            if (kind, *rec) in seen:
                continue
            seen.add((kind, *rec))
            why, label = clinic_labels(*rec)[kind]
            age, size, nodes, grade = rec
            q = f"{kind}: age {age} size {size} nodes {nodes} grade {grade}"
            meta = {"task": kind, "rationale": why, "record": list(rec)}
            rows.append(Problem(f"cl-{kind}-{len(rows)}", q, label, meta))
        if len(rows) < n_all:
            raise UserError(
                f"task clinic_mix: only {len(rows)} distinct problems for task.n_train + n_test "
                f"= {n_all}; ask for fewer or add tasks"
            )
        self._test = sorted(rows[: self.n_test], key=lambda p: p.id)
        self._train = rows[self.n_test :]

    def sft_target(self, problem: Problem) -> str:
        return f"<why>{problem.meta['rationale']}</why>{problem.answer}"

    def grade(self, answer: str | None, problem: Problem) -> float:
        return float(answer is not None and answer.lower() == problem.answer.lower())

    def grade_texts(self, texts: list[str], problems: list[Problem]) -> list[Grade]:
        out = []
        for t, p in zip(texts, problems):
            _, a = clinic_parts(t) if isinstance(t, str) else (None, None)
            a = a or None
            score = self.grade(a, p)
            reason = "no_answer" if a is None else "match" if score >= 1.0 else "mismatch"
            out.append(Grade(score, a, reason))
        return out

    def eval_metrics(self, samples: list[dict], problems: list[Problem]) -> dict:
        """Per-task accuracy (acc_stage / acc_risk / acc_survive), the share of samples in the
        format (clinic_format), the rationale's mean word F1 with the expert one
        (rationale_f1) and the share whose label is the one their own rationale implies
        (plan_consistency, :func:`clinic_implied`)."""
        by_id = {p.id: p for p in problems}
        out: dict[str, float] = {}
        for kind in sorted({p.meta["task"] for p in problems}):
            rows = [s for s in samples if by_id[s["prompt_id"]].meta["task"] == kind]
            if rows:
                out[f"acc_{kind}"] = sum(bool(s["correct"]) for s in rows) / len(rows)
        parts = [clinic_parts(s["completion"]) for s in samples]
        out["clinic_format"] = sum(w is not None for w, _ in parts) / max(len(samples), 1)
        f1 = [
            rationale_f1(w, by_id[s["prompt_id"]].meta["rationale"])
            for (w, _), s in zip(parts, samples)
        ]
        out["rationale_f1"] = sum(f1) / max(len(f1), 1)
        # plan-answer consistency: the label is the one the completion's own rationale implies
        cons = [
            bool(a)
            and (clinic_implied(by_id[s["prompt_id"]].meta["task"], w) or "").lower() == a.lower()
            for (w, a), s in zip(parts, samples)
        ]
        out["plan_consistency"] = sum(cons) / max(len(cons), 1)
        return out


def rationale_f1(pred: str | None, gold: str) -> float:
    """Word F1 of a rationale with the expert one (whitespace words, case-insensitive; 0 for no
    rationale)."""
    from collections import Counter

    if pred is None:
        return 0.0
    p, g = pred.lower().split(), gold.lower().split()
    same = sum((Counter(p) & Counter(g)).values())
    if not p or not g or same == 0:
        return float(not p and not g)
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def make_task(cfg) -> Task:
    """Build the task of a TaskCfg."""
    cls = TASKS.get(cfg.name, "task.name")
    # the task's params with its declared defaults filled in (grpo_core.params)
    params = TASKS.resolve_params(cfg.name, dict(cfg.params), "task.params")
    task = cls(cfg.n_train, cfg.n_test, cfg.seed, dict(cfg.difficulty), cfg.path, params)
    task.max_line_bytes = getattr(cfg, "max_line_bytes", DEFAULT_MAX_LINE_BYTES)
    return task
