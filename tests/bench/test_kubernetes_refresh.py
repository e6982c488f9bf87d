"""Refresh of 1,000 Kubernetes objects against the test control plane, at parallelism 1
and 16.

The stack, on the `kubernetes` provider (the session's control plane: etcd,
kube-apiserver, controller-manager, scheduler, kwok nodes; moto's S3 as `storage`):
200 each of

* model (one immutable ConfigMap, version 1 of an `s3://` artifact): 200 objects,
* endpoint (Deployment + Service, one replica, serving `model.m[each.key]`): 400
  objects (the 200 pods kwok runs are not counted: mlform does not read them),
* training_cluster (cpu, no GPUs: Namespace + ResourceQuota): 400 objects,

that is 600 resources and 1,000 objects.  The endpoints ask for 100m CPU and 64Mi per
pod (the default 500m would not fit 200 pods on the three 32-CPU kwok nodes), and
there are 200 of them, not 250, because each one's apply waits for its rollout and
the 3 x 110 pod slots of the nodes must hold them.

It is applied once (parallelism 16); then the refresh phase alone (every resource read
through the provider: a GET per object for endpoints and clusters, a labelled LIST of
ConfigMaps per model, each compared with the state) is timed at parallelism 1 and 16,
twice each, interleaved, the better counting.  Both must find no drift and make no
mutating request (counted in the API server's audit log, with the reads).  The stack
is destroyed at the end, so the session's cluster is left as it was.

Everything runs on this machine: the API server, etcd, the controllers and kwok share
its cores with mlform's threads, so the speed-up is bounded by how fast one local API
server answers; against a remote cluster, where each call waits on the network,
overlap pays more.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlform import operations
from mlform.plan.inputs import PlanOptions
from mlform.refresh import refresh
from mlform.session import Session, SessionOptions

from ._support import record

pytestmark = pytest.mark.timeout(1800)

PER_KIND = 200
OBJECTS = PER_KIND * (1 + 2 + 2)         # ConfigMap; Deployment + Service; Namespace + quota
BUCKET = "mlform-bench-k8s"
APPLY_PARALLELISM = 16


def _stack(directory: Path, kubeconfig: Path, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.hcl").write_text(f'''
provider "kubernetes" {{
  kubeconfig   = "{kubeconfig}"
  storage      = "s3://{BUCKET}/{{stack}}"
  endpoint_url = "{url}"
  poll_seconds = 0.05
}}

locals {{
  keys = [for i in range({PER_KIND}) : format("k%04d", i)]
}}

model "m" {{
  for_each = toset(local.keys)
  artifact = "s3://{BUCKET}/runs/${{each.key}}/"
}}

endpoint "e" {{
  for_each = toset(local.keys)
  model    = model.m[each.key]
  replicas = 1
  settings {{
    cpu    = "100m"
    memory = "64Mi"
  }}
}}

training_cluster "c" {{
  for_each      = toset(local.keys)
  accelerator   = "cpu"
  gpus_per_node = 0
}}
''')
    return directory


def _destroy(session: Session) -> float:
    """Destroy what the state holds (parallelism 16); the seconds it took."""
    t0 = time.perf_counter()
    with operations.locked(session, "destroy"):
        state = operations.load_state(session)
        if not state.resources:
            return 0.0
        plan = operations.plan(session, state, PlanOptions(
            mode="destroy", refresh=False, parallelism=APPLY_PARALLELISM))
        assert not plan.errored, [d.summary for d in plan.diagnostics][:5]
        result = operations.apply(session, state, plan, parallelism=APPLY_PARALLELISM)
    assert result.ok, result.failures[:5]
    assert not result.state.resources, sorted(result.state.resources)[:5]
    return time.perf_counter() - t0


def test_refresh_1000_kubernetes_objects(tmp_path, control_plane, aws):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    stack = _stack(tmp_path / "fleet", control_plane.kubeconfig, aws.url)

    session = Session(stack, SessionOptions(parallelism=APPLY_PARALLELISM))
    destroy_s = None
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            t0 = time.perf_counter()
            plan = operations.plan(session, state, PlanOptions(parallelism=APPLY_PARALLELISM))
            assert not plan.errored, [d.summary for d in plan.diagnostics][:5]
            t1 = time.perf_counter()
            result = operations.apply(session, state, plan, parallelism=APPLY_PARALLELISM)
            apply_s, plan_s = time.perf_counter() - t1, t1 - t0
        assert result.ok, result.failures[:5]
        state = result.state
        assert len(state.resources) == 3 * PER_KIND
        objects = sum(len(rs.attributes.get("objects") or {}) or 1    # a model: 1 ConfigMap
                      for rs in state.resources.values())
        assert objects == OBJECTS, objects

        def timed(parallelism: int) -> tuple[float, float, int]:
            since = control_plane.audit_offset()
            c0, t0 = time.process_time(), time.perf_counter()
            refreshed = refresh(session.provider_set(state), state, parallelism)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert not refreshed.diagnostics, [d.summary for d in refreshed.diagnostics][:5]
            assert refreshed.drift == [], [c.address for c in refreshed.drift][:5]
            requests = control_plane.requests(since)
            mutating = control_plane.mutating_requests(since)
            assert mutating == [], [(e["verb"], e["requestURI"]) for e in mutating][:5]
            return wall, cpu, len(requests)

        runs: dict[int, list] = {1: [], 16: []}
        for _ in range(2):                       # interleaved; the better of two counts
            for p in (1, 16):
                runs[p].append(timed(p))
        best = {p: min(found) for p, found in runs.items()}      # (wall, cpu, calls)
        calls = best[1][2]
    finally:
        try:
            destroy_s = _destroy(session)
        finally:
            session.close()

    n = dict(objects=OBJECTS, resources=3 * PER_KIND)
    record("kubernetes_apply_1000", round(apply_s, 2), "s", **n, plan_s=round(plan_s, 2),
           destroy_s=round(destroy_s, 2), parallelism=APPLY_PARALLELISM)
    for p in (1, 16):
        record(f"kubernetes_refresh_p{p}", round(best[p][0], 2), "s", **n, api_calls=calls,
               mlform_cpu_s=round(best[p][1], 2))
    record("kubernetes_refresh_speedup", round(best[1][0] / best[16][0], 2), "x", **n,
           note="one local API server (and etcd, kwok) shares the cores with mlform")
