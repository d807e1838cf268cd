"""Scoring rules of the real video benchmarks (evals.video_benchmarks), written from the rules
of each benchmark's reference scorer so that a fixed completion gets the same score here and
there (tests/test_video_benchmarks.py checks that against lmms-eval 0.7.3 where it imports):

- :func:`strip_think`: ``<think>...</think>`` blocks removed first, as lmms-eval does when a
  task runs with ``reasoning_tags=[["<think>", "</think>"]]`` (an unclosed block stays; a lone
  ``</think>`` keeps only what follows its last occurrence).
- :func:`mcq_extract`: lmms-eval's shared multiple-choice letter extraction
  (``_task_utils/mcq_extract.py``, used by Video-MME and VideoMMMU): candidate letters by
  format, ranked start > end > answer phrase > "(X)" > "X." > "X:" > "X)" > "X " > any
  occurrence, the later occurrence winning within a format; "" when there is none.
- :func:`mvbench_letter`: MVBench's ``mcq_acc`` normalisation ("X. text" -> X, else
  punctuation processing and the first standalone letter A-E, case-insensitive).
- :func:`mmvu_mc_correct` / :func:`mmvu_open_correct`: MMVU's rule-based judge (lmms-eval runs
  a GPT judge on open-ended answers the rules reject; here the rules only, i.e. lmms-eval with
  no judge reachable).
- :func:`vsi_mca_score` / :func:`vsi_na_score`: VSI-Bench: the first word (trailing "."
  removed) equal to the letter, ignoring case; numeric answers by mean relative accuracy
  (:func:`mean_relative_accuracy`) of the first number (digits or English number words).
- :func:`seed_r1_score`: SEED-Bench-R1's ``infer.py``: the first character of the first
  ``<answer>...</answer>`` equals the gold letter. Its math-verify pre-check compares against
  ``parse("<answer>B.</answer>")``, which is empty, so it never matches: the string rule is
  the whole score (tested).
- :func:`mmmu_open_correct`: VideoMMMU's open-ended rule (MMMU's ``parse_open_response`` /
  ``eval_open``).
"""

from __future__ import annotations

import re
import string

import numpy as np

# --------------------------------------------------------------------------------------------
# reasoning blocks


def strip_think(text: str, start: str = "<think>", end: str = "</think>") -> str:
    """``text`` without its ``start...end`` blocks, stripped; a lone ``end`` (the opening tag
    was in the prompt) keeps what follows its last occurrence."""
    out = text
    while start in out and end in out:
        i = out.find(start)
        j = out.find(end, i)
        if i == -1 or j == -1:
            break
        out = out[:i] + out[j + len(end) :]
    if end in out and start not in out:
        out = out.rsplit(end, 1)[-1]
    return out.strip()


# --------------------------------------------------------------------------------------------
# shared multiple-choice extraction (Video-MME, VideoMMMU)

ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is",
    "the best answer is", "best answer is", "the correct option is", "correct option is",
    "the best option is", "best option is", "the choice is", "choice is",
    "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选",
    "答えは",
)  # fmt: skip
_RANK = {
    "start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4,
    "right_paren": 3, "space": 2, "fallback": 0,
}  # fmt: skip


def mcq_extract(response: str, choices: list[str] | None = None) -> str:
    """The chosen letter of a free-form answer ("" when none): every letter found in some
    format is a candidate; the best-ranked format wins, then the later position."""
    if not response or not response.strip():
        return ""
    letters = list(choices or "ABCDEFGH")
    text = response.strip()
    for ch in ",.!?;:'\"":
        text = text.strip(ch)
    text = f" {text} "
    cands: list[tuple[int, int, str]] = []  # (rank, position, letter)
    for fmt, pat in (
        ("parentheses", "({})"),
        ("period", "{}."),
        ("colon", "{}:"),
        ("right_paren", "{})"),
        ("space", "{} "),
    ):
        for ch in letters:
            s = pat.format(ch)
            if s in text:
                cands.append((_RANK[fmt], text.rfind(s), ch))
    low = text.lower()
    for ph in ANSWER_PHRASES:
        i = low.find(ph)
        if i != -1:
            for ch in letters:
                p = text.find(ch, i + len(ph))
                if p != -1:
                    cands.append((_RANK["phrase"], p, ch))
    core = text.strip()
    for ch in letters:
        if core.startswith(ch) and (len(core) == 1 or not core[1].isalpha()):
            cands.append((_RANK["start"], 0, ch))
        if core.endswith(ch) and (len(core) == 1 or not core[-2].isalpha()):
            cands.append((_RANK["end"], len(text) - 1, ch))
    if not cands:
        cands = [(_RANK["fallback"], text.rfind(ch), ch) for ch in letters if ch in text]
    if not cands:
        return ""
    return max(cands, key=lambda c: (c[0], c[1]))[2]


# --------------------------------------------------------------------------------------------
# MVBench

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!"]  # fmt: skip
_COMMA_NUM = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # (sic: the reference's look-ahead, not -behind)


def _mvbench_punct(s: str) -> str:
    out = s
    for p in _PUNCT:
        if p + " " in s or " " + p in s or _COMMA_NUM.search(s) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # the reference passes re.UNICODE (32) as re.sub's count: at most 32 periods go
    return _PERIOD.sub("", out, 32)


def mvbench_letter(answer: str) -> str:
    """MVBench's normal form of an answer: its option letter when one is found, else the
    processed lower-case text."""
    m = re.match(r"^([A-E])\.\s*(.+)$", answer.strip(), re.I)
    if m:
        return m.group(1).upper()
    a = answer.replace("\n", " ").replace("\t", " ").strip()
    a = _mvbench_punct(a)
    a = a.strip("'").strip('"').strip(")").strip("(").strip().lower()
    m = re.search(r"\b([A-E])\b", a, re.I)
    return m.group(1).upper() if m else a


# --------------------------------------------------------------------------------------------
# MMVU (rule-based judge)

_SUPERSCRIPTS = {"²": "^2", "³": "^3", "¹": "^1", "⁰": "^0", "⁴": "^4", "⁵": "^5", "⁶": "^6",
                 "⁷": "^7", "⁸": "^8", "⁹": "^9"}  # fmt: skip


def _sup(s: str) -> str:
    for k, v in _SUPERSCRIPTS.items():
        s = s.replace(k, v)
    return s


def mmvu_mc_correct(pred: str, answer: str, choices: dict[str, str]) -> bool:
    """MMVU multiple choice: the first standalone letter A-E (any case) is the answer; else the
    answer letter standing alone anywhere; else the answer option's text inside the prediction,
    or the letter plus one of its option's words of 3+ characters."""
    p, a = str(pred).strip(), str(answer).strip()
    m = re.search(r"\b([A-E])\b", p, re.I)
    if m and m.group(1).upper() == a.upper():
        return True
    if a.upper() in p.upper() and re.search(rf"\b{re.escape(a)}\b", p, re.I):
        return True
    if a in choices:
        text = choices[a].strip().lower()
        low = p.lower()
        if text in low:
            return True
        if a.upper() in p.upper():
            words = [w.strip(string.punctuation) for w in text.split()]
            words = [w for w in words if len(w) > 2]
            if words and any(w in low for w in words):
                return True
    return False


def mmvu_open_correct(pred: str, answer: str) -> bool:
    """MMVU open-ended, rules only: equal after lower-casing / superscripts / spaces, either
    one inside the other, the first numbers within 0.01, all 3+ letter words of a 2-5 word
    answer among the prediction's words, or equal O(...) complexity."""
    pn, an = _sup(str(pred).strip().lower()), _sup(str(answer).strip().lower())
    pc, ac = " ".join(pn.split()), " ".join(an.split())
    if pc == ac or ac in pc or pc in ac:
        return True
    pnum, anum = re.findall(r"\d+\.?\d*", pn), re.findall(r"\d+\.?\d*", an)
    if pnum and anum and abs(float(anum[0]) - float(pnum[0])) < 0.01:
        return True
    aw = [w.strip(string.punctuation) for w in ac.split() if w.strip(string.punctuation)]
    pw = [w.strip(string.punctuation) for w in pc.split() if w.strip(string.punctuation)]
    if 2 <= len(aw) <= 5 and all(w in pw for w in aw if len(w) > 2):
        return True
    po = re.search(r"O\s*\([^)]+\)", pc, re.I)
    ao = re.search(r"O\s*\([^)]+\)", ac, re.I)
    return bool(po and ao and _sup(po.group(0).lower()) == _sup(ao.group(0).lower()))


# --------------------------------------------------------------------------------------------
# VSI-Bench

# 0.50, 0.55, ..., 0.95 as numpy's linspace makes them (the reference's floats, bit for bit)
MRA_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))


def mean_relative_accuracy(pred: float, gold: float) -> float:
    """VSI-Bench's MRA: the share of thresholds t in {0.50, 0.55, ..., 0.95} with
    |pred - gold| / gold <= 1 - t (the paper writes <, its code <=; the code is followed)."""
    rel = abs(pred - gold) / gold
    return float(np.mean([rel <= 1 - t for t in MRA_THRESHOLDS]))


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}  # fmt: skip
_NUMBER_WORDS |= {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
                  "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000}  # fmt: skip
_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def first_number(text: str | None) -> float | None:
    """The first number of a text: digits ("3", "-2.5") or a run of English number words
    ("twenty-one", "three hundred and five"), whichever starts first; None when none."""
    if text is None:
        return None
    s = str(text).strip().lower()
    if not s:
        return None
    dm = _NUM.search(s)
    run_at, run = None, []
    for m in re.finditer(r"[a-z]+", s):
        w = m.group(0)
        if run_at is None:
            if w in _NUMBER_WORDS:
                run_at, run = m.start(), [w]
        elif w == "and":
            continue
        elif w in _NUMBER_WORDS:
            run.append(w)
        else:
            break
    if dm is not None and (run_at is None or dm.start() < run_at):
        return float(dm.group(0))
    if run_at is None:
        return None
    total = cur = 0
    for w in run:
        v = _NUMBER_WORDS[w]
        if v == 100:
            cur = max(cur, 1) * 100
        elif v == 1000:
            total += max(cur, 1) * 1000
            cur = 0
        else:
            cur += v
    return float(total + cur)


def vsi_mca_score(pred: str, gold_letter: str) -> float:
    first = pred.split(" ")[0].rstrip(".").strip()
    return float(first.lower() == gold_letter.lower())


def vsi_na_score(pred: str, gold: float) -> float:
    x = first_number(pred)
    return 0.0 if x is None else mean_relative_accuracy(x, gold)


# --------------------------------------------------------------------------------------------
# SEED-Bench-R1

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def seed_r1_score(completion: str, gold_letter: str) -> float:
    """1 when the first <answer>...</answer> holds text whose first character is the gold
    letter (case-sensitive), else 0 (no tag, empty tag)."""
    m = _ANSWER_TAG.search(completion)
    if not m:
        return 0.0
    a = m.group(1).strip()
    return float(bool(a) and a[0] == gold_letter[0])


def answer_tag(text: str) -> str | None:
    """The content of the last <answer>...</answer>, stripped (None when absent)."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


# --------------------------------------------------------------------------------------------
# VideoMMMU open-ended (MMMU's rule)

_KEY_INDICATORS = [
    "could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ", "are ",
    "in total ", "total ", "identify ", "recognize ", "calculated as ", "counted as ",
    "measured as ", "observed as ", "concluded as ", "found to be ", "equals ",
    "determined to be ", "number of ", "value is ", "adds up to ", "have ", "has ",
]  # fmt: skip


def _mmmu_numbers(s: str) -> list[str]:
    return (
        re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", s)
        + re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", s)
        + re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", s)
    )


def _mmmu_norm(s: str) -> list:
    s = s.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        s = s.lower()
        return [" " + s, s + " "] if len(s) == 1 else [s]


def mmmu_open_parse(response: str) -> list | str:
    """MMMU's parse of an open answer: the shortest tail after a key phrase of each sentence
    (the whole response when none), plus the numbers in them, normalised; "API Error" for an
    empty response."""
    if response in ("API Error", ""):
        return "API Error"
    r = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", r)
    keys = []
    indicators = list(_KEY_INDICATORS)
    for i, sub in enumerate(subs):
        if i == len(subs) - 1:
            indicators.append("=")
        short = None
        for ind in indicators:
            if ind in sub:
                tail = sub.split(ind)[-1].strip()
                if not short or len(tail) < len(short):
                    short = tail
        if short and short.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(short)
    if not keys:
        keys = [r]
    preds = list(keys)
    for k in keys:
        preds.extend(_mmmu_numbers(k))
    out = []
    for p in preds:
        out.extend(_mmmu_norm(p))
    return list(set(out))


def mmmu_open_correct(response: str, gold: str | list[str]) -> bool:
    preds = mmmu_open_parse(response)
    if preds == "API Error":
        return False
    golds = []
    for g in gold if isinstance(gold, list) else [gold]:
        golds.extend(_mmmu_norm(g))
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False
