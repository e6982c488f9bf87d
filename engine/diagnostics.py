"""Diagnostics: the one way user-facing errors and warnings leave the engine.

Library code never prints or exits; it collects `Diagnostic` values (or raises
`DiagnosticError` carrying them) and the CLI renders them as
``error: <summary>`` / ``  at FILE:LINE:COL`` / detail / hint.  `Diagnostic`,
`SourceRange`, `error` and `warning` are the provider contract's
(`mlform.providers.base`), re-exported here for the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

# The types themselves belong to the provider contract, which both the engine and the
# providers build on (providers may not import the engine).
from mlform.providers.base import Diagnostic, SourceRange, error, warning


@dataclass
class DiagnosticError(Exception):
    """Raised to stop an operation; carries every diagnostic gathered so far."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__("; ".join(d.summary for d in self.diagnostics))

    @classmethod
    def single(cls, summary: str, detail: str = "", **kw) -> "DiagnosticError":
        return cls([error(summary, detail, **kw)])


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """True when one of them is an error (warnings never stop anything)."""
    return any(d.severity == "error" for d in diagnostics)


class Diagnostics(list):
    """A list of diagnostics with the two questions callers always ask."""

    def has_errors(self) -> bool:
        return has_errors(self)

    def raise_if_errors(self) -> None:
        if self.has_errors():
            raise DiagnosticError(list(self))

    def extend_from(self, items: Iterable[Diagnostic]) -> None:
        self.extend(items)


__all__ = ["Diagnostic", "SourceRange", "error", "warning", "DiagnosticError", "Diagnostics",
           "has_errors"]
