"""The state document: what mlform believes exists, as plain data (DESIGN section 4).

A `State` is the parsed form of ``<stack>/.mlform/state/<env>.json``::

    {"version": 1, "serial": N, "lineage": UUID, "mlform_version": "...",
     "resources": [{"address", "kind", "name", "module", "index_key", "provider", "id",
                    "attributes", "sensitive_paths", "dependencies", "status"}],
     "outputs": {name: {"value": ..., "sensitive": bool}}}

`lineage` is fixed when a state is first created and never changes; `serial` grows by
one each time the content (resources and outputs) changes, so a plan can tell that the
state it was made against has moved.  Parsing is strict and never lets a raw
KeyError/TypeError out: a malformed document raises `StateError` naming the file and
the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlform import __version__ as MLFORM_VERSION
from mlform.diagnostics import Diagnostic, error

STATE_VERSION = 1
STATUSES = ("ok", "tainted")


class StateError(Exception):
    """A state file or backend problem, reported to the user as one diagnostic."""

    def __init__(self, summary: str, detail: str = "", hint: str = "") -> None:
        super().__init__(f"{summary}: {detail}" if detail else summary)
        self.summary = summary
        self.detail = detail
        self.hint = hint

    def diagnostic(self) -> Diagnostic:
        return error(self.summary, self.detail, hint=self.hint)


def _clone(value: Any) -> Any:
    """Copy of nested JSON data; several times faster than copy.deepcopy on a big state.
    Leaves (str, numbers, markers) are immutable and shared."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


# Built once: json.dumps with options builds a new encoder per call, which shows when a
# 10,000-resource state is encoded a resource at a time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
_SNAPSHOT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces): the input of digests and hashes."""
    return _CANONICAL.encode(value)


# --- validation helpers: each failure names the source and the field -------------------

def _fail(source: str, what: str) -> StateError:
    return StateError(f"Invalid state in {source}", what,
                      hint="Fix the file by hand, or restore the .backup kept next to it.")


def _need(doc: dict, key: str, types: type | tuple, source: str, where: str,
          default: Any = ...) -> Any:
    if key not in doc:
        if default is ...:
            raise _fail(source, f"{where}: missing field {key!r}")
        return copy.copy(default)
    value = doc[key]
    # bool is an int subclass; a serial of `true` is still wrong.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise _fail(source, f"{where}: field {key!r} has the wrong type "
                            f"({type(value).__name__}: {value!r:.60})")
    return value


def _tuple(types: type | tuple) -> tuple:
    return types if isinstance(types, tuple) else (types,)


@dataclass
class ResourceState:
    """One managed object as last recorded after apply, refresh or import."""

    address: str
    kind: str
    name: str
    module: str = ""                      # "" for the root module, else "module.churn"
    index_key: str | int | None = None    # for_each key or count index
    provider: str = ""                    # "memory" or "memory.alias"
    id: str | None = None                 # the provider's id of the live object
    attributes: dict = field(default_factory=dict)
    sensitive_paths: list[list] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    status: str = "ok"                    # "ok" | "tainted"
    #: objects a create_before_destroy replacement made obsolete but has not deleted yet
    #: (its delete was interrupted): ``{"id", "attributes"}`` each; the next plan
    #: deletes them.  Written only when there are some.
    deposed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        doc = {
            "address": self.address, "kind": self.kind, "name": self.name,
            "module": self.module, "index_key": self.index_key, "provider": self.provider,
            "id": self.id, "attributes": self.attributes,
            "sensitive_paths": [list(p) for p in self.sensitive_paths],
            "dependencies": list(self.dependencies), "status": self.status,
        }
        if self.deposed:
            doc["deposed"] = [dict(d) for d in self.deposed]
        return doc

    def copy(self) -> "ResourceState":
        return ResourceState(self.address, self.kind, self.name, self.module, self.index_key,
                             self.provider, self.id, _clone(self.attributes),
                             [list(p) for p in self.sensitive_paths], list(self.dependencies),
                             self.status, [_clone(d) for d in self.deposed])

    @property
    def holds_only_deposed(self) -> bool:
        """A placeholder kept for its deposed objects: the object itself is gone."""
        return self.id is None and not self.attributes and bool(self.deposed)

    def with_deposed(self, deposed: list[dict]) -> "ResourceState":
        """This resource with another list of deposed objects (a new object)."""
        found = copy.copy(self)
        found.deposed = [dict(d) for d in deposed]
        return found

    @classmethod
    def from_json(cls, doc: Any, source: str = "state", where: str = "resource") -> "ResourceState":
        if not isinstance(doc, dict):
            raise _fail(source, f"{where}: expected an object, got {type(doc).__name__}")
        address = _need(doc, "address", str, source, where)
        where = f"resource {address!r}"
        paths = _need(doc, "sensitive_paths", list, source, where, [])
        for p in paths:
            if not isinstance(p, list) or not all(
                    isinstance(s, (str, int)) and not isinstance(s, bool) for s in p):
                raise _fail(source, f"{where}: sensitive_paths entries must be lists of "
                                    f"keys and indexes, got {p!r:.60}")
        deps = _need(doc, "dependencies", list, source, where, [])
        if not all(isinstance(d, str) for d in deps):
            raise _fail(source, f"{where}: dependencies must be a list of addresses")
        status = _need(doc, "status", str, source, where, "ok")
        if status not in STATUSES:
            raise _fail(source, f"{where}: status must be one of {STATUSES}, got {status!r}")
        deposed = _need(doc, "deposed", list, source, where, [])
        if not all(isinstance(d, dict) and isinstance(d.get("id"), str)
                   and isinstance(d.get("attributes", {}), dict) for d in deposed):
            raise _fail(source, f"{where}: deposed entries must be objects with an id")
        return cls(
            address=address,
            kind=_need(doc, "kind", str, source, where),
            name=_need(doc, "name", str, source, where),
            module=_need(doc, "module", str, source, where, ""),
            index_key=_need(doc, "index_key", (str, int, type(None)), source, where, None),
            provider=_need(doc, "provider", str, source, where),
            id=_need(doc, "id", (str, type(None)), source, where, None),
            attributes=_need(doc, "attributes", dict, source, where, {}),
            sensitive_paths=paths, dependencies=deps, status=status, deposed=deposed,
        )


@dataclass
class State:
    """The whole state of one stack environment."""

    serial: int
    lineage: str
    mlform_version: str = MLFORM_VERSION
    resources: dict[str, ResourceState] = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)   # name -> {"value": ..., "sensitive": bool}
    version: int = STATE_VERSION

    @classmethod
    def new(cls) -> "State":
        return cls(serial=0, lineage=str(uuid.uuid4()))

    # --- access -----------------------------------------------------------------------

    def get(self, address: str) -> ResourceState | None:
        return self.resources.get(address)

    def set(self, resource: ResourceState) -> None:
        self.resources[resource.address] = resource

    def remove(self, address: str) -> ResourceState | None:
        return self.resources.pop(address, None)

    def copy(self) -> "State":
        return State(serial=self.serial, lineage=self.lineage,
                     mlform_version=self.mlform_version,
                     resources={a: r.copy() for a, r in self.resources.items()},
                     outputs=_clone(self.outputs), version=self.version)

    # --- JSON -------------------------------------------------------------------------

    def _content(self) -> dict:
        return {"resources": [self.resources[a].to_json() for a in sorted(self.resources)],
                "outputs": self.outputs}

    def to_json(self) -> dict:
        # Sorted by address so the same content always produces the same file.
        return {"version": self.version, "serial": self.serial, "lineage": self.lineage,
                "mlform_version": self.mlform_version, **self._content()}

    def dumps(self) -> str:
        """The file text: one resource per line, so files diff well and encode fast.

        (json.dumps with ``indent`` falls back to the pure-Python encoder, several times
        slower on a large state; encoding each resource compactly keeps the C encoder.)
        """
        enc = _SNAPSHOT.encode      # what json.dumps(v, sort_keys=True, ...) writes

        doc = self.to_json()
        head = ",\n".join(f"  {enc(k)}: {enc(doc[k])}"
                          for k in ("version", "serial", "lineage", "mlform_version"))
        res = ",\n".join("    " + enc(r) for r in doc["resources"])
        outs = ",\n".join(f"    {enc(k)}: {enc(v)}" for k, v in sorted(self.outputs.items()))
        return (f"{{\n{head},\n  \"resources\": [" + (f"\n{res}\n  " if res else "")
                + "],\n  \"outputs\": {" + (f"\n{outs}\n  " if outs else "") + "}\n}\n")

    @classmethod
    def from_json(cls, doc: Any, source: str = "state") -> "State":
        """Parse and validate a state document; `source` names it in errors."""
        if not isinstance(doc, dict):
            raise _fail(source, f"expected a JSON object at the top, got {type(doc).__name__}")
        version = _need(doc, "version", int, source, "document")
        if version != STATE_VERSION:
            raise StateError(
                f"Unsupported state version in {source}",
                f"the file has version {version}; this mlform ({MLFORM_VERSION}) reads "
                f"version {STATE_VERSION}",
                hint="Use the mlform release that wrote this state." if version > STATE_VERSION
                else "")
        serial = _need(doc, "serial", int, source, "document")
        if serial < 0:
            raise _fail(source, f"document: serial must not be negative, got {serial}")
        lineage = _need(doc, "lineage", str, source, "document")
        if not lineage:
            raise _fail(source, "document: lineage is empty")
        resources: dict[str, ResourceState] = {}
        for i, entry in enumerate(_need(doc, "resources", list, source, "document", [])):
            r = ResourceState.from_json(entry, source, where=f"resources[{i}]")
            if r.address in resources:
                raise _fail(source, f"resource {r.address!r} appears twice")
            resources[r.address] = r
        outputs = _need(doc, "outputs", dict, source, "document", {})
        for name, out in outputs.items():
            if not isinstance(out, dict) or "value" not in out:
                raise _fail(source, f"output {name!r}: expected {{\"value\": ..., "
                                    f"\"sensitive\": bool}}")
            if not isinstance(out.get("sensitive", False), bool):
                raise _fail(source, f"output {name!r}: sensitive must be true or false")
        return cls(serial=serial, lineage=lineage,
                   mlform_version=_need(doc, "mlform_version", str, source, "document", ""),
                   resources=resources, outputs=outputs, version=version)

    def content_digest(self) -> str:
        """sha256 of resources + outputs: equal digests mean the serial need not move."""
        try:
            text = canonical_json(self._content())
        except (TypeError, ValueError) as exc:
            raise self._unstorable(exc) from None
        return hashlib.sha256(text.encode()).hexdigest()

    def _unstorable(self, exc: Exception) -> StateError:
        """Name the resource or output holding a value JSON cannot store (an unknown, a
        Sensitive wrapper, a NaN...): a bug upstream, but the user should see where."""
        for address, r in self.resources.items():
            try:
                canonical_json(r.to_json())
            except (TypeError, ValueError):
                return StateError(f"Cannot store {address} in the state",
                                  f"a value is not plain JSON data: {exc}")
        return StateError("Cannot store the outputs in the state",
                          f"a value is not plain JSON data: {exc}")
