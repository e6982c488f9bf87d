"""Fixtures of the Kubernetes tests: a namespace per test.

The session's control plane (`control_plane`) and pod harness (`pod_harness`) are in
tests/conftest.py, because the provider contract suite (tests/providers) uses them too.
"""

from __future__ import annotations

import uuid

import pytest

from _kube import make_provider
from mlform.providers.base import LiveObject


@pytest.fixture
def namespace(control_plane):
    """A namespace of the test's own, deleted afterwards (its pods' processes end then)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with control_plane.api() as api:
        api.post("/api/v1/namespaces",
                 json={"metadata": {"name": name}}).raise_for_status()
    yield name
    with control_plane.api() as api:
        api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def k8s(control_plane, aws, tmp_path):
    provider = make_provider(control_plane, aws, tmp_path)
    made: list[LiveObject] = []
    provider.made = made
    try:
        yield provider
    finally:
        for live in reversed(made):
            provider.delete(live)
        provider.close()
