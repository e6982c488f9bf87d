"""The common shape of a provider's plan: what the spec asked, plus what the provider
computes, known now or `UNKNOWN` until apply.

Every `plan` returns the desired attributes with the computed ones added; `planned`
`plan_of` builds that `Planned`, and `computed_or_unknown` gives the computed values when what
they depend on is known at plan time and `UNKNOWN` otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from mlform.providers.base import UNKNOWN, Desired, Planned, contains_unknown

__all__ = ["plan_of", "unknowns", "computed_or_unknown"]


def unknowns(names: Iterable[str]) -> dict[str, Any]:
    """`{name: UNKNOWN}` for each name: values known only after apply."""
    return dict.fromkeys(names, UNKNOWN)


def computed_or_unknown(attrs: Mapping[str, Any], inputs: Iterable[str], names: Iterable[str],
                        compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """`compute()` when the attributes it reads (`inputs`) are known, else every one of
    `names` UNKNOWN."""
    if contains_unknown([attrs.get(k) for k in inputs]):
        return unknowns(names)
    return dict(compute())


def plan_of(desired: Desired, computed: Mapping[str, Any] | None = None, *,
            reasons: Iterable[str] = (), replace_paths: Iterable[str] = ()) -> Planned:
    """The plan of `desired`: its attributes with `computed` laid over them."""
    return Planned(desired.address, desired.kind, desired.name,
                   {**desired.attributes, **(computed or {})},
                   replace_paths=tuple(replace_paths), reasons=tuple(r for r in reasons if r))
