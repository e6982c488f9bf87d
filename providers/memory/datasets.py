"""`dataset` on the memory provider: `uri`, and a digest of the source.

A source that is a file here (a path relative to the stack) is identified by its
content: `digest` is its sha256, `bytes` its size, `rows` its lines minus the header for
csv (a fact read before planning, through the shared digest cache).  Any other source
(a URI, another provider's object) is identified by the string itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlform.providers.base import (
    UNKNOWN, Desired, FactKey, Facts, KindSchema, LiveObject, contains_unknown,
)

from .env import Computed, MemoryHandler
from .trees import to_plain

__all__ = ["DatasetHandler"]


def _canonical(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(to_plain(value), sort_keys=True)


class DatasetHandler(MemoryHandler):
    kind = "dataset"
    schema = KindSchema(replace_paths=("format",), computed=("uri", "digest", "rows", "bytes"))

    def _path(self, source: Any) -> Path | None:
        if not isinstance(source, str) or not source or "://" in source:
            return None
        path = Path(source).expanduser()
        return path if path.is_absolute() else self.env.stack_dir / path

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        path = self._path(desired.attributes.get("source"))
        return (FactKey("dataset", "file", (str(path),)),) if path is not None else ()

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        """A FileDigest per key, or None when the path is not a regular file here."""
        found: dict[FactKey, Any] = {}
        for key in keys:
            path = Path(key.args[0])
            try:
                found[key] = self.env.digests.file(path) if path.is_file() else None
            except (OSError, ValueError):
                found[key] = None
        return found

    def compute(self, address: str, attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                facts: Facts) -> Computed:
        values: dict[str, Any] = {"uri": self.env.uri("dataset", address)}
        source, fmt = attrs.get("source"), attrs.get("format")
        if contains_unknown(source):
            return Computed({**values, "digest": UNKNOWN, "rows": UNKNOWN, "bytes": UNKNOWN})
        path = self._path(source)
        file = facts.get(FactKey("dataset", "file", (str(path),))) if path is not None else None
        if file is None:
            # not a file here (a URI, another provider's object): identify by the string
            text = "" if source is None else _canonical(source)
            return Computed({**values, "digest": hashlib.sha256(text.encode()).hexdigest(),
                             "bytes": len(text.encode("utf-8")), "rows": 0})
        if fmt is UNKNOWN:
            rows: Any = UNKNOWN
        else:
            is_csv = fmt.lower() == "csv" if isinstance(fmt, str) else path.suffix.lower() == ".csv"
            rows = max(file.lines - 1, 0) if is_csv else 0
        return Computed({**values, "digest": file.digest, "bytes": file.size, "rows": rows})
