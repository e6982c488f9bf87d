"""The one exception the expression language raises: `ExprError`.

Every failure while compiling or evaluating an expression - a syntax error, an
unknown name, a bad operand, a function rejecting an argument - becomes an
`ExprError` pointing at the sub-expression that failed, so the caller can turn
it into a `Diagnostic` without knowing anything about the evaluator.
"""

from __future__ import annotations

import difflib
from typing import Iterable

from mlform.diagnostics import Diagnostic, SourceRange


class ExprError(Exception):
    """A user-facing error in an expression, with Terraform-like wording."""

    def __init__(self, summary: str, detail: str = "", source: SourceRange | None = None,
                 hint: str = "") -> None:
        self.summary = summary
        self.detail = detail
        self.source = source
        self.hint = hint
        super().__init__(summary)

    def __str__(self) -> str:
        text = self.summary
        if self.detail:
            text += ": " + self.detail
        if self.source is not None:
            text = f"{self.source}: {text}"
        return text

    def __repr__(self) -> str:
        return f"ExprError({self.summary!r}, {self.detail!r}, source={self.source!r})"

    def diagnostic(self, address: str | None = None) -> Diagnostic:
        """This error as an error-severity `Diagnostic`."""
        return Diagnostic("error", self.summary, self.detail, self.source, address, self.hint)

    def at(self, source: SourceRange | None) -> "ExprError":
        """Fill in a position when the raiser did not know one (keeps an existing one)."""
        if self.source is None:
            self.source = source
        return self


def suggest(name: str, candidates: Iterable[str], *, listing: int = 12) -> str:
    """A hint naming the close matches of `name`, or listing all candidates when few."""
    names = sorted(set(candidates))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return "Did you mean " + " or ".join(f'"{c}"' for c in close) + "?"
    if not names:
        return ""
    if len(names) <= listing:
        return "Available: " + ", ".join(names) + "."
    return ""
