"""The quickstart's apply on the test cluster: wall time, and where it goes (waits vs
engine).

`stacks/quickstart` is copied to a temporary directory (without its state and data),
its `make_data.py` run, and its `environments/kubernetes.hcl` patched to poll every
0.1 s (as tests/k8s/test_quickstart_e2e.py does).  It is planned and applied in this
process (`Session` + `operations`, env `kubernetes`, the `k8s_*` variables given as
`--var`s) against the session's control plane (etcd, kube-apiserver, controllers,
kwok nodes), with moto's S3 as `storage`; the pod harness runs the training pod's
command (a real torch run) as a local process.  Six resources: dataset,
training_cluster, pipeline, model, endpoint, monitor.

For the span of the plan and the apply, `Kube.wait` (every wait of the kubernetes
provider: a Job, a rollout, a deletion) and the provider's entry points
(`read_facts`, `validate`, `plan`, `create`, `read`, `update`, `delete`) are wrapped
with timers, and restored before the destroy.  The figures (seconds, perf_counter):

* value (`kubernetes_quickstart_apply`): plan_s + apply_s.
* plan_s: `Session(...)`, the state lock, loading the (empty) state, configuring the
  providers and `operations.plan`, split as session_s (`Session(...)`: reading the
  stack), lock_load_s, configure_s (`session.provider_set`, called ahead of the plan,
  which reuses what it configured: the kubernetes provider's client, lightkube and
  boto3 imports), then the plan's own `PlanTiming`: refresh_s (nothing to refresh),
  facts_s (facts read through the provider), walk_s (the planner's walks).
* apply_s: `operations.apply` alone (the plan's changes applied, state written).
* waits_s: the time inside `Kube.wait`, summed over every call in plan and apply
  (each resource's waits also in `waits`, by address); waits run in the provider's
  calls, on the apply's worker threads.
* job_wait_s: the waits on the training Job (`Job <ns>/<name>`, pipeline.train): from
  the Job's creation being accepted to the Job `Complete` -- scheduling by kwok, the
  harness noticing the pod Running, the torch run, its status written back, the Job
  controller finishing the Job, and up to one poll interval.
* train_process_s: within that, the harness's process of the training pod, from its
  spawn to its exit status being reported (Python start, torch import, training,
  artifact upload): what a kubelet would spend running the container.
* rollout_wait_s: the waits on Deployment rollouts (`rollout of Deployment ...`,
  endpoint.fraud; kwok makes the pods Ready).
* other_s: apply_s minus the waits that ran during the apply: API requests, S3
  transfers, and the engine's own work.
* provider_s: the wall time during the apply in which at least one provider call was
  in flight (the union of their intervals: calls that overlap count once).
* engine_s: apply_s minus provider_s: the apply's time with no provider call in
  flight (graph walk, expression evaluation, state writes, thread hand-offs).  Engine
  work that overlaps a provider call on another thread is not in it.
* calls: per "method address", the seconds inside that provider call (in plan and
  apply; those under 1 ms left out), so the non-wait remainder can be attributed.

After the figures are taken the stack is destroyed (timed as destroy_s, not
instrumented) and the state must be empty.  Everything runs on this machine: the API
server, etcd, kwok, moto and the training process share its cores with mlform.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import pytest

from mlform import operations
from mlform.plan.inputs import PlanOptions
from mlform.providers.kubernetes import KubernetesProvider
from mlform.providers.kubernetes.api import Kube
from mlform.session import Session, SessionOptions

from local._cli import REPO, copy_stack

from ._support import record

pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(900)

BUCKET = "mlform-bench-k8s-quickstart"
STACK = "k8s-quickstart"
PARALLELISM = 10
RESOURCES = ("dataset.transactions", "training_cluster.cpu", "pipeline.train",
             "model.fraud", "endpoint.fraud", "monitor.drift")
PROVIDER_CALLS = ("read_facts", "validate", "plan", "create", "read", "update", "delete")


class Timings:
    """Intervals (start, end, label) taken by the wrappers, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = "plan"
        self.waits: list[tuple[str, str, str, float, float]] = []   # phase, address, what
        self.calls: list[tuple[str, str, str, float, float]] = []   # phase, method, address
        self.spawned: dict[str, float] = {}                         # training pod -> t
        self.reported: dict[str, float] = {}

    def add(self, into: list, *row: Any) -> None:
        with self.lock:
            into.append((self.phase, *row))


def _address(method: str, args: tuple) -> str:
    if method == "read_facts":
        return "(facts)"
    return getattr(args[0], "address", "?") if args else "?"


@contextlib.contextmanager
def _instrumented(harness) -> Iterator[Timings]:
    """Time Kube.wait, the provider's entry points and the harness's training process
    while inside; everything is put back on the way out."""
    t = Timings()
    restore: list[tuple[Any, str, Any, bool]] = []

    def patch(owner: Any, name: str, make) -> None:
        own = name in vars(owner)
        original = getattr(owner, name)
        restore.append((owner, name, vars(owner).get(name), own))
        setattr(owner, name, make(original))

    def timed_wait(original):
        @functools.wraps(original)
        def wait(self, check, *, address, what, timeout=None):
            t0 = time.perf_counter()
            try:
                return original(self, check, address=address, what=what, timeout=timeout)
            finally:
                t.add(t.waits, address, what, t0, time.perf_counter())
        return wait

    def timed_call(method):
        def make(original):
            @functools.wraps(original)     # the registry checks the hooks' signatures
            def call(self, *args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return original(self, *args, **kwargs)
                finally:
                    t.add(t.calls, method, _address(method, args), t0, time.perf_counter())
            return call
        return make

    def training(pod: dict) -> str | None:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get("mlform.dev/role") == "train":
            return f"{meta.get('namespace')}/{meta.get('name')}"
        return None

    def timed_spawn(original):           # bound method of the harness instance
        def spawn(pod, *args, **kwargs):
            name = training(pod)
            if name and not kwargs.get("serving"):
                with t.lock:
                    t.spawned.setdefault(name, time.perf_counter())
            return original(pod, *args, **kwargs)
        return spawn

    def timed_report(original):
        def report(pod, *args, **kwargs):
            name = training(pod)
            try:
                return original(pod, *args, **kwargs)
            finally:
                if name:
                    with t.lock:
                        t.reported.setdefault(name, time.perf_counter())
        return report

    try:
        patch(Kube, "wait", timed_wait)
        for method in PROVIDER_CALLS:
            patch(KubernetesProvider, method, timed_call(method))
        # The harness's private hooks; the figure is left out if they are gone.
        if hasattr(harness, "_spawn") and hasattr(harness, "_report"):
            patch(harness, "_spawn", timed_spawn)
            patch(harness, "_report", timed_report)
        yield t
    finally:
        for owner, name, value, own in reversed(restore):
            if own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)


def _union(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one interval."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _stack(directory: Path) -> Path:
    stack = copy_stack(REPO / "stacks" / "quickstart", directory / STACK)
    subprocess.run([sys.executable, str(stack / "make_data.py")], check=True, cwd=stack,
                   capture_output=True)
    env_file = stack / "environments" / "kubernetes.hcl"
    text = env_file.read_text()
    patched = text.replace("  endpoint_url = var.k8s_endpoint_url\n",
                           "  endpoint_url = var.k8s_endpoint_url\n  poll_seconds = 0.1\n")
    assert patched != text, "environments/kubernetes.hcl changed: patch poll_seconds anew"
    env_file.write_text(patched)
    return stack


def _destroy(session: Session) -> float:
    t0 = time.perf_counter()
    with operations.locked(session, "destroy"):
        state = operations.load_state(session)
        if state.resources:
            plan = operations.plan(session, state, PlanOptions(
                mode="destroy", refresh=False, parallelism=PARALLELISM))
            assert not plan.errored, [d.summary for d in plan.diagnostics][:5]
            result = operations.apply(session, state, plan, parallelism=PARALLELISM)
            assert result.ok, result.failures[:5]
            assert not result.state.resources, sorted(result.state.resources)
        assert not operations.load_state(session).resources
    return time.perf_counter() - t0


def test_kubernetes_quickstart_apply(tmp_path, aws, control_plane, pod_harness):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    stack = _stack(tmp_path)
    options = SessionOptions(env="kubernetes", parallelism=PARALLELISM, vars=[
        f"k8s_kubeconfig={control_plane.kubeconfig}",
        f"k8s_storage=s3://{BUCKET}/{{stack}}/{{env}}",
        f"k8s_endpoint_url={aws.url}"])

    session = None
    try:
        with _instrumented(pod_harness) as t:
            t0 = time.perf_counter()
            session = Session(stack, options)
            t1 = time.perf_counter()
            with operations.locked(session, "apply"):
                state = operations.load_state(session)
                t1b = time.perf_counter()
                session.provider_set(state)     # configured once; plan() reuses them
                t1c = time.perf_counter()
                timing = operations.PlanTiming()
                plan = operations.plan(session, state, PlanOptions(parallelism=PARALLELISM),
                                       timing)
                assert not plan.errored, [(d.summary, d.detail) for d in plan.diagnostics][:5]
                t2 = time.perf_counter()
                t.phase = "apply"
                result = operations.apply(session, state, plan, parallelism=PARALLELISM)
                t3 = time.perf_counter()
        pod_harness.check()
        assert result.ok, result.failures[:5]
        assert sorted(result.state.resources) == sorted(RESOURCES)
        metrics = result.state.resources["pipeline.train"].attributes["metrics"]
        assert metrics["accuracy"] >= 0.85, metrics
    finally:
        destroy_s = _destroy(session) if session is not None else None
        if session is not None:
            session.close()

    session_s, plan_s, apply_s = t1 - t0, t2 - t0, t3 - t2
    waits: dict[str, float] = defaultdict(float)
    for _, address, _, a, b in t.waits:
        waits[address] += b - a
    apply_waits = [(a, b) for phase, _, _, a, b in t.waits if phase == "apply"]
    job = [b - a for _, _, what, a, b in t.waits if what.startswith("Job ")]
    rollout = [b - a for _, _, what, a, b in t.waits if what.startswith("rollout of ")]
    calls: dict[str, float] = defaultdict(float)
    for _, method, address, a, b in t.calls:
        calls[f"{method} {address}"] += b - a
    provider_s = _union([(a, b) for phase, _, _, a, b in t.calls if phase == "apply"])
    trained = [t.reported[n] - t.spawned[n] for n in t.spawned if n in t.reported]

    r = lambda x: round(x, 3)  # noqa: E731
    record("kubernetes_quickstart_apply", r(plan_s + apply_s), "s",
           plan_s=r(plan_s), apply_s=r(apply_s),
           waits_s=r(sum(waits.values())), job_wait_s=r(sum(job)),
           rollout_wait_s=r(sum(rollout)),
           other_s=r(apply_s - sum(b - a for a, b in apply_waits)),
           resources=len(result.state.resources),
           session_s=r(session_s), lock_load_s=r(t1b - t1), configure_s=r(t1c - t1b),
           refresh_s=r(timing.refresh_s), facts_s=r(timing.facts_s),
           walk_s=r(timing.walk_s),
           train_process_s=r(sum(trained)) if trained else None,
           provider_s=r(provider_s), engine_s=r(apply_s - provider_s),
           waits={k: r(v) for k, v in sorted(waits.items())},
           calls={k: r(v) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                  if v >= 0.001},
           destroy_s=r(destroy_s), poll_seconds=0.1, parallelism=PARALLELISM)
