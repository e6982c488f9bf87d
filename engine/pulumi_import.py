"""`mlform import-state pulumi FILE`: what of a Pulumi stack mlform can take over.

FILE is a ``pulumi stack export`` document (checked against `StackExport`; a file that
is not one is a diagnostic naming the file, and the line for broken JSON).  Each
provider of the stack environment says which of its resources are objects it manages
(`Provider.pulumi_claims`): the one resource per mlform address that ``mlform import``
takes, and the resources that are parts of it (or, for objects a provider recognises but
can adopt only by making its own, none: they are to re-create).  The answer
(`ImportProposal`) lists the ``mlform import ADDRESS ID`` commands, whether each address
has a block in the spec yet (import needs one) or is already in the state, the parts
that come along, those to re-create, and every resource with no mlform equivalent.  Pulumi's own resources (the stack, provider
instances) are counted, not reported.  Nothing is written: the commands are for a
person (or a script) to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlform.diagnostics import DiagnosticError
from mlform.providers.base import PulumiClaim

__all__ = ["StackExport", "ImportProposal", "Proposed", "Part", "Recreate", "Unmatched",
           "read_export", "propose", "propose_for"]


class ExportedResource(BaseModel):
    """One entry of ``deployment.resources`` (the fields mlform reads)."""

    model_config = ConfigDict(extra="allow")
    urn: str
    type: str
    id: str | None = None
    custom: bool = True
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)


class Deployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    resources: list[ExportedResource] = Field(default_factory=list)


class StackExport(BaseModel):
    """A ``pulumi stack export`` document (version 3)."""

    model_config = ConfigDict(extra="allow")
    version: int
    deployment: Deployment


class Proposed(BaseModel):
    """One ``mlform import`` to run."""

    address: str
    kind: str
    id: str
    urn: str
    type: str
    command: str
    in_spec: bool = Field(description="the spec has a block for the address (import needs one)")
    managed: bool = Field(description="the state already manages the address")
    note: str = ""


class Part(BaseModel):
    """A resource that comes along with an imported address."""

    urn: str
    type: str
    address: str
    note: str = ""


class Recreate(BaseModel):
    """A resource a provider recognises as an mlform kind but cannot import (made outside
    mlform, where the provider adopts only what it made): write the block and apply."""

    urn: str
    type: str
    address: str
    kind: str
    note: str = ""


class Unmatched(BaseModel):
    """A resource with no mlform equivalent."""

    urn: str
    type: str


class ImportProposal(BaseModel):
    """`mlform import-state pulumi --format json`."""

    file: str
    imports: list[Proposed]
    parts: list[Part]
    recreate: list[Recreate] = Field(
        default_factory=list, description="recognised, but only a new object under mlform "
                                          "can replace them")
    unmatched: list[Unmatched]
    pulumi_internal: int = Field(description="the stack and provider resources, skipped")


def read_export(path: Path) -> StackExport:
    """The stack export in `path`, or the diagnostic saying what is wrong with it."""
    hint = "Give the output of `pulumi stack export --file FILE`."
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot read {path}: {exc.strerror}", hint=hint)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DiagnosticError.single(f"{path} is not JSON: {exc.msg}",
                                     detail=f"at {path}:{exc.lineno}:{exc.colno}", hint=hint)
    try:
        return StackExport.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise DiagnosticError.single(f"{path} is not a Pulumi stack export: {where}: "
                                     f"{first['msg']}", hint=hint)


def _internal(r: ExportedResource) -> bool:
    return not r.custom or r.type.startswith("pulumi:")


def propose(file: str, export: StackExport, providers: list[Any], *, blocks: set[str],
            managed: set[str]) -> ImportProposal:
    """Pure: the proposal for `export` from the providers' claims.  The first provider
    claiming a resource has it.  `blocks` are the spec's resource blocks (an import's
    address names one: count/for_each instances by their key without the index),
    `managed` the addresses in the state."""
    resources = [r for r in export.deployment.resources if not _internal(r)]
    docs = [r.model_dump(mode="json") for r in resources]
    claims: dict[str, PulumiClaim] = {}
    for provider in providers:
        for claim in provider.pulumi_claims(docs):
            claims.setdefault(claim.urn, claim)
    imports: list[Proposed] = []
    parts: list[Part] = []
    recreate: list[Recreate] = []
    unmatched: list[Unmatched] = []
    importable = {c.address for c in claims.values() if c.import_id is not None}
    for r in resources:
        claim = claims.get(r.urn)
        if claim is None:
            unmatched.append(Unmatched(urn=r.urn, type=r.type))
        elif claim.import_id is None and claim.address in importable:
            parts.append(Part(urn=r.urn, type=r.type, address=claim.address, note=claim.note))
        elif claim.import_id is None:
            recreate.append(Recreate(urn=r.urn, type=r.type, address=claim.address,
                                     kind=claim.kind, note=claim.note))
        else:
            imports.append(Proposed(
                address=claim.address, kind=claim.kind, id=claim.import_id, urn=r.urn,
                type=r.type, command=f"mlform import {claim.address} {_quoted(claim.import_id)}",
                in_spec=_block_of(claim.address) in blocks, managed=claim.address in managed,
                note=claim.note))
    return ImportProposal(file=file, imports=imports, parts=parts, recreate=recreate,
                          unmatched=unmatched,
                          pulumi_internal=len(export.deployment.resources) - len(resources))


def _quoted(value: str) -> str:
    import shlex
    return shlex.quote(value)


def propose_for(session, path: Path) -> ImportProposal:
    """Read the export and the session's state; ask the stack's providers."""
    from mlform import operations
    export = read_export(path)
    state = operations.load_state(session, recover=False)
    providers = session.provider_set(state)
    keys = sorted({session.provider_key_for(node.config) for node in session.graph.resources()})
    return propose(str(path), export, [providers.get(k) for k in keys],
                   blocks={node.key for node in session.graph.resources()},
                   managed=set(state.resources))


def _block_of(address: str) -> str:
    from mlform.addresses import AddressError, parse_address
    try:
        return parse_address(address).config_key
    except AddressError:   # an address made from a name mlform cannot parse
        return address
