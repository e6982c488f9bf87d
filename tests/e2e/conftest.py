"""Shared fixtures of the end-to-end tests (helpers live in `harness`)."""

from __future__ import annotations

import pytest

from . import harness


@pytest.fixture
def make_stack(tmp_path):
    """make_stack(hcl, name="stack", files=None) -> Path of a stack under tmp_path."""
    def make(hcl: str, *, name: str = "stack", files: dict | None = None):
        return harness.make_stack(tmp_path, hcl, name=name, files=files)
    return make


@pytest.fixture
def mlform():
    """mlform(*args, cwd=STACK, env=None, timeout=120) -> harness.Run."""
    return harness.run_mlform
