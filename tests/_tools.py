"""Where the tests find the Go-built command-line tools (actionlint, opa).

`make tools` (tests/tools/build.sh) builds them from the Go module proxy once per machine
into the ignored `.tools/bin`; MLFORM_TOOLS_BIN points at binaries built elsewhere.  A
missing tool fails the test that needs it with the command that builds it: skipping would
hide that the check never ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> Path:
    folder = Path(os.environ.get("MLFORM_TOOLS_BIN") or ROOT / ".tools" / "bin")
    path = folder / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not built in {folder}: run `make tools` (tests/tools/build.sh)",
                    pytrace=False)
    return path
