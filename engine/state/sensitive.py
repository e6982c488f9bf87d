"""Sensitive values in the state: kept as a keyed hash, never in clear.

At each sensitive path of a resource's attributes (and for each sensitive output) the
state stores ``"(sensitive:hmac-sha256:<hex>)"`` where hex is HMAC-SHA256 keyed with the
state's lineage over the canonical JSON of the value.  The key makes the hash useless
for guessing a value across states (a rainbow table built for one lineage does not
apply to another) while two writes of the same value into one state compare equal, which
is all the planner needs to detect a change.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from typing import Any, Iterable

from mlform.expr.values import Sensitive, get_path, set_path
from mlform.state.model import ResourceState, canonical_json

_PREFIX = "(sensitive:hmac-sha256:"
_MARKER = re.compile(r"\(sensitive:hmac-sha256:[0-9a-f]{64}\)\Z")
_MISSING = object()


def hash_value(value: Any, key: str) -> str:
    """The marker that stands for `value` in a state keyed by `key` (its lineage)."""
    if isinstance(value, Sensitive):
        value = value.value
    digest = hmac.new(key.encode(), canonical_json(value).encode(), hashlib.sha256)
    return f"{_PREFIX}{digest.hexdigest()})"


def is_marker(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX) and bool(_MARKER.match(value))


def mask(attributes: dict, paths: Iterable, key: str) -> dict:
    """A copy of `attributes` with the value at each path replaced by its marker.

    Values already masked are left alone (so masking twice is harmless); a path that
    does not exist is skipped.  Containers are copied along each path only, the rest is
    shared with the input, which is never modified.  Shorter paths are masked first, so
    a sensitive map hides its sensitive members too.  The empty path marks the whole
    object: every top-level value is masked.
    """
    out = dict(attributes)
    for path in sorted((tuple(p) for p in paths), key=len):
        if not path:
            for k, v in out.items():
                if not is_marker(v):
                    out[k] = hash_value(v, key)
            continue
        current = get_path(out, path, _MISSING)
        if current is _MISSING or is_marker(current):
            continue
        out = set_path(out, path, hash_value(current, key))
    return out


def seal(resource: ResourceState, key: str) -> ResourceState:
    """`resource` as it may be stored: sensitive paths masked (same object if none)."""
    if not resource.sensitive_paths:
        return resource
    sealed = copy.copy(resource)   # dataclasses.replace re-runs __init__: slower
    sealed.attributes = mask(resource.attributes, resource.sensitive_paths, key)
    return sealed


def seal_outputs(outputs: dict, key: str) -> dict:
    """Outputs as they may be stored: the value of each sensitive output masked."""
    out = {}
    for name, o in outputs.items():
        if o.get("sensitive") and not is_marker(o.get("value")):
            o = {**o, "value": hash_value(o.get("value"), key)}
        out[name] = o
    return out
