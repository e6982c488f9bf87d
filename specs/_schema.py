"""JSON Schema (draft 2020-12) of resource blocks and of whole stack files.

The stack-file schema describes the YAML/JSON form of a stack: top-level
keys ``variable``, ``locals``, ``output``, ``provider``, ``module`` and the six
kinds, each a mapping of name to block.  Wherever an expression could stand,
a string holding ``${...}`` is allowed too, so editors accept
``replicas: "${var.replicas}"``.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from ._kinds import KIND_MODELS, Lifecycle

__all__ = ["json_schema", "SCHEMA_DIALECT"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NAME = {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"}
_EXPRESSION = {
    "type": "string",
    "pattern": r"\$\{",
    "description": "An expression: a string holding ${...}.",
}
_EXPR_REF = {"$ref": "#/$defs/Expression"}
_KEEP_OUTSIDE = ("title", "description", "default", "examples", "deprecated")


def _def_name(model: type) -> str:
    return model.__name__


def _allow_inside(schema: Any) -> Any:
    """Return `schema` where every value position *inside* it also accepts an expression."""
    if not isinstance(schema, dict):
        return schema
    inner = dict(schema)
    if "properties" in inner:
        inner["properties"] = {k: _allow_expressions(v) for k, v in inner["properties"].items()}
    if isinstance(inner.get("additionalProperties"), dict):
        inner["additionalProperties"] = _allow_expressions(inner["additionalProperties"])
    if isinstance(inner.get("items"), dict):
        inner["items"] = _allow_expressions(inner["items"])
    for key in ("anyOf", "oneOf"):
        if key in inner:
            inner[key] = [_allow_inside(s) for s in inner[key]]
    return inner


def _allow_expressions(schema: Any) -> Any:
    """Return `schema` accepting an expression string in its place and inside it."""
    if not isinstance(schema, dict):
        return schema
    inner = _allow_inside(schema)
    if inner.get("type") == "string" and not ({"pattern", "enum", "const"} & inner.keys()):
        return inner  # any string already matches an expression
    if not ({"type", "$ref", "anyOf", "oneOf", "enum", "const"} & inner.keys()):
        return inner  # accepts anything already
    outer = {k: inner.pop(k) for k in _KEEP_OUTSIDE if k in inner}
    options = inner.pop("anyOf") if list(inner) == ["anyOf"] else [inner]
    outer["anyOf"] = [*options, _EXPR_REF]
    return outer


def _meta_properties() -> dict[str, Any]:
    lifecycle = _allow_inside(Lifecycle.model_json_schema())
    lifecycle.pop("title", None)
    return {
        "provider": {
            "type": "string",
            "pattern": r"^[a-z][a-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)?$",
            "description": 'Provider configuration to use: "NAME" or "NAME.ALIAS".',
        },
        "depends_on": {
            "type": "array", "items": {"type": "string"},
            "description": "Addresses this resource waits for beyond its references.",
        },
        "for_each": {
            "anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "string"}},
                      _EXPR_REF],
            "description": "One instance per key (map) or element (set of strings).",
        },
        "count": {
            "anyOf": [{"type": "integer", "minimum": 0}, _EXPR_REF],
            "description": "Number of instances.",
        },
        "lifecycle": lifecycle,
    }


def _definitions() -> tuple[dict[str, Any], dict[str, str]]:
    """All `$defs`, and the def name of each kind's block."""
    models = list(KIND_MODELS.values())
    _, top = models_json_schema([(m, "validation") for m in models],
                                ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {name: _allow_inside(s) for name, s in top["$defs"].items()}
    blocks: dict[str, str] = {}
    meta = _meta_properties()
    for kind, model in KIND_MODELS.items():
        base = defs.pop(_def_name(model))
        block = copy.deepcopy(base)
        block["title"] = f"{kind} block"
        block["properties"] = {**block["properties"], **meta}
        block["additionalProperties"] = False
        name = f"{kind}_block"
        defs[name] = block
        blocks[kind] = name
    defs["Expression"] = dict(_EXPRESSION)
    defs["Variable"] = {
        "type": "object",
        "title": "variable block",
        "properties": {
            "type": {"type": "string", "description": "Type constraint: string, number, bool, "
                                                       "list(...), map(...), object(...), any."},
            "default": {"description": "Value used when none is given."},
            "description": {"type": "string"},
            "sensitive": {"type": "boolean", "description": "Never shown or stored in clear."},
            "nullable": {"type": "boolean"},
            "validation": {
                "anyOf": [{"$ref": "#/$defs/VariableValidation"},
                          {"type": "array", "items": {"$ref": "#/$defs/VariableValidation"}}],
            },
        },
        "additionalProperties": False,
    }
    defs["VariableValidation"] = {
        "type": "object",
        "properties": {"condition": {"type": "string"}, "error_message": {"type": "string"}},
        "required": ["condition"],
        "additionalProperties": False,
    }
    defs["Output"] = {
        "type": "object",
        "title": "output block",
        "properties": {
            "value": {"description": "The output's value (usually an expression)."},
            "description": {"type": "string"},
            "sensitive": {"type": "boolean"},
            "depends_on": meta["depends_on"],
        },
        "required": ["value"],
        "additionalProperties": False,
    }
    defs["Module"] = {
        "type": "object",
        "title": "module block",
        "properties": {
            "source": {"type": "string", "minLength": 1,
                       "description": "Path of the module directory, relative to the stack."},
            "providers": {"type": "object", "additionalProperties": {"type": "string"}},
            "depends_on": meta["depends_on"],
            "for_each": meta["for_each"],
            "count": meta["count"],
        },
        "required": ["source"],
        "additionalProperties": True,
        "description": "Other keys are the module's input variables.",
    }
    defs["Policy"] = {
        "type": "object",
        "title": "policy block",
        "properties": {
            "condition": {"description": "Must be true: an expression over plan (and change)."},
            "level": {"description": '"advisory" or "mandatory" (default).'},
            "description": {"type": "string"},
            "message": {"description": "Shown when the condition is false."},
            "enabled": {"description": "Whether the policy is checked (default true)."},
            "kinds": {"type": "array", "items": {"enum": list(KIND_MODELS)}},
            "actions": {"type": "array", "items": {
                "enum": ["create", "update", "replace", "delete", "no-op", "read"]}},
        },
        "required": ["condition"],
        "additionalProperties": False,
        "description": "A condition checked against every plan (docs/gitops.md, Policies).",
    }
    defs["Provider"] = {
        "type": "object",
        "title": "provider block",
        "properties": {"alias": {"type": "string", **_NAME}},
        "additionalProperties": True,
        "description": "Provider configuration; keys depend on the provider.",
    }
    return defs, blocks


def _refs_in(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        target = schema.get("$ref")
        if isinstance(target, str) and target.startswith("#/$defs/"):
            found.add(target[len("#/$defs/"):])
        for value in schema.values():
            found |= _refs_in(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _refs_in(value)
    return found


def _reachable(root: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The `defs` that `root` uses, directly or through other defs."""
    todo, seen = list(_refs_in(root)), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        todo.extend(_refs_in(defs[name]))
    return {name: defs[name] for name in defs if name in seen}


def _named(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "propertyNames": _NAME, "additionalProperties": schema,
            "description": description}


def json_schema(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema of one kind's block, or of a whole stack file when `kind` is None.

    The result is a standalone draft 2020-12 document (``$schema`` and
    ``$defs`` included) usable by editors.  Raises KeyError for an unknown kind.
    """
    defs, blocks = _definitions()
    if kind is not None:
        if kind not in KIND_MODELS:
            raise KeyError(f'unknown resource kind "{kind}"')
        root = defs.pop(blocks[kind])
        return {"$schema": SCHEMA_DIALECT, **root, "$defs": _reachable(root, defs)}
    properties: dict[str, Any] = {
        "$schema": {"type": "string"},
        "variable": _named({"$ref": "#/$defs/Variable"}, "Input variables."),
        "locals": {"type": "object", "propertyNames": _NAME,
                   "description": "Named local values."},
        "output": _named({"$ref": "#/$defs/Output"}, "Stack outputs."),
        "provider": _named(
            {"anyOf": [{"$ref": "#/$defs/Provider"},
                       {"type": "array", "items": {"$ref": "#/$defs/Provider"}}]},
            "Provider configurations by provider name."),
        "module": _named({"$ref": "#/$defs/Module"}, "Module calls."),
        "policy": _named({"$ref": "#/$defs/Policy"}, "Policies checked against every plan."),
    }
    for name, def_name in blocks.items():
        doc = KIND_MODELS[name].__doc__ or ""
        properties[name] = _named({"$ref": f"#/$defs/{def_name}"},
                                  doc.strip().splitlines()[0] if doc else name)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "mlform stack file",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": defs,
    }
