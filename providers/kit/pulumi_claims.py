"""Claims over a ``pulumi stack export`` document: the provider-neutral half of
`Provider.pulumi_claims` (`mlform import-state pulumi`).

A provider describes, per Pulumi type token it recognises, a `ClaimRule`: the mlform
kind, whether a resource of that type is *the* object ``mlform import ADDRESS ID``
takes (`import_id` set) or only a part of one, and, for parts made outside mlform, how
to find the resource they belong to (`parent`).  `claim_resources` does the rest:

* the address comes from the ownership marks (`kit.names.Owner`: AWS tags through
  `tag_owner`, Kubernetes annotations through `annotation_owner`), and the claim's
  kind from the address; resources marked for another stack or environment are not
  claimed (they are someone else's);
* an unmarked resource of an importable type was made outside mlform: its address is
  made from its name (`address_for`: ``fraud-prod`` -> ``endpoint.fraud_prod``) and its
  note says the spec block must be written before importing it, or, where the provider
  cannot adopt such objects (`adopt_unmarked` False), it has no import id and its note
  says to write the block and apply instead (`mlform import-state` lists it to re-create);
* an unmarked part is claimed for the address of its `parent`, when it has one;
* one claim per address carries the import id; a second importable resource of the
  same address is reported as a part, with a note.

Reading the document: `field` looks a value up in a resource's ``outputs`` then its
``inputs`` (Pulumi keeps camelCase property names there), and answers None for a value
Pulumi stored as a secret.  Nothing here imports a provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as field_
from typing import Any, Callable, Mapping, Sequence

from mlform.providers.base import PulumiClaim

from .names import Owner

__all__ = ["ClaimRule", "claim_resources", "field", "logical_name", "address_for",
           "address_kind", "tag_owner", "annotation_owner"]

Resource = Mapping[str, Any]

#: the key Pulumi marks a secret value with in a stack export
_SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass(frozen=True)
class ClaimRule:
    """How a provider claims the resources of one Pulumi type.

    `import_id` (resource -> the id ``mlform import`` takes, or None for a resource of
    this type that is only a part) makes this type the one an import of its address
    takes; None makes every resource of it a part that comes along.  An unmarked
    resource with an import id is claimed under an address made from its name: offered
    for import, or, with `adopt_unmarked` False (a provider that reads only objects it
    named), without an id and with a note to write the block and apply instead.
    `parent` (resource, all resources -> the resource it belongs to) is asked for
    unmarked parts.  `kind` names the address of an adopted unmarked object; a claim's
    kind is always its address's (one Pulumi type can serve several kinds: an S3 object
    of a dataset, or of a monitor).  `note` goes on every claim.
    """

    kind: str
    import_id: Callable[[Resource], str | None] | None = None
    parent: Callable[[Resource, Sequence[Resource]], Resource | None] | None = None
    adopt_unmarked: bool = True
    note: str = ""


def field(resource: Resource, *path: str) -> Any:
    """The value at `path` in the resource's outputs, else its inputs, else None.

    A secret (a value under Pulumi's signature key) counts as absent: claims never
    need one, and a ciphertext is no name or tag.
    """
    for side in ("outputs", "inputs"):
        value: Any = resource.get(side) or {}
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, Mapping) and _SECRET_SIG in value:
            value = None
        if value is not None:
            return value
    return None


def logical_name(urn: str) -> str:
    """The logical name at the end of a Pulumi URN (``urn:pulumi:s::p::T::NAME``)."""
    return urn.rsplit("::", 1)[-1]


def address_for(kind: str, name: str) -> str:
    """An mlform address for an object named `name` outside mlform: the name as an
    identifier (other characters as ``_``; a leading digit gets a ``_`` first)."""
    ident = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "imported"
    return f"{kind}.{'_' + ident if ident[0].isdigit() else ident}"


def tag_owner(resource: Resource) -> Owner | None:
    """The owner an AWS resource's tags name (``tags``, or ``tagsAll``, which also
    holds provider default tags), or None when it carries no ownership tags."""
    for key in ("tags", "tagsAll"):
        tags = field(resource, key)
        owner = Owner.from_tags(tags) if isinstance(tags, Mapping) else None
        if owner is not None:
            return owner
    return None


def annotation_owner(resource: Resource) -> Owner | None:
    """The owner a Kubernetes object's ``metadata.annotations`` name, or None."""
    annotations = field(resource, "metadata", "annotations")
    return Owner.from_annotations(annotations) if isinstance(annotations, Mapping) else None


def address_kind(address: str) -> str:
    """The kind of an mlform address (``module.m.endpoint.x["k"]`` -> ``endpoint``)."""
    rest = re.sub(r'^(?:module\.[A-Za-z0-9_-]+(?:\[[^\]]*\])?\.)*', "", address)
    return rest.split(".", 1)[0]


def _default_name(resource: Resource) -> str:
    name = field(resource, "name") or field(resource, "metadata", "name")
    return str(name) if isinstance(name, str) and name else logical_name(str(resource["urn"]))


@dataclass
class _Claimer:
    """One `claim_resources` call: the document, the rules and what is decided so far."""

    resources: Sequence[Resource]
    rules: Mapping[str, ClaimRule]
    stack: str
    env: str
    owner_of: Callable[[Resource], Owner | None]
    name_of: Callable[[Resource], str]
    primary: set[str] = field_(default_factory=set)

    def address(self, resource: Resource, depth: int = 0) -> tuple[str | None, bool]:
        """(the mlform address `resource` is or belongs to, whether its marks say so);
        None: not this provider's (another owner, or an unmarked part of nothing)."""
        rule = self.rules.get(str(resource.get("type", "")))
        if rule is None or depth > 8:      # depth: a parent chain never loops for long
            return None, False
        owner = self.owner_of(resource)
        if owner is not None:
            ours = (owner.stack, owner.env) == (self.stack, self.env)
            return (owner.address if ours else None), True
        if rule.import_id is not None and rule.import_id(resource) is not None:
            return address_for(rule.kind, self.name_of(resource)), False
        parent = rule.parent(resource, self.resources) if rule.parent else None
        return (self.address(parent, depth + 1)[0] if parent is not None else None), False

    def claim(self, resource: Resource) -> PulumiClaim | None:
        rule = self.rules.get(str(resource.get("type", "")))
        if rule is None:
            return None
        address, marked = self.address(resource)
        if address is None:
            return None
        notes = [rule.note] if rule.note else []
        import_id = rule.import_id(resource) if rule.import_id is not None else None
        if not marked and import_id is not None:
            if rule.adopt_unmarked:
                notes.insert(0, f"not made by mlform (no ownership marks): write the "
                                f"{rule.kind} block for {address} in the spec before "
                                f"importing it")
            else:
                notes.insert(0, f"not made by mlform (no ownership marks), and mlform adopts "
                                f"only objects it made: write the {rule.kind} block for "
                                f"{address} and apply (mlform makes its own), then remove "
                                f"this one from the Pulumi stack")
                import_id = None
        if import_id is not None and address in self.primary:
            notes.append(f"a second object for {address}: only the first is imported")
            import_id = None
        if import_id is not None:
            self.primary.add(address)
        return PulumiClaim(urn=str(resource["urn"]), address=address, kind=address_kind(address),
                           import_id=import_id, note="; ".join(notes))


def claim_resources(resources: Sequence[Resource], rules: Mapping[str, ClaimRule], *,
                    stack: str, env: str, owner_of: Callable[[Resource], Owner | None],
                    name_of: Callable[[Resource], str] = _default_name) -> list[PulumiClaim]:
    """The claims over `resources` (a stack export's ``deployment.resources``) that
    `rules` (Pulumi type token -> `ClaimRule`) make, for the provider of `stack` and
    `env`; see the module docstring.  Pure; the order is the document's."""
    claimer = _Claimer(resources, rules, stack, env, owner_of, name_of)
    return [claim for resource in resources if (claim := claimer.claim(resource)) is not None]
