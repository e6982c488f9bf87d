"""Evaluation scope: the root names an expression can refer to.

A `Scope` maps root names (`var`, `local`, `module`, `each`, `count`, `path`,
and the resource kinds such as `dataset`) to values, and knows the stack
directory that `file()` and friends resolve paths against.

Scopes form a chain: `child()` adds names (`each`, `count`, or the iteration
variables of a `for` expression) in O(1) by pointing at its parent instead of
copying it, because a plan evaluates the same expressions for thousands of
`for_each` instances.
"""

from __future__ import annotations

from collections import ChainMap
from pathlib import Path
from typing import Any, Mapping

from mlform.diagnostics import SourceRange
from mlform.expr.errors import ExprError, suggest

__all__ = ["Scope"]

_EMPTY: Mapping[str, Any] = {}


class Scope:
    """Root names visible to an expression, plus the base directory for file functions.

    The mapping passed in is kept by reference (not copied), so a caller may
    keep filling it in, e.g. as resources are planned.
    """

    __slots__ = ("_roots", "_parent", "base_dir")

    def __init__(self, variables: Mapping[str, Any] | None = None,
                 base_dir: Path | str | None = None) -> None:
        self._roots: Mapping[str, Any] = variables if variables is not None else {}
        self._parent: Scope | None = None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(".")

    @property
    def variables(self) -> Mapping[str, Any]:
        """Every visible root name, nearest scope first."""
        if self._parent is None:
            return self._roots
        maps = []
        scope: Scope | None = self
        while scope is not None:
            maps.append(scope._roots)
            scope = scope._parent
        return ChainMap(*maps)  # type: ignore[arg-type]

    def child(self, roots: Mapping[str, Any] | None = None, /, **more: Any) -> "Scope":
        """A scope that adds (or shadows) root names; O(1), the parent is not copied.

        ``scope.child(each={"key": k, "value": v})`` or ``scope.child({"x": 1})``.
        """
        if roots is None:
            roots = more
        elif more:
            roots = {**roots, **more}
        scope = Scope.__new__(Scope)
        scope._roots = roots
        scope._parent = self
        scope.base_dir = self.base_dir
        return scope

    def lookup(self, name: str, source: SourceRange | None = None) -> Any:
        """The value of root `name`; raises `ExprError` naming the valid roots."""
        scope: Scope | None = self
        while scope is not None:
            roots = scope._roots
            if name in roots:
                return roots[name]
            scope = scope._parent
        raise ExprError(
            f'Unknown name "{name}"',
            f'There is no variable, resource kind or other root named "{name}" here.',
            source,
            hint=self._hint(name),
        )

    def _hint(self, name: str) -> str:
        names = self.names()
        close = suggest(name, names, listing=0)
        valid = "Valid names here: " + ", ".join(names) + "." if names else ""
        return " ".join(part for part in (close, valid) if part)

    def __contains__(self, name: object) -> bool:
        scope: Scope | None = self
        while scope is not None:
            if name in scope._roots:
                return True
            scope = scope._parent
        return False

    def names(self) -> list[str]:
        """Sorted list of every visible root name."""
        seen: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            seen.update(scope._roots)
            scope = scope._parent
        return sorted(seen)

    def __repr__(self) -> str:
        return f"Scope({self.names()!r}, base_dir={str(self.base_dir)!r})"
