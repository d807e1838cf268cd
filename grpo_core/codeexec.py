"""Run model-written Python against unit tests, always inside grpo_core.sandbox: the grading of
the code task (grpo_core.tasks.CodeFn, reward ``correctness``) and of the code benchmarks
(evals.benchmarks: HumanEval, MBPP).

A :class:`Program` is the source to run (the completion, or a benchmark's prompt + completion
+ test code), the test statements (asserts, or ``check(fn)``) and the function it must define.
:func:`run_programs` runs a batch of them in ONE sandbox call (one :func:`run_python`: the
namespaces, rlimits, the fresh directory and the audit hook hold for every program): the
sandbox's program (``_BATCH``) forks one child per program, the child compiles and runs the
source, then each test under a per-test alarm, and writes its verdict to a pipe; the parent
kills a child (its process group) that outlives its deadline. The child's stdout / stderr go to
a file in the sandbox directory (a program's prints cannot forge a verdict or fill the pipe).
Programs the batch could not finish (the sandbox's wall clock passed, a fork failed: e.g. an
earlier program's fork bomb still holding the process count) are run again one per sandbox
call.

:class:`Outcome` per program: ``passed`` / ``total`` tests and the reason, first match wins:
``pass`` (all tests passed), ``syntax_error``, ``timeout`` (the source or a test ran past its
time), ``memory`` (MemoryError: the address-space limit), ``denied`` (the audit hook refused
something: a write outside, a socket, a subprocess), ``no_function`` (the source does not define
the entry point), ``runtime_error`` (an exception other than a failed assert), ``wrong_output``
(a failed assert), ``crashed`` (the child died without a verdict). ``score`` is
``passed / total`` (or 0 / 1 all-or-nothing, by the caller's choice).

Every execution of model output goes through :func:`grpo_core.sandbox.run_python` (the only
place this module runs anything; tests/test_code.py spies on it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from grpo_core import sandbox

REASONS = (
    "pass",
    "syntax_error",
    "timeout",
    "memory",
    "denied",
    "no_function",
    "runtime_error",
    "wrong_output",
    "crashed",
)


@dataclass(frozen=True)
class Program:
    source: str  # what is compiled and run as module ``solution``
    tests: tuple[str, ...]  # statements run one by one in its namespace (asserts, check(fn))
    entry: str | None = None  # the function the source must define (None: not checked)


@dataclass
class Outcome:
    passed: int
    total: int
    reason: str  # one of REASONS
    detail: str = ""  # the exception's last line (trimmed), when there is one
    extra: dict = field(default_factory=dict)

    def score(self, mode: str = "fraction") -> float:
        if mode == "all":
            return float(self.total > 0 and self.passed == self.total)
        return self.passed / self.total if self.total else 0.0


# the sandbox's program: argv-free, reads progs.json from its directory
_BATCH = r"""
import json, os, select, signal, sys, time
spec = json.load(open("progs.json"))
T_SRC, T_TEST, T_PROG = spec["t_src"], spec["t_test"], spec["t_prog"]


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


class _Sink:
    def write(self, s):
        return len(s)

    def flush(self):
        pass


def _last(e):
    if isinstance(e, _Timeout):
        return "timed out"
    return (type(e).__name__ + ": " + str(e))[:200]


def _kind(e):
    if isinstance(e, _Timeout):
        return "timeout"
    if isinstance(e, MemoryError):
        return "memory"
    if isinstance(e, PermissionError) and "sandbox denied" in str(e):
        return "denied"
    return "runtime_error"


def run_one(p, idx):
    n = len(p["tests"])
    signal.signal(signal.SIGALRM, _alarm)
    try:
        code = compile(p["source"], "solution.py", "exec")
    except (SyntaxError, ValueError, OverflowError, MemoryError) as e:
        return {"passed": 0, "total": n, "reason": "syntax_error", "detail": _last(e)}
    ns = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        signal.setitimer(signal.ITIMER_REAL, T_SRC)
        exec(code, ns)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"passed": 0, "total": n, "reason": _kind(e), "detail": _last(e)}
    if p["entry"] is not None and not callable(ns.get(p["entry"])):
        return {"passed": 0, "total": n, "reason": "no_function", "detail": p["entry"]}
    passed, reason, detail = 0, "pass", ""
    for t in p["tests"]:
        try:
            tc = compile(t, "test.py", "exec")
            signal.setitimer(signal.ITIMER_REAL, T_TEST)
            exec(tc, ns)
            signal.setitimer(signal.ITIMER_REAL, 0)
            passed += 1
        except AssertionError as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if reason == "pass":
                reason, detail = "wrong_output", _last(e)
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            k = _kind(e)
            # a time-out / memory / denial outranks a wrong answer: it says more
            if reason in ("pass", "wrong_output") or (reason == "runtime_error" and k != reason):
                reason, detail = k, _last(e)
    return {"passed": passed, "total": n, "reason": reason, "detail": detail}


out = []
for i, p in enumerate(spec["progs"]):
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        out.append({"reason": "fork_failed", "detail": _last(e)})
        continue
    if pid == 0:
        me = os.getpid()
        try:
            os.close(r)
            os.setpgid(0, 0)
            sink = os.open("out-%d.txt" % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(sink, 1)
            os.dup2(sink, 2)
            sys.stdout = sys.stderr = _Sink()
            res = run_one(p, i)
        except BaseException as e:
            res = {"passed": 0, "total": len(p["tests"]), "reason": _kind(e), "detail": _last(e)}
        if os.getpid() != me:  # a process the program forked: only the child gives the verdict
            os._exit(0)
        try:
            os.write(w, json.dumps(res).encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    buf, deadline = b"", time.monotonic() + T_PROG
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        res = json.loads(buf.decode())
    except ValueError:
        timed_out = time.monotonic() >= deadline
        res = {"passed": 0, "total": len(p["tests"]),
               "reason": "timeout" if timed_out else "crashed", "detail": ""}
    out.append(res)
    try:
        os.remove("out-%d.txt" % i)
    except OSError:
        pass
    sys.__stdout__.write("@@RESULT@@ " + json.dumps({"i": i, **res}) + "\n")
    sys.__stdout__.flush()
"""


@dataclass(frozen=True)
class ExecLimits:
    """Per-program time (source, each test, the whole program) and the sandbox's limits."""

    t_src: float = 1.0  # seconds to run the source (definitions)
    t_test: float = 1.0  # seconds per test statement
    t_prog: float = 3.0  # seconds for one program (then its process group is killed)
    memory_mb: int = 512
    max_procs: int = 16


def _parse(stdout: str, progs: list[Program]) -> dict[int, Outcome]:
    got: dict[int, Outcome] = {}
    for line in stdout.splitlines():
        if not line.startswith("@@RESULT@@ "):
            continue
        try:
            d = json.loads(line[len("@@RESULT@@ ") :])
        except ValueError:
            continue
        i = d.get("i")
        if not isinstance(i, int) or not 0 <= i < len(progs) or d.get("reason") == "fork_failed":
            continue
        reason = d.get("reason") if d.get("reason") in REASONS else "crashed"
        total = len(progs[i].tests)
        passed = int(d.get("passed", 0)) if reason in ("pass", "wrong_output") else 0
        if reason in ("timeout", "memory", "denied", "runtime_error"):
            passed = int(d.get("passed", 0))
        got[i] = Outcome(max(0, min(passed, total)), total, reason, str(d.get("detail", "")))
    return got


def _sandbox_config(n: int, lim: ExecLimits) -> sandbox.SandboxConfig:
    budget = n * (lim.t_prog + 0.5) + 5.0
    return sandbox.SandboxConfig(
        cpu_s=budget,
        wall_s=budget,
        memory_mb=lim.memory_mb,
        max_procs=lim.max_procs,
        max_output=max(65536, 2048 * n),
    )


def _run_batch(progs: list[Program], lim: ExecLimits) -> dict[int, Outcome]:
    spec = {
        "t_src": lim.t_src,
        "t_test": lim.t_test,
        "t_prog": lim.t_prog,
        "progs": [{"source": p.source, "tests": list(p.tests), "entry": p.entry} for p in progs],
    }
    res = sandbox.run_python(
        _BATCH, _sandbox_config(len(progs), lim), files={"progs.json": json.dumps(spec)}
    )
    return _parse(res.stdout, progs)


def run_programs(
    progs: list[Program], limits: ExecLimits | None = None, chunk: int = 64
) -> list[Outcome]:
    """The :class:`Outcome` of each program, in order (see the module docstring). ``chunk``
    programs per sandbox call; a program without a verdict from its batch runs alone once more,
    and without one again is ``crashed``."""
    lim = limits or ExecLimits()
    out: list[Outcome | None] = [None] * len(progs)
    for s in range(0, len(progs), max(1, chunk)):
        part = progs[s : s + chunk]
        for i, o in _run_batch(part, lim).items():
            # a failed fork may be an earlier program's fault (its processes, reparented to the
            # namespace's first process, still count): such a program runs alone again
            if len(part) > 1 and "BlockingIOError" in o.detail:
                continue
            out[s + i] = o
    for i, o in enumerate(out):
        if o is None:
            again = _run_batch([progs[i]], lim).get(0)
            out[i] = again or Outcome(0, len(progs[i].tests), "crashed", "no verdict")
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# the structure of a completion, read with ast (nothing is run): the rule-based process score
# of task code_fn (reward code_process, reproductions/posterior_grpo)

# calls and statements a small pure function has no business with
FORBIDDEN_CALLS = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "open",
        "print",
        "input",
        "__import__",
        "globals",
        "locals",
        "getattr",
        "setattr",
        "delattr",
        "vars",
        "exit",
        "quit",
        "breakpoint",
    }
)
PROCESS_PARTS = ("parses", "signature", "clean", "uses_args", "constants", "concise")


def process_parts(text: str, entry: str, args: list[str], constants: list[str]) -> dict:
    """Each check of the rule-based process score, 0 or 1 (all 0 when the text does not parse):

    - ``parses``: the completion is valid Python;
    - ``signature``: a top-level ``def <entry>(<args>)`` with exactly the prompt's arguments;
    - ``clean``: no import, ``while``, ``global`` / ``nonlocal``, dunder attribute, or call of
      :data:`FORBIDDEN_CALLS` anywhere;
    - ``uses_args``: the function reads every argument;
    - ``constants``: every constant of the prompt ({k}: ``7``, {c}: ``'a'``) occurs in the body;
    - ``concise``: the body is one ``return <expression>`` (a docstring allowed before it).

    The function is the first top-level ``def <entry>``; without one, only parses and clean can
    be 1."""
    import ast

    out = dict.fromkeys(PROCESS_PARTS, 0.0)
    try:
        tree = ast.parse(text if isinstance(text, str) else "")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return out
    out["parses"] = 1.0
    clean = True
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.While, ast.Global, ast.Nonlocal)):
            clean = False
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            clean = clean and node.func.id not in FORBIDDEN_CALLS
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            clean = False
    out["clean"] = float(clean)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry), None)
    if fn is None:
        return out
    a = fn.args
    plain = not (a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults)
    out["signature"] = float(plain and [x.arg for x in a.args] == list(args))
    read = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    out["uses_args"] = float(all(x in read for x in args))
    seen = {
        repr(n.value)
        for n in ast.walk(fn)
        if isinstance(n, ast.Constant) and not isinstance(n.value, bool)
    }
    out["constants"] = float(all(c in seen for c in constants))
    body = list(fn.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]  # a docstring
    out["concise"] = float(
        len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None
    )
    return out


def process_score(text: str, entry: str, args: list[str], constants: list[str]) -> float:
    """The mean of :func:`process_parts` (in [0, 1])."""
    parts = process_parts(text, entry, args, constants)
    return sum(parts.values()) / len(parts)


__all__ = [
    "REASONS",
    "ExecLimits",
    "Outcome",
    "Program",
    "process_parts",
    "process_score",
    "run_programs",
]
