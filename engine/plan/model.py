"""Plan values.  A plan is plain, frozen data that can be printed, saved and
compared; apply consumes it and never re-decides.

What `before` / `after` mean per action (Terraform's table):

| action         | before           | after                         |
| -------------- | ---------------- | ----------------------------- |
| no-op          | prior attributes | same                          |
| create         | None             | planned attributes            |
| read           | None or prior    | attributes read (data source) |
| update         | prior attributes | planned attributes            |
| delete-create  | prior attributes | planned attributes (new obj)  |
| create-delete  | prior attributes | planned attributes (new obj)  |
| delete         | prior attributes | None                          |

`after` may hold `UNKNOWN` (see mlform.expr.values).  `reasons` are for
display only and must never influence apply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from mlform.diagnostics import has_errors

if TYPE_CHECKING:   # a value the planner never computes: attached after it (operations)
    from mlform.cost import CostReport


class Action(str, enum.Enum):
    NOOP = "no-op"
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE_CREATE = "delete-create"   # replace, destroy first
    CREATE_DELETE = "create-delete"   # replace, create_before_destroy
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def json_actions(self) -> list[str]:
        """Terraform's `change.actions` list."""
        return _JSON_ACTIONS[self]

    @property
    def is_replace(self) -> bool:
        return self in (Action.DELETE_CREATE, Action.CREATE_DELETE)

    @property
    def counts(self) -> tuple[str, ...]:
        """What carrying it out adds to an apply's summary ("added", "changed", "destroyed")."""
        return _COUNTS[self]

    @classmethod
    def from_json_actions(cls, actions: list[str]) -> "Action":
        for action, value in _JSON_ACTIONS.items():
            if value == list(actions):
                return action
        raise ValueError(f"unknown actions {actions!r}")


_SYMBOLS = {
    Action.NOOP: " ", Action.CREATE: "+", Action.READ: "<=", Action.UPDATE: "~",
    Action.DELETE_CREATE: "-/+", Action.CREATE_DELETE: "+/-", Action.DELETE: "-",
}
_COUNTS = {
    Action.NOOP: (), Action.READ: (), Action.CREATE: ("added",), Action.UPDATE: ("changed",),
    Action.DELETE: ("destroyed",), Action.DELETE_CREATE: ("added", "destroyed"),
    Action.CREATE_DELETE: ("added", "destroyed"),
}
_JSON_ACTIONS = {
    Action.NOOP: ["no-op"], Action.CREATE: ["create"], Action.READ: ["read"],
    Action.UPDATE: ["update"], Action.DELETE_CREATE: ["delete", "create"],
    Action.CREATE_DELETE: ["create", "delete"], Action.DELETE: ["delete"],
}


@dataclass(frozen=True)
class Change:
    """The planned change of one resource instance."""

    address: str
    kind: str
    name: str
    provider: str
    action: Action
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    module: str = ""                       # "module.a.module.b" or ""
    index_key: Any = None                  # for_each key or count index
    replace_paths: tuple[tuple, ...] = ()  # attribute paths that force replacement
    action_reason: str = ""                # machine-readable reason code
    reasons: tuple[str, ...] = ()          # display only
    before_sensitive: tuple[tuple, ...] = ()
    after_sensitive: tuple[tuple, ...] = ()
    dependencies: tuple[str, ...] = ()     # addresses this instance depends on
    prior_id: str | None = None
    changed_paths: tuple[tuple, ...] = ()  # paths whose value differs (display)
    #: the id of a deposed object this change deletes (an object a create_before_destroy
    #: replacement left behind when its delete was interrupted), else ""
    deposed: str = ""

    @property
    def is_change(self) -> bool:
        return self.action is not Action.NOOP


@dataclass(frozen=True)
class OutputChange:
    name: str
    action: Action
    before: Any
    after: Any
    sensitive: bool = False


@dataclass(frozen=True)
class PolicyResult:
    """One policy's verdict on one resource change (`address`) or on the whole plan
    (`address` ""): `passed` is None when the condition depends on values known only
    after apply.  `mlform.policy` makes them; a failed mandatory one is also an error
    diagnostic of the plan."""

    policy: str                 # "policy.NAME" or "module.M.policy.NAME"
    level: str                  # "advisory" | "mandatory"
    passed: bool | None
    address: str = ""
    message: str = ""

    def to_json(self) -> dict:
        return {"policy": self.policy, "level": self.level, "passed": self.passed,
                "address": self.address, "message": self.message}

    @classmethod
    def from_json(cls, doc: dict) -> "PolicyResult":
        return cls(str(doc["policy"]), str(doc["level"]), doc.get("passed"),
                   str(doc.get("address", "")), str(doc.get("message", "")))


@dataclass(frozen=True)
class Summary:
    add: int = 0
    change: int = 0
    destroy: int = 0
    read: int = 0

    @classmethod
    def of(cls, changes: "tuple[Change, ...]") -> "Summary":
        counts = {"added": 0, "changed": 0, "destroyed": 0}
        for c in changes:
            for counter in c.action.counts:
                counts[counter] += 1
        read = sum(1 for c in changes if c.action is Action.READ)
        return cls(counts["added"], counts["changed"], counts["destroyed"], read)


@dataclass(frozen=True)
class Plan:
    """Everything `apply` needs and everything a renderer shows."""

    changes: tuple[Change, ...]
    drift: tuple[Change, ...] = ()          # out-of-band changes found by refresh
    output_changes: tuple[OutputChange, ...] = ()
    diagnostics: tuple = ()                 # mlform.diagnostics.Diagnostic
    mode: str = "normal"                    # "normal" | "destroy" | "refresh-only"
    env: str = "default"
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    state_lineage: str = ""
    state_serial: int = 0
    config_digest: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)
    sensitive_variables: Mapping[str, str] = field(default_factory=dict)  # name -> salted hash
    # The refreshed state this plan was made against (addresses -> resource dict),
    # used by refresh-only apply to record what was read.
    refreshed: Mapping[str, Any] = field(default_factory=dict)
    # Every policy's verdict (`mlform.policy`), computed after the planner.
    policies: tuple[PolicyResult, ...] = ()
    # The cost estimate (`mlform.cost.CostReport`), computed after the planner; None
    # for a plan made without it (a plan file from before it existed).
    cost: "CostReport | None" = None

    @property
    def errored(self) -> bool:
        """True when a diagnostic is an error (such a plan can be shown, never applied)."""
        return has_errors(self.diagnostics)

    @property
    def failed_policies(self) -> tuple[PolicyResult, ...]:
        """The policy verdicts that failed (an undecided one, `passed` None, has not)."""
        return tuple(r for r in self.policies if r.passed is False)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.changes)

    @property
    def has_changes(self) -> bool:
        if self.mode == "refresh-only":
            return bool(self.drift)
        return any(c.is_change for c in self.changes) or any(
            o.action is not Action.NOOP for o in self.output_changes)

    def change_for(self, address: str) -> Change | None:
        for c in self.changes:
            if c.address == address:
                return c
        return None
