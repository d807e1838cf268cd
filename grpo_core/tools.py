"""Tools of the env ``tools`` (grpo_core.episodes.ToolsEnv): the action format, its parser and
the two tools.

A policy turn is either **one tool call**, a tag anywhere in the text::

    <tool name="calculator">3*(4+5)</tool>      -> <result>27</result>
    <tool name="python">print(2**10)</tool>     -> <result>1024</result>

or **the answer** (a turn with no tool tag, in the task's answer format). ``calculator``
evaluates arithmetic with :func:`calculate` (a walk over Python's ``ast``: numbers, + - * / //
% **, unary signs, parentheses; no names, calls or attributes, never ``eval``); ``python``
runs the code in :func:`grpo_core.sandbox.run_python` and returns what it printed.

Whatever is wrong with an action becomes an :class:`Bad` (kind and message); the env shows
the message with the format and counts the turn, it never raises.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass

from grpo_core.errors import BadAction

TOOLS = ("calculator", "python")
_EXAMPLE = {
    "calculator": '<tool name="calculator">expression</tool>',
    "python": '<tool name="python">code</tool>',
}


def format_hint(tools=TOOLS) -> str:
    """What a bad action's observation says about the format (the enabled tools only)."""
    calls = " or ".join(_EXAMPLE[t] for t in tools)
    return f"the format is {calls}, one call per turn, or the answer alone"


FORMAT = format_hint(TOOLS)
INSTRUCTIONS = (
    'Tools: <tool name="calculator">expression</tool> evaluates arithmetic; '
    '<tool name="python">code</tool> runs Python and shows what it prints. Each result comes '
    "back as <result>...</result>. Make at most one tool call per turn; give the final answer "
    "without a tool tag."
)

# <tool name="x">input</tool>: the attribute in double or single quotes
_CALL = re.compile(r"<tool\s+name\s*=\s*(\"[^\"]*\"|'[^']*')\s*>(.*?)</tool\s*>", re.DOTALL)
_OPEN = re.compile(r"<tool\b", re.IGNORECASE)
_CLOSE = re.compile(r"</tool\s*>", re.IGNORECASE)


@dataclass
class Call:
    tool: str
    text: str  # the tool's input, stripped


# Bad kinds here: unparseable | several_calls | unknown_tool | empty_input | too_long | no_answer
Bad = BadAction


class ToolError(Exception):
    """A tool could not produce a result (its message is shown to the policy)."""


def parse_action(text: str, tools=TOOLS, max_input_chars: int = 500) -> Call | Bad | None:
    """The tool call in ``text`` (:class:`Call`), what is wrong with it (:class:`Bad`), or None
    when the text has no tool tag at all (then it is the answer)."""
    fmt = format_hint(tools)
    opens, closes = len(_OPEN.findall(text)), len(_CLOSE.findall(text))
    if opens == 0 and closes == 0:
        return None
    if opens > 1 or closes > 1:
        return Bad("several_calls", f"{max(opens, closes)} tool tags in one turn; {fmt}")
    m = _CALL.search(text)
    if m is None:
        frag = text[_OPEN.search(text).start() :] if opens else text
        frag = frag if len(frag) <= 60 else frag[:57] + "..."
        return Bad("unparseable", f"unparseable tool call {frag.strip()!r}; {fmt}")
    name = m.group(1)[1:-1].strip()
    if name not in tools:
        return Bad("unknown_tool", f"unknown tool {name!r}; tools: {', '.join(tools)}; {fmt}")
    body = m.group(2).strip()
    if not body:
        return Bad("empty_input", f"empty input to the {name} tool; {fmt}")
    if len(body) > max_input_chars:
        return Bad(
            "too_long",
            f"{name} input too long ({len(body)} characters, at most {max_input_chars})",
        )
    return Call(name, body)


# ------------------------------------------------------------------------------ calculator

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_SYMBOL = {
    ast.BitXor: "^ (use ** for powers)",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}
MAX_ABS = 10**100  # larger intermediate results are refused
MAX_EXPONENT = 1000


def _num(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ToolError("only numbers are allowed")
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolError("result is not a finite number")
    if abs(x) > MAX_ABS:
        raise ToolError("number too large")
    return x


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _num(node.value)
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ToolError(f"unsupported operator {_SYMBOL.get(type(node.op), '?')}")
        return _num(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BIN:
            raise ToolError(f"unsupported operator {_SYMBOL.get(type(node.op), '?')}")
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > MAX_EXPONENT or abs(a) > MAX_ABS):
            raise ToolError("exponent too large")
        if isinstance(node.op, ast.Pow) and a == 0 and b < 0:
            raise ToolError("division by zero")
        try:
            return _num(_BIN[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("number too large") from None
    what = {
        ast.Name: "names",
        ast.Call: "function calls",
        ast.Attribute: "attributes",
        ast.Compare: "comparisons",
        ast.BoolOp: "and / or",
    }.get(type(node), type(node).__name__)
    raise ToolError(f"{what} are not allowed (numbers, + - * / // % ** and parentheses only)")


def calculate(expr: str) -> str:
    """The value of an arithmetic expression as text ("3*(4+5)" -> "27", "7/2" -> "3.5";
    a float that is whole prints as an integer). ToolError for anything else."""
    src = expr.strip().replace("\u00d7", "*").replace("\u2212", "-")
    if len(src) > 1000:
        raise ToolError("expression too long")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError:
        shown = src if len(src) <= 40 else src[:37] + "..."
        raise ToolError(f"not an arithmetic expression: {shown!r}") from None
    x = _eval(tree)
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e16:
            return str(int(x))
        return f"{x:.12g}"
    return str(x)


# ------------------------------------------------------------------------------ running


def run_tool(call: Call, sandbox_cfg=None, max_result_chars: int = 200) -> tuple[bool, str]:
    """(ok, text): the tool's result, or why it failed (ok False)."""
    if call.tool == "calculator":
        try:
            out = calculate(call.text)
        except ToolError as e:
            return False, f"calculator error: {e}"
        except RecursionError:
            return False, "calculator error: expression nested too deeply"
        return True, _cut(out, max_result_chars)
    if call.tool == "python":
        from grpo_core.sandbox import run_python

        res = run_python(call.text, sandbox_cfg)
        if res.reason == "ok":
            return True, _cut(res.stdout.strip(), max_result_chars)
        last = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        why = last[-1].strip() if last else ""
        detail = {
            "timeout": "time limit exceeded",
            "output_limit": "output limit exceeded",
            "killed": f"killed by signal {res.signal}",
        }.get(res.reason, why or f"exit status {res.exit_code}")
        return False, _cut(f"python error ({res.reason}): {detail}", max_result_chars)
    raise ValueError(f"unknown tool {call.tool!r}")  # parse_action checked the name


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 3, 0)] + "..."


__all__ = [
    "FORMAT",
    "format_hint",
    "INSTRUCTIONS",
    "TOOLS",
    "Bad",
    "Call",
    "ToolError",
    "calculate",
    "parse_action",
    "run_tool",
]
