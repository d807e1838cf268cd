"""User-facing errors: one line that says what, where, and what would be right."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by input (config, dataset row, model output, checkpoint), not by a bug.

    The CLI prints it as one line without a traceback (``--traceback`` shows it).
    """


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """Return a 'did you mean' hint listing the closest valid names (or all of them)."""
    valid = sorted(set(valid))
    near = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(v) for v in near) + "?"
    return "valid names: " + ", ".join(valid)
