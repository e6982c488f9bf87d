"""What an endpoint's experiment records are made of, for `mlform experiment report`:
the fields of captured requests and of rewards the report reads, and the one reader of
JSON-lines bodies every provider's `experiment_records` action uses (a file on `local`,
objects in storage on `kubernetes` and `sagemaker`).
"""

from __future__ import annotations

import json
from typing import Iterator

__all__ = ["CAPTURE_FIELDS", "FEEDBACK_FIELDS", "json_objects", "pick"]

#: Capture fields the report uses; the rest of a line (inputs, outputs) is dropped on read.
CAPTURE_FIELDS = ("time", "request_id", "variant", "role", "version", "latency_ms", "status",
                  "error")
#: A reward's fields (contract of the feedback route).
FEEDBACK_FIELDS = ("time", "request_id", "variant", "reward")


def json_objects(data: bytes) -> Iterator[dict]:
    """The JSON-object lines of `data`, up to its last newline: a torn last line (a writer
    still at it, or killed) and lines that are not JSON objects are skipped."""
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            yield doc


def pick(doc: dict, fields: tuple[str, ...] | None) -> dict:
    """Only `fields` of `doc` (all of it when None)."""
    return {k: doc[k] for k in fields if k in doc} if fields else doc
