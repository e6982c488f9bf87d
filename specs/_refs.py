"""Resource references: address parsing, reference types and projection.

In the engine a whole-object reference such as ``model = model.fraud``
evaluates to a dict of the referenced object's attributes plus
``"__ref__": "model.fraud"``.  This module gives the pydantic types that
accept such values (or a plain address string, or a URI where that makes
sense) and `project_refs`, which shrinks them to what a provider needs.

Nothing here imports mlform (DESIGN.md section 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping  # not typing.Mapping: isinstance on it is ~5x slower
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema

__all__ = [
    "REF_KEY", "REF_PROJECTION", "split_address", "address_kind", "looks_like_address",
    "is_ref",
    "ref", "Ref", "project_refs",
]

#: The key that marks an evaluated whole-object reference.
REF_KEY = "__ref__"

#: Resource kinds, in dependency order.
RESOURCE_KINDS = ("dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor")

#: Attributes kept by `project_refs`, by the kind of the referenced object.
REF_PROJECTION: dict[str, tuple[str, ...]] = {
    "dataset": ("uri", "digest", "format"),
    "training_cluster": ("accelerator", "gpus_per_node", "nodes", "instance_type"),
    "pipeline": ("model_uri", "fingerprint"),
    "model": ("uri", "version", "stage", "framework", "approval"),
    "endpoint": ("url", "model_version"),
    "monitor": (),
}


#: One ``[...]`` index (a quoted key or a bare number/word) that ends the text.
_TAIL_INDEX = re.compile(r'\[(?:"(?:[^"\\]|\\.)*"|[^\[\]"]*)\]\Z')


def split_address(address: str) -> list[str]:
    """Split an address on the dots that are outside ``[...]`` and quotes.

    >>> split_address('module.m.dataset.x["a.b"]')
    ['module', 'm', 'dataset', 'x["a.b"]']
    """
    # Fast path for the common shapes (no index, or one index at the very end): a plan
    # of 10,000 instances asks this for every reference, and the general scan is slow.
    cut = address.find("[")
    if cut < 0:
        if '"' not in address:
            return address.split(".")
    elif '"' not in address[:cut] and _TAIL_INDEX.match(address, cut):
        parts = address[:cut].split(".")
        parts[-1] += address[cut:]
        return parts
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quote = False
    i = 0
    while i < len(address):
        ch = address[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < len(address):
                current.append(address[i + 1])
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            current.append(ch)
        elif ch == "[":
            depth += 1
            current.append(ch)
        elif ch == "]":
            depth = max(0, depth - 1)
            current.append(ch)
        elif ch == "." and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _strip_index(segment: str) -> str:
    cut = segment.find("[")
    return segment if cut < 0 else segment[:cut]


def address_kind(address: str) -> str | None:
    """The kind of the object an address names, or None if it has no kind part.

    The kind is the segment before the name: ``model.fraud`` -> ``model``,
    ``module.churn.dataset.x["k"]`` -> ``dataset``.
    """
    if not isinstance(address, str):
        return None
    parts = split_address(address)
    if len(parts) < 2 or not all(parts):
        return None
    return _strip_index(parts[-2]) or None


_ADDRESS = re.compile(
    r"^(module\.[A-Za-z_][A-Za-z0-9_-]*(\[[^\]]*\])?\.)*"
    r"[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_-]*(\[[^\]]*\])?$")


def looks_like_address(text: str) -> bool:
    """True when `text` has the shape of a resource address (``KIND.NAME[...]``)."""
    return isinstance(text, str) and bool(_ADDRESS.match(text))


def is_ref(value: Any) -> bool:
    """True for an evaluated whole-object reference (a dict with ``__ref__``)."""
    return isinstance(value, Mapping) and REF_KEY in value


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f'"{text}"'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kinds_text(kinds: tuple[str, ...]) -> str:
    if not kinds:
        return "resource"
    return " or ".join(kinds)


def ref(*kinds: str, allow_uri: bool = False, description: str | None = None) -> Any:
    """An annotated type for a reference to a resource of one of `kinds`.

    Accepts an evaluated reference (a dict with ``__ref__`` whose address has
    one of `kinds`; no kinds = any kind), a plain address string such as
    ``"model.fraud"``, and, with `allow_uri`, any other non-empty string (a
    path or URI).  Values are kept as given.
    """

    def check(value: Any) -> Any:
        if is_ref(value):
            address = value[REF_KEY]
            if not isinstance(address, str):
                raise ValueError("a reference must carry its address as a string")
            kind = address_kind(address)
            if kinds and kind not in kinds:
                raise ValueError(f"expected a reference to a {_kinds_text(kinds)}, got {address}")
            return value
        if isinstance(value, str):
            kind = address_kind(value) if looks_like_address(value) else None
            if kind in RESOURCE_KINDS:
                if kinds and kind not in kinds:
                    raise ValueError(
                        f"expected a reference to a {_kinds_text(kinds)}, got {value}")
                return value
            if allow_uri and value.strip():
                return value
        example = f"{kinds[0]}.NAME" if kinds else "KIND.NAME"
        also = " or a path/URI" if allow_uri else ""
        raise ValueError(
            f"expected a reference to a {_kinds_text(kinds)} such as {example}{also}, "
            f"got {_show(value)}")

    what = _kinds_text(kinds)
    example = f"{kinds[0]}.NAME" if kinds else "KIND.NAME"
    text = description or (
        f"Reference to a {what} (`{example}` in HCL, `${{{example}}}` in YAML/JSON)"
        + (", or a path/URI." if allow_uri else "."))
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "description": text}
    if not allow_uri:
        pattern_kinds = "|".join(kinds) if kinds else "[a-z_]+"
        schema["pattern"] = (
            r"^(\$\{.*\}|(module\.[A-Za-z_][A-Za-z0-9_-]*(\[[^\]]*\])?\.)*"
            rf"({pattern_kinds})\.[A-Za-z_][A-Za-z0-9_-]*(\[[^\]]*\])?)$")
    # The JSON Schema of a reference field: referenced kinds ride along for tools.
    schema["x-mlform-ref"] = list(kinds)
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


#: A reference to a resource of any kind.
Ref = ref()


#: Values `project_refs` returns as they are; skipping the call for them is much cheaper.
_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None)})


def project_refs(value: Any) -> Any:
    """Replace every evaluated reference inside `value` by a compact dict.

    A dict holding ``__ref__`` becomes ``{"address": ADDR, **subset}`` where
    subset keeps only the attributes that matter for the referenced kind (see
    `REF_PROJECTION`) and are present.  References to things that are not
    resources (module outputs, for instance) keep all their attributes.
    Lists, tuples and dicts are walked; other values are returned as they are.
    """
    if isinstance(value, Mapping):
        if REF_KEY in value:
            address = value[REF_KEY]
            kind = address_kind(address) if isinstance(address, str) else None
            out: dict[str, Any] = {"address": address}
            if kind in REF_PROJECTION:
                keep = REF_PROJECTION[kind]
                for key in keep:
                    if key in value:
                        out[key] = project_refs(value[key])
            else:
                for key, item in value.items():
                    if key != REF_KEY:
                        out[key] = project_refs(item)
            return out
        return {key: item if type(item) in _PLAIN_LEAVES else project_refs(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [item if type(item) in _PLAIN_LEAVES else project_refs(item) for item in value]
    if isinstance(value, tuple):
        return tuple(project_refs(item) for item in value)
    return value
