"""Diagnostics: the one way user-facing errors and warnings leave the engine.

Library code never prints or exits; it collects `Diagnostic` values (or raises
`DiagnosticError` carrying them) and the CLI renders them as
``error: <summary>`` / ``  at FILE:LINE:COL`` / detail / hint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class SourceRange:
    """Where in the spec a diagnostic points (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in the spec, the state or a provider answer."""

    severity: str  # "error" | "warning"
    summary: str
    detail: str = ""
    source: SourceRange | None = None
    address: str | None = None
    hint: str = ""

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "summary": self.summary, "detail": self.detail}
        if self.address:
            out["address"] = self.address
        if self.source:
            out["range"] = {
                "filename": self.source.file,
                "start": {"line": self.source.line, "column": self.source.column},
            }
        if self.hint:
            out["hint"] = self.hint
        return out


def error(summary: str, detail: str = "", *, source: SourceRange | None = None,
          address: str | None = None, hint: str = "") -> Diagnostic:
    return Diagnostic("error", summary, detail, source, address, hint)


def warning(summary: str, detail: str = "", *, source: SourceRange | None = None,
            address: str | None = None, hint: str = "") -> Diagnostic:
    return Diagnostic("warning", summary, detail, source, address, hint)


@dataclass
class DiagnosticError(Exception):
    """Raised to stop an operation; carries every diagnostic gathered so far."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__("; ".join(d.summary for d in self.diagnostics))

    @classmethod
    def single(cls, summary: str, detail: str = "", **kw) -> "DiagnosticError":
        return cls([error(summary, detail, **kw)])


class Diagnostics(list):
    """A list of diagnostics with the two questions callers always ask."""

    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self)

    def raise_if_errors(self) -> None:
        if self.has_errors():
            raise DiagnosticError(list(self))

    def extend_from(self, items: Iterable[Diagnostic]) -> None:
        self.extend(items)
