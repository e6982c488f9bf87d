"""Validation of evaluated resource attributes, with short human messages.

The engine validates attributes that may hold its *unknown* marker (a value
known only after apply).  This package may not import the engine, so the
caller passes `is_unknown`; a field whose value is unknown, or contains
unknown parts, is accepted for type purposes and counts as present.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping  # not typing.Mapping: isinstance on it is ~5x slower
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from ._kinds import COMPUTED, KIND_MODELS, META_ARGUMENTS
from ._words import closest

__all__ = ["Problem", "validate_attributes", "validate_model", "field_names"]

#: One problem: the attribute path (keys and list indexes) and a message.
Problem = tuple[tuple, str]

_SENSITIVE_TEXT = "(sensitive value)"


def field_names(model: type[BaseModel]) -> list[str]:
    """The names a user writes for `model`'s fields (aliases where set)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _suggest(word: str, choices: list[str]) -> str:
    close = closest(word, choices)
    return f'; did you mean "{close}"?' if close else ""


def _show(value: Any) -> str:
    """A short rendering of a value for a message."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(text)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


# ------------------------------------------------------------- walking the model

def _unwrap_type(annotation: Any) -> Any:
    """Strip Annotated and Optional from a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The model class that describes the object found at `path`, if any."""
    current: Any = model
    for segment in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = next((i for n, i in current.model_fields.items()
                         if (i.alias or n) == segment), None)
            if info is None:
                return None
            current = _unwrap_type(info.annotation)
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin in (list, tuple) and args:
            current = _unwrap_type(args[0])
        elif origin is dict and len(args) == 2:
            current = _unwrap_type(args[1])
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


# ----------------------------------------------------------- preparing the input

_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None)})


class _Prepared:
    """The input made ready for pydantic, and what was learnt on the way."""

    def __init__(self, is_unknown: Callable[[Any], bool],
                 unwrap: Callable[[Any], Any] | None) -> None:
        self.is_unknown = is_unknown
        self.unwrap = unwrap
        self.unknown: set[tuple] = set()       # paths whose value is unknown
        self.sensitive: set[tuple] = set()     # paths whose value was wrapped as sensitive

    def walk(self, value: Any, path: tuple) -> tuple[Any, bool]:
        """A copy of `value` with nulls in objects dropped; True if unknown inside."""
        if self.unwrap is not None:
            inner = self.unwrap(value)
            if inner is not value:
                self.sensitive.add(path)
                value = inner
        if self.is_unknown(value):
            self.unknown.add(path)
            return value, True
        has_unknown = False
        # Plain leaves are taken as they are without a recursive call (the same result,
        # much cheaper: the planner validates every instance of every block).
        plain = _PLAIN_LEAVES if self.unwrap is None else ()
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if item is None:  # null means "not set", as in Terraform
                    continue
                if type(item) in plain and not self.is_unknown(item):
                    out[key] = item
                    continue
                out[key], inner_unknown = self.walk(item, path + (key,))
                has_unknown |= inner_unknown
            value = out
        elif isinstance(value, (list, tuple)):
            items = []
            for index, item in enumerate(value):
                if type(item) in plain and not self.is_unknown(item):
                    items.append(item)
                    continue
                new, inner_unknown = self.walk(item, path + (index,))
                items.append(new)
                has_unknown |= inner_unknown
            value = items
        return value, has_unknown

    def hides(self, path: tuple) -> bool:
        """True when an error at `path` may be due to an unknown value.

        Only the unknown value itself and what lies under it are hidden:
        known parts next to unknown ones are still checked, and model-level
        checks only run once every typed field passed, so they never see
        an unknown value.
        """
        return any(path[:n] in self.unknown for n in range(len(path) + 1))

    def is_sensitive(self, path: tuple) -> bool:
        return any(path[:n] in self.sensitive for n in range(len(path) + 1))


# ------------------------------------------------------------------- messages

def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _literal_choices(ctx: Mapping[str, Any]) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))


_SIMPLE: dict[str, str] = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"),
                    "expected an integer, got {shown}"),
    **dict.fromkeys(("float_type", "float_parsing", "finite_number"),
                    "expected a number, got {shown}"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "expected true or false, got {shown}"),
    "string_type": "expected a string, got {shown}",
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type", "mapping_type"),
                    "expected an object, got {shown}"),
    **dict.fromkeys(("list_type", "tuple_type", "iterable_type"),
                    "expected a list, got {shown}"),
    "greater_than_equal": "must be at least {ge}, got {shown}",
    "less_than_equal": "must be at most {le}, got {shown}",
    "greater_than": "must be greater than {gt}, got {shown}",
    "less_than": "must be less than {lt}, got {shown}",
    "string_too_short": "must not be empty",
    "missing": 'attribute "{name}" is required',
}


def _extra(error: Mapping[str, Any], path: tuple, model: type[BaseModel], shown: str) -> str:
    name = str(path[-1]) if path else ""
    parent = _model_at(model, path[:-1])
    choices = field_names(parent) if parent else []
    if parent is model and model in KIND_MODELS.values():
        choices += list(META_ARGUMENTS)
    return f'unknown attribute "{name}"{_suggest(name, choices)}'


def _literal(error: Mapping[str, Any], path: tuple, model: type[BaseModel], shown: str) -> str:
    choices = _literal_choices(error.get("ctx") or {})
    listed = ", ".join(f'"{c}"' for c in choices)
    value = error.get("input")
    hint = _suggest(value, choices) if isinstance(value, str) and shown != _SENSITIVE_TEXT \
        else ""
    return f"expected one of {listed}, got {shown}{hint}"


def _too_short(error: Mapping[str, Any], path: tuple, model: type[BaseModel],
               shown: str) -> str:
    count = (error.get("ctx") or {}).get("min_length", 1)
    return f"must have at least {count} item{'s' if count != 1 else ''}"


def _own_message(error: Mapping[str, Any], path: tuple, model: type[BaseModel],
                 shown: str) -> str:
    text = str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


_SPECIAL: dict[str, Callable[..., str]] = {
    "extra_forbidden": _extra,
    "literal_error": _literal,
    "too_short": _too_short,
    "value_error": _own_message,
    "assertion_error": _own_message,
}


def _message(error: Mapping[str, Any], path: tuple, model: type[BaseModel],
             shown: str) -> str:
    """A short human message for one pydantic error."""
    kind = error["type"]
    if kind in _SPECIAL:
        return _SPECIAL[kind](error, path, model, shown)
    if kind in _SIMPLE:
        ctx = {k: _number(v) for k, v in (error.get("ctx") or {}).items()}
        name = str(path[-1]) if path else ""
        return _SIMPLE[kind].format(shown=shown, name=name, **ctx)
    return str(error.get("msg", "invalid value"))


# ------------------------------------------------------------------ the entry

def validate_attributes(kind: str, attributes: Mapping[str, Any],
                        is_unknown: Callable[[Any], bool] = lambda value: False,
                        *, unwrap: Callable[[Any], Any] | None = None,
                        allow_computed: bool = False) -> list[Problem]:
    """Check a resource's evaluated attributes against its kind's model.

    Returns ``(path, message)`` problems, empty when valid.  `path` is a tuple
    of keys and list indexes (``("rollout", "canary_percent")``).

    * `is_unknown(value)` says whether a value is the engine's unknown marker.
      An unknown value is accepted for type purposes and counts as present;
      in a value with unknown parts only the known parts are checked.
    * `unwrap(value)` may return the clear value of a wrapped one (a
      sensitive marker); such values are validated but never shown.
    * Meta-arguments (``provider``, ``depends_on``, ``for_each``, ``count``,
      ``lifecycle``) are the engine's and are skipped.  Attributes null in
      the input count as not set.
    * Computed attributes are refused unless `allow_computed`, in which
      case they are skipped.
    """
    model = KIND_MODELS.get(kind)
    if model is None:
        return [((), f'unknown resource kind "{kind}"{_suggest(kind, list(KIND_MODELS))}')]
    problems: list[Problem] = []
    computed = COMPUTED.get(kind, ())
    given: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in META_ARGUMENTS:
            continue
        if key in computed:
            if not allow_computed:
                problems.append(((key,), f'attribute "{key}" is computed by the provider '
                                          "and cannot be set"))
            continue
        given[key] = value
    return problems + _check(model, given, is_unknown, unwrap)


def validate_model(model: type[BaseModel], value: Mapping[str, Any],
                   is_unknown: Callable[[Any], bool] = lambda value: False, *,
                   unwrap: Callable[[Any], Any] | None = None) -> list[Problem]:
    """Check a value against any pydantic model the way `validate_attributes` checks a
    resource: unknown parts accepted, nulls as not set, short messages.  The engine
    checks each resource's `settings { }` against its provider's settings model with it.
    """
    return _check(model, value, is_unknown, unwrap)


def _check(model: type[BaseModel], value: Mapping[str, Any],
           is_unknown: Callable[[Any], bool], unwrap: Callable[[Any], Any] | None
           ) -> list[Problem]:
    prepared = _Prepared(is_unknown, unwrap)
    data, _ = prepared.walk(dict(value), ())
    problems: list[Problem] = []
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(error["loc"])
            if prepared.hides(path):
                continue
            shown = (_SENSITIVE_TEXT if prepared.is_sensitive(path)
                     else _show(error.get("input")))
            problems.append((path, _message(error, path, model, shown)))
    return problems
