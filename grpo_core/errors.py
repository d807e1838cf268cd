"""User-facing errors: one line that says what, where, and what would be right."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class UserError(Exception):
    """An error caused by input (config, dataset row, model output, checkpoint), not by a bug.

    The CLI prints it as one line without a traceback (``--traceback`` shows it).
    """


@dataclass
class BadAction:
    """What was wrong with a policy's action in an environment (tools, search, gui): ``kind``
    names the case (each env lists its kinds), ``message`` is the observation the policy gets
    back; the episode counts it as a step and goes on."""

    kind: str
    message: str


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """Return a 'did you mean' hint listing the closest valid names (or all of them)."""
    valid = sorted(set(valid))
    near = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(v) for v in near) + "?"
    return "valid names: " + ", ".join(valid)


def fmt_path(path: tuple) -> str:
    """A config key path as written in YAML: ``('rewards', 0, 'params')`` -> rewards[0].params."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def validation_message(err: dict, loc: tuple, where: str, valid: list[str]) -> str:
    """One line for one pydantic error ``err`` (an item of ``ValidationError.errors()``) at key
    path ``loc``, set in ``where``; ``valid``: the names valid beside an unknown key."""
    if err["type"] == "extra_forbidden":
        hint = closest(str(loc[-1]), valid) if valid else "no keys are valid here"
        return f"{where}: unknown key '{fmt_path(loc)}'; {hint}"
    return f"{where}: key '{fmt_path(loc)}': {err['msg']} (got {err.get('input')!r})"
