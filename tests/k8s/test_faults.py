"""Faults against the test control plane: RBAC refusals, a namespace another stack owns,
and the API server killed during an apply.  Never a traceback, nothing orphaned."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from _waiting import wait_until
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls

from _kube import ENDPOINT, make_provider, pipeline_desired

pytestmark = pytest.mark.timeout(300)


def test_an_rbac_refusal_names_the_verb_resource_and_namespace(control_plane, aws, tmp_path):
    kubeconfig = control_plane.user_kubeconfig("mlform-limited")
    with control_plane.api() as api:   # it may read config maps in default, nothing else
        api.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", json={
            "metadata": {"name": "mlform-limited"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "verbs": ["get", "list"]}]})
        api.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", json={
            "metadata": {"name": "mlform-limited"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "mlform-limited"},
            "subjects": [{"kind": "User", "name": "mlform-limited"}]})
    provider = make_provider(control_plane, aws, tmp_path, kubeconfig=str(kubeconfig))
    try:
        [problem] = calls.validate(provider, Desired("endpoint.x", "endpoint", "x", ENDPOINT))
        assert 'User "mlform-limited" cannot get resource "deployments"' in problem.summary
        assert 'in API group "apps" in the namespace "default"' in problem.summary
    finally:
        provider.close()


def test_a_namespace_another_stack_owns_is_refused(control_plane, aws, tmp_path):
    first = make_provider(control_plane, aws, tmp_path, stack="ns-owner-a")
    second = make_provider(control_plane, aws, tmp_path, stack="ns-owner-b")
    second.env.name = first.env.name       # both would name the namespace the same
    desired = Desired("training_cluster.gpu", "training_cluster", "gpu",
                      {"accelerator": "cpu", "gpus_per_node": 0, "nodes": 1})
    live = first.create(calls.plan(first, desired))
    try:
        [problem] = [d for d in calls.validate(second, desired) if d.severity == "error"]
        assert "Namespace" in problem.summary and "belongs to stack 'ns-owner-a'" in problem.summary
    finally:
        first.delete(live)
        first.close()
        second.close()


_WAITS = """\
import json, os, pathlib, time
go = pathlib.Path(os.environ["GO"])
while not go.exists():      # the test says when the run may finish
    time.sleep(0.05)
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_bytes(b"model")
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
"""


def test_the_api_server_killed_mid_apply_fails_cleanly_and_a_reapply_adopts_the_job(
        k8s, pod_harness, control_plane, tmp_path):
    go = tmp_path / "go"
    desired = pipeline_desired(k8s, tmp_path, _WAITS, environment={"GO": str(go)})
    planned = calls.plan(k8s, desired)
    failure: list[BaseException] = []

    def apply() -> None:
        try:
            k8s.create(planned)
        except BaseException as exc:   # noqa: BLE001 - inspected below
            failure.append(exc)

    def jobs() -> list[dict]:
        with control_plane.api() as api:
            items = api.get("/apis/batch/v1/namespaces/default/jobs", params={
                "labelSelector": "mlform.dev/address=pipeline.train"}).json()["items"]
        return [j for j in items if j["metadata"]["annotations"]["mlform.dev/stack"]
                == k8s.context.stack]

    worker = threading.Thread(target=apply)
    worker.start()
    wait_until(lambda: jobs(), 60, "the training Job to be created")
    with pod_harness.outage():
        control_plane.kill_apiserver()
        worker.join(120)
        assert not worker.is_alive()
        control_plane.restart_apiserver()
    [error] = failure
    assert isinstance(error, ProviderError) and error.retryable
    assert "cannot reach the Kubernetes API server" in error.message
    go.write_text("")
    live = k8s.create(planned)          # the re-apply adopts the Job, runs nothing twice
    k8s.made.append(live)
    assert live.attributes["metrics"] == {"accuracy": 0.9}
    assert len(jobs()) == 1, "the re-apply started a second Job"
    Path(go).unlink()
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
