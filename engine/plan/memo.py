"""The no-op memo: instances whose inputs did not change since the last plan are not planned again.

A plan of an unchanged stack plans every instance only to find that nothing changes.
The memo remembers, for each instance that planned to a no-op, one key made of
everything its planning read:

* the run's salt (`PlanMemo.salt`): the memo format, the source files of the engine and
  provider code loaded (path, size, mtime), the stack and working directories and the
  environment, so new code or another checkout never reuses a key;
* the provider's identity and configuration, the instance's address, its block's
  lifecycle, its `--replace` / `replace_triggered_by` state;
* the values its attribute expressions evaluated to (references to upstream instances
  are values here, so an upstream change changes the key);
* its prior state as refreshed (attributes, id, status, sensitive paths).

The facts its planning looked at (entrypoint digests, file digests) are recorded with
the key, as (provider, fact key, digest of the value).  A later plan that computes the
same key and finds the same facts skips the schema checks, the provider's `validate`
and `plan` and the diff: the instance is a no-op whose value is its prior attributes.
A fact not read yet is asked for as a full plan would ask for it (`NeedFacts`); a fact
that differs is a miss, planned in full.

Only what a full plan is sure to repeat is kept: a no-op with no sensitive values, no
diagnostics, and a value equal to its prior attributes, whose change the replay
rebuilds equal to the one planned (`Planner` checks this when it records).  Blocks whose
expressions read files (`file()`, `templatefile()`) are never memoised: those files
are not among the inputs above.

This module is pure; the memo is read before the planner runs and written after it
(`mlform.operations.plan`).  The property test in tests/engine proves a plan with the
memo equal to one without, over random stacks and edits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from mlform.providers.base import FactKey

#: bumped when the key's contents or the planner's use of it change
MEMO_VERSION = 1

#: (provider key or None for the engine, the fact, digest of its value or None: absent)
RecordedFact = tuple[str | None, FactKey, str | None]


class Uncacheable(Exception):
    """An input that has no stable encoding (UNKNOWN, a Sensitive marker, an object)."""


def _refuse(value: Any) -> Any:
    raise Uncacheable(type(value).__name__)


def key_of(*parts: Any) -> str:
    """A digest of plain JSON data; `Uncacheable` when some part is not plain data."""
    # Sorted keys: the same values read back from the state or a provider in another
    # order must give the same key (unsorted keys were a fifth cheaper but missed).
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_refuse,
                      allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def fact_digest(value: Any) -> str:
    """A digest of a fact's value: facts are dataclasses and plain values, whose repr
    is their content (an object without one never matches: a miss, never a wrong hit)."""
    return hashlib.blake2b(repr(value).encode(), digest_size=16).hexdigest()


@dataclass
class PlanMemo:
    """The memo one plan reads (`entries`, from the last plan) and the entries it keeps
    (`kept`: its hits and new records, all that is saved for the next plan)."""

    salt: str
    entries: Mapping[str, tuple[RecordedFact, ...]] = field(default_factory=dict)
    kept: dict[str, tuple[RecordedFact, ...]] = field(default_factory=dict)
    hits: int = 0

    def lookup(self, key: str) -> tuple[RecordedFact, ...] | None:
        return self.entries.get(key)

    def keep(self, key: str, facts: tuple[RecordedFact, ...]) -> None:
        self.kept[key] = facts

    @property
    def changed(self) -> bool:
        """Whether the memo to save differs from the one read (else writing it is moot)."""
        return self.kept != self.entries

    # ------------------------------------------------------------ storage form

    def to_json(self) -> dict:
        return {"version": MEMO_VERSION, "salt": self.salt,
                "entries": {k: [[p, f.kind, f.name, list(f.args), d] for p, f, d in facts]
                            for k, facts in self.kept.items()}}

    @classmethod
    def from_json(cls, data: Any, salt: str) -> "PlanMemo":
        """The memo saved by the last plan, when it was made with this salt; else empty."""
        if not isinstance(data, dict) or data.get("version") != MEMO_VERSION \
                or data.get("salt") != salt or not isinstance(data.get("entries"), dict):
            return cls(salt)
        entries = {}
        for key, facts in data["entries"].items():
            try:
                entries[key] = tuple((p, FactKey(kind, name, _tuples(args)), d)
                                     for p, kind, name, args, d in facts)
            except (TypeError, ValueError):
                continue           # a damaged entry is a miss
        return cls(salt, entries)


def _tuples(value: Any) -> Any:
    """JSON lists back into the tuples fact keys are made of."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class RecordingFacts(Mapping):
    """A facts view that notes every key looked up, with a digest of what it found."""

    def __init__(self, provider: str | None, facts: Mapping[FactKey, Any],
                 seen: dict[tuple[str | None, FactKey], str | None]) -> None:
        self._provider = provider
        self._facts = facts
        self._seen = seen

    def _note(self, key: Any) -> None:
        if (self._provider, key) not in self._seen:
            self._seen[(self._provider, key)] = (fact_digest(self._facts[key])
                                                 if key in self._facts else None)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return self._facts[key]

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return key in self._facts

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return self._facts.get(key, default)

    def __iter__(self) -> Iterator:
        # A provider that walks every fact depends on all of them: not memoisable.
        self._seen[(self._provider, _ALL)] = None
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)


#: noted when a provider iterates over its facts: such an instance is never kept
_ALL = FactKey("*", "*")


def recorded(seen: Mapping[tuple[str | None, FactKey], str | None]
             ) -> tuple[RecordedFact, ...] | None:
    """The facts an instance's planning looked at, in the memo's form; None when they
    cannot be replayed (it iterated over all facts)."""
    out = []
    for (provider, key), digest in seen.items():
        if key == _ALL or not isinstance(key, FactKey):
            return None
        try:
            json.dumps(key.args, default=_refuse)
        except Uncacheable:
            return None
        out.append((provider, key, digest))
    return tuple(out)


__all__ = ["PlanMemo", "RecordingFacts", "Uncacheable", "key_of", "fact_digest", "recorded",
           "MEMO_VERSION"]
