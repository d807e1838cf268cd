"""Math answer grading: math-verify (gold first, boxed answers preferred) in worker processes with
a per-sample timeout that works in any thread or process, a guard against multi-answer leniency,
and a numeric fallback for GSM8K-style numeric golds.

math-verify's own timeouts use ``signal.alarm`` and raise outside the main thread, so they are
switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and the timeout is enforced from
outside instead: each sample runs in a worker process; a worker that overruns is killed and
replaced, the sample scores 0 with reason ``timeout`` and is counted.

Every grade is a :class:`Grade` with a score (0 or 1), the extracted prediction and a reason, so a
miss can be listed with why it missed.
"""

from __future__ import annotations

import decimal
import functools
import re
import select
import time
from dataclasses import asdict, dataclass

from grpo_core.errors import UserError

# the fallback regexes (answer is / last number) read only this tail of a completion (answers sit
# at the end); a \boxed{} or <answer> is found anywhere by a linear scan. An extracted answer
# longer than this is not given to math-verify (reason answer_too_long) unless it matches exactly
MAX_PRED_CHARS = 4000
MEMO_MAX = 200_000  # remembered math-verify verdicts per grader
# a number; thousands separators kept whole ("70,000"), a trailing comma dropped ("366,")
NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


@dataclass
class Grade:
    score: float
    pred: str | None  # the extracted answer that was compared (None: none found)
    # match | numeric | exact | mismatch | no_answer | unbalanced_boxed | answer_too_long |
    # multi_answer | timeout | error:<...>
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# answer extraction (pure string work, done in the caller)


# a brace, or a backslash and the character it escapes (\{ \} \\ do not open or close)
_BRACE_RE = re.compile(r"\\.|[{}]", re.S)


def find_last_boxed(text: str) -> tuple[str | None, str]:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) of the whole text, however long or far
    back: (content, "ok"); (None, "none") when there is none; (None, "unbalanced") when the last
    one never closes. One linear scan (rfind, then the braces after it), no backtracking regex."""
    i = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if i < 0:
        # "\boxed 5" (no braces)
        last = None
        for last in re.finditer(r"\\boxed\s+([^\s$]+)", text):  # noqa: B007 - keep the last
            pass
        return (last.group(1), "ok") if last else (None, "none")
    start = text.index("{", i) + 1
    depth = 1
    for m in _BRACE_RE.finditer(text, start):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : m.start()].strip(), "ok"
    return None, "unbalanced"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces (None when
    there is none or it never closes)."""
    return find_last_boxed(text)[0]


def last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` (linear: rfind, not a lazy regex that
    rescans the rest of the text from every unclosed ``<answer>``)."""
    j = text.rfind("</answer>")
    if j < 0:
        return None
    i = text.rfind("<answer>", 0, j)
    return None if i < 0 else text[i + len("<answer>") : j].strip()


def _extract(completion, numeric_gold: bool) -> tuple[str | None, str]:
    """(prediction, status) with status "ok" | "none" | "unbalanced" (the last \\boxed{ never
    closes: the final answer is cut off, nothing else is taken instead)."""
    if not isinstance(completion, str) or not completion.strip():
        return None, "none"
    b, status = find_last_boxed(completion)  # the whole text: a box may start anywhere
    if status != "none":
        return b, status
    a = last_answer_tag(completion)
    if a is not None:
        return a, "ok"
    if numeric_gold:
        tail = completion[-MAX_PRED_CHARS:]  # the regex fallbacks read the tail only
        m = re.findall(r"(?:answer is|####)\s*:?\s*\$?\s*(-?[\d,]*\.?\d+)", tail, flags=re.I)
        if m:
            return m[-1], "ok"
        nums = NUMBER_RE.findall(tail)
        return (nums[-1], "ok") if nums else (None, "none")
    return None, "none"


def extract_prediction(completion: str, numeric_gold: bool) -> str | None:
    """The answer a completion commits to: the last boxed answer; else an <answer> tag; else
    (numeric golds only) the number after "answer is" / "####", or the last number."""
    return _extract(completion, numeric_gold)[0]


# a plain number: digits with an optional point and exponent (no "_", "nan", "inf", hex)
_PLAIN_NUM_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# exact arithmetic on any size: 5000-digit integers and 1e400 stay exact (a float makes them
# inf, and inf != inf); quotients and differences carry 60 significant digits
_CTX = decimal.Context(
    prec=60, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.InvalidOperation]
)


def to_number(s: str | None) -> decimal.Decimal | None:
    """'1,234.50' / '$18' / '18.' / '50%' / '\\frac{3}{4}' / '1e400' -> an exact Decimal; None
    when it is not a plain finite number."""
    if s is None:
        return None
    t = s.strip().strip("$").strip()
    t = re.sub(r"^\\\$|\\%$|%$|\\text\{\s*\}|\\!|\\,|\s", "", t)
    if "," in t and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", t):
        return None  # "1,2" is two answers, not a thousands separator
    t = t.replace(",", "").rstrip(".")
    if re.fullmatch(r"\\(?:d|t)?frac\{-?\d+\}\{\d+\}", t):
        a, b = re.findall(r"-?\d+", t)
        da, db = decimal.Decimal(a), decimal.Decimal(b)
        return _CTX.divide(da, db) if db else None
    if not _PLAIN_NUM_RE.fullmatch(t):
        return None
    try:
        return decimal.Decimal(t)
    except decimal.DecimalException:  # an exponent beyond any range
        return None


def answer_key(pred: str | None) -> str | None:
    """The key majority voting groups answers by: the number for numeric answers (18, 18.0 and
    18.00 vote together; exact for any size), else the answer with whitespace collapsed."""
    if pred is None:
        return None
    x = to_number(pred)
    if x is not None:
        sign, digits, exp = x.as_tuple()
        ds = "".join(map(str, digits)).lstrip("0")
        if not ds:
            return "0"
        stripped = ds.rstrip("0")
        return f"{'-' if sign else ''}{stripped}e{exp + len(ds) - len(stripped)}"
    return " ".join(pred.split())


def numbers_equal(a, b) -> bool:
    """a == b exactly; else, unless both are integers, |a - b| <= 1e-6 * max(1, |b|)."""
    a, b = decimal.Decimal(a), decimal.Decimal(b)
    if a == b:
        return True
    if a == a.to_integral_value(context=_CTX) and b == b.to_integral_value(context=_CTX):
        return False  # integers compare exactly (2000001 is not 2000000)
    diff = _CTX.abs(_CTX.subtract(a, b))
    return diff <= _CTX.multiply(decimal.Decimal("1e-6"), max(decimal.Decimal(1), _CTX.abs(b)))


def split_top_level(s: str) -> list[str]:
    """Top-level comma/semicolon-separated parts of an answer (commas inside brackets, braces and
    thousands separators like 1,000 do not split)."""
    parts, depth, cur = [], 0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        thousands = c == "," and s[i - 1 : i].isdigit() and re.match(r"\d{3}(?!\d)", s[i + 1 :])
        if c in ",;" and depth == 0 and not thousands:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


# --------------------------------------------------------------------------------------------
# math-verify in a worker process


def _norm_text(s: str) -> str:
    """Whitespace, $ signs and \\text{...} / \\mathrm{...} wrappers removed."""
    s = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", s)
    return re.sub(r"\s+|\$", "", s)


def _readable(workers: list, timeout: float) -> list:
    """Workers whose reply is waiting (select on their stdout pipes)."""
    r, _, _ = select.select(workers, [], [], timeout)
    return r


def _wrap(ans: str) -> str:
    return "\\boxed{" + ans + "}"


def _n_elements(x) -> int:
    """Number of answers a parsed expression holds (sets, tuples, lists of roots)."""
    from sympy import FiniteSet, Tuple

    if isinstance(x, (FiniteSet, Tuple)):
        return len(x.args)
    return 1


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str):
    """A gold parsed once per worker (a step grades G completions per gold; sympy objects are
    immutable, so sharing the parse is safe)."""
    from math_verify import parse

    return parse(_wrap(gold), parsing_timeout=None)


def _verify(gold: str, pred: str) -> tuple[float, str]:
    """math-verify: parse gold first, then the prediction; compare (gold, pred), never the
    other way round (verify is not symmetric). Guard: a gold with several answers needs a
    prediction with as many."""
    from math_verify import parse, verify

    g = _parse_gold(gold)
    if not g:
        return 0.0, "error:gold_unparsed"
    p = parse(_wrap(pred), parsing_timeout=None)
    if not p:
        return 0.0, "mismatch"
    ng, np_ = _n_elements(g[0]), _n_elements(p[0])
    if isinstance(g[0], str) or isinstance(p[0], str):
        # a string fallback: count the top-level parts instead
        ng, np_ = len(split_top_level(gold)), len(split_top_level(pred))
    if ng > 1 and np_ != ng:
        return 0.0, "multi_answer"
    ok = verify(g, p, timeout_seconds=None)
    return (1.0, "match") if ok else (0.0, "mismatch")


def _exit_with_parent() -> None:
    """A worker ends when its parent does, even mid-sample (a stuck sympy call never reads
    the stdin EOF): a daemon thread polls the parent pid once a second."""
    import os
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve() -> None:
    """Worker loop (run as ``python -c "from grpo_core.grader import serve; serve()"``): one JSON
    request per stdin line -> one JSON reply per stdout line."""
    import json
    import logging
    import sys

    logging.disable(logging.WARNING)
    import math_verify  # noqa: F401  (imported before "ready": not part of any timeout)

    # sympy loads much of itself lazily on the first comparison (several seconds on a loaded
    # machine): warm it up before "ready", so that the first sample's timeout measures that
    # sample only
    try:
        _verify("(x+1)^2", "x^2+2x+1")
    except Exception:  # noqa: BLE001 - a failed warm-up only costs the first sample its speed
        pass
    _exit_with_parent()

    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of the libraries must not corrupt the protocol
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        tag, gold, pred = json.loads(line)
        try:
            score, reason = _verify(gold, pred)
        except Exception as e:  # noqa: BLE001 - any failure of a comparison is a 0, never a crash
            score, reason = 0.0, f"error:{type(e).__name__}"
        out.write(json.dumps([tag, score, reason]) + "\n")
        out.flush()


class _Worker:
    """A grading subprocess (not multiprocessing: no re-import of the caller's __main__, no
    fork of a threaded parent), spoken to over pipes, killable at any time from any thread."""

    def __init__(self):
        import os
        import subprocess
        import sys

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from grpo_core.grader import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
        )
        self.ready = False
        self.task: tuple | None = None  # (index, started)

    def send(self, msg) -> None:
        import json

        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self):
        import json

        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("grader worker exited")
        return json.loads(line)

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


class MathGrader:
    """Grades (completion, gold) pairs; math-verify runs in ``workers`` processes, each sample
    limited to ``timeout_s`` seconds (overrun: the worker is killed and replaced, the sample scores
    0 with reason "timeout"). Usable from any thread. ``stats`` counts the reasons."""

    def __init__(self, timeout_s: float = 5.0, workers: int = 1, start_timeout_s: float = 300.0):
        if timeout_s <= 0:
            raise UserError(f"grader timeout must be > 0 seconds, got {timeout_s}")
        if workers < 1:
            raise UserError(f"grader workers must be >= 1, got {workers}")
        self.timeout_s, self.n_workers, self.start_timeout_s = timeout_s, workers, start_timeout_s
        self._workers: list[_Worker] = []
        self.stats: dict[str, int] = {}
        # (gold, prediction) -> (score, reason) of math-verify's deterministic verdicts (not
        # timeouts or dead workers): a group's G completions often repeat one answer, and
        # prompts come back every epoch; cleared when it reaches MEMO_MAX entries
        self._memo: dict[tuple[str, str], tuple[float, str]] = {}

    # -- lifecycle
    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _await_ready(self, w: _Worker) -> None:
        if w.ready:
            return
        if not _readable([w], self.start_timeout_s):
            w.kill()
            raise RuntimeError(f"math-verify worker did not start within {self.start_timeout_s} s")
        try:
            msg = w.recv()
        except EOFError:
            raise RuntimeError(
                "math-verify worker exited at start (is math-verify installed? "
                "python -c 'import math_verify')"
            ) from None
        if msg != "ready":
            raise RuntimeError(f"math-verify worker said {msg!r} instead of ready")
        w.ready = True

    # -- grading
    def grade(self, completion: str, gold: str) -> Grade:
        return self.grade_many([(completion, gold)])[0]

    def grade_many(self, pairs: list[tuple[str, str]]) -> list[Grade]:
        out: list[Grade | None] = [None] * len(pairs)
        jobs: list[tuple[int, str, str]] = []
        first: dict[tuple[str, str], int] = {}  # (gold, pred) -> index of its job
        dups: list[tuple[int, int]] = []  # (index, index of the job with the same pair)
        for i, (completion, gold) in enumerate(pairs):
            g = self._pre(completion, gold)
            if isinstance(g, Grade):
                out[i] = g
            elif (gold, g) in self._memo:
                score, reason = self._memo[(gold, g)]
                out[i] = Grade(score, g, reason)
            elif (gold, g) in first:
                dups.append((i, first[(gold, g)]))
            else:
                first[(gold, g)] = i
                jobs.append((i, gold, g))
        self._run(jobs, out)
        if len(self._memo) + len(jobs) > MEMO_MAX:
            self._memo.clear()
        for i, gold, pred in jobs:
            g = out[i]
            if g.reason in ("match", "mismatch", "multi_answer", "error:gold_unparsed"):
                self._memo[(gold, pred)] = (g.score, g.reason)
        for i, j in dups:
            out[i] = Grade(out[j].score, out[j].pred, out[j].reason)  # type: ignore[union-attr]
        for g in out:
            self.stats[g.reason] = self.stats.get(g.reason, 0) + 1  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    def _pre(self, completion, gold) -> Grade | str:
        """Cheap decisions before math-verify: no answer, numeric fallback. Returns the
        prediction string to verify otherwise."""
        if not isinstance(gold, str) or not gold.strip():
            return Grade(0.0, None, "error:no_gold")
        gnum = to_number(gold)
        pred, status = _extract(completion, gnum is not None)
        if status == "unbalanced":  # the last \boxed{ never closes (cut off): no answer given
            return Grade(0.0, None, "unbalanced_boxed")
        if pred is None or not pred.strip():
            return Grade(0.0, None, "no_answer")
        if gnum is not None:
            pnum = to_number(pred)
            if pnum is not None:  # both plain numbers: no need for sympy
                ok = numbers_equal(pnum, gnum)
                return Grade(float(ok), pred, "numeric" if ok else "mismatch")
        if _norm_text(pred) == _norm_text(gold):  # the same string (text answers math-verify
            return Grade(1.0, pred, "exact")  # cannot parse, e.g. \text{Venus})
        if len(pred) > MAX_PRED_CHARS:  # no real answer is this long; sympy would only stall
            return Grade(0.0, pred, "answer_too_long")
        return pred

    def _run(self, jobs: list[tuple[int, str, str]], out: list) -> None:
        if not jobs:
            return
        while len(self._workers) < min(self.n_workers, len(jobs)):
            self._workers.append(_Worker())
        for w in self._workers:
            self._await_ready(w)
        pending = list(reversed(jobs))
        preds = {i: p for i, _, p in jobs}
        busy: dict = {}
        while pending or busy:
            for idx in range(len(self._workers)):
                w = self._workers[idx]
                if w.task is None and pending:
                    i, gold, pred = pending.pop()
                    try:
                        w.send([i, gold, pred])
                    except OSError:  # it died while idle (BrokenPipeError): replace, send again
                        self._replace(w)
                        w = self._workers[idx]
                        w.send([i, gold, pred])
                    w.task = (i, time.monotonic())
                    busy[w] = w
            now = time.monotonic()
            wait_s = min(self.timeout_s - (now - w.task[1]) for w in busy.values())
            for c in _readable(list(busy), max(0.0, wait_s)):
                w = busy.pop(c)
                try:
                    i, score, reason = w.recv()
                except (EOFError, OSError, ValueError):  # the worker died (e.g. out of memory)
                    i, score, reason = w.task[0], 0.0, "error:worker_died"
                    self._replace(w)
                out[i] = Grade(score, preds[i], reason)
                w.task = None
            now = time.monotonic()
            for c, w in list(busy.items()):
                if now - w.task[1] >= self.timeout_s:
                    busy.pop(c)
                    i = w.task[0]
                    out[i] = Grade(0.0, preds[i], "timeout")
                    self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        k = self._workers.index(w)
        nw = _Worker()
        self._workers[k] = nw
        self._await_ready(nw)


def grade_math(
    completion: str, gold: str, timeout_s: float = 5.0, grader: MathGrader | None = None
) -> Grade:
    """Grade one completion against one gold (a throwaway grader unless one is passed)."""
    if grader is not None:
        return grader.grade(completion, gold)
    with MathGrader(timeout_s=timeout_s) as g:
        return g.grade(completion, gold)
