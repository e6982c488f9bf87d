"""The memory provider's call log: one JSON line per mutating call.

Tests read it to assert what an apply did to the "service", above all that a
no-op apply made zero mutating calls.  Lines are ``{"op", "address", "id",
"time"}``, written with one ``os.write`` on an ``O_APPEND`` descriptor so
concurrent calls never interleave within a line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

__all__ = ["CallLog", "read_calls"]


class CallLog:
    """Appends call records to a JSON-lines file (opened on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def record(self, op: str, address: str, id: str | None) -> None:
        line = json.dumps({"op": op, "address": address, "id": id, "time": time.time()}) + "\n"
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_calls(path: Path) -> list[dict]:
    """The records in a call log (empty when the file does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
