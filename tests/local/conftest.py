"""Fixtures of the `local` provider tests: a stack directory and a provider root under tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlform.providers.base import ProviderContext, ProgressEvent
from mlform.providers.local.env import LocalEnv, default_python


@pytest.fixture
def progress() -> list[ProgressEvent]:
    """Every progress event the handlers report."""
    return []


@pytest.fixture
def local_env(tmp_path: Path, progress: list) -> LocalEnv:
    """A `LocalEnv` as `LocalProvider` builds it: stack `tmp/stack`, root `tmp/stack/.mlform/local/test`."""
    stack = tmp_path / "stack"
    stack.mkdir()
    context = ProviderContext(name="local", alias=None, stack="stack", env="test",
                              stack_dir=stack, config={}, progress=progress.append,
                              cache_dir=stack / ".mlform" / "cache")
    return LocalEnv(context=context, root=stack / ".mlform" / "local" / "test", host="127.0.0.1",
                    python=default_python(), ready_timeout=30.0)
