"""Suggestions for misspelt names: one rule for the engine, the spec models and providers.

Everything that says 'Did you mean "X"?' (an unknown attribute, variable, provider
argument, instance type, --target) asks `closest` here, so suggestions read the same
everywhere.  It lives in `specs` because that is the one package every layer may import.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, or None when none is close (difflib ratio >= 0.6)."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'Did you mean "X"?' for the closest choice, or "" when none is close."""
    match = closest(word, choices)
    return f'Did you mean "{match}"?' if match else ""
