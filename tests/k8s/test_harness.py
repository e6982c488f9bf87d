"""The pod harness (`harness.py`) on the real test control plane.

A training pod's command runs as a local process and its end becomes the pod's status,
which the Job controller turns into the Job's: exit 0 completes the Job and the output is
in the harness's log; a failure carries the termination message (the file, or the log's
tail under FallbackToLogsOnError) and fails the Job; an unpullable image leaves the pod
Pending in ImagePullBackOff (and kwok does not take it back to Running); `fail_next`
forces an outcome; `serve` runs an endpoint pod's server on a local port; `stop` leaves
no process behind, children included; a broken watch is raised, not swallowed.
"""

from __future__ import annotations

import os
import sys
import textwrap

import httpx
import pytest

from _waiting import wait_until
from harness import USER_AGENT, HarnessError, PodHarness, default_env

pytestmark = pytest.mark.timeout(120)

TOLERATIONS = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
IMAGE = "registry.invalid/mlform-test:1"


def _container(code: str, **extra) -> dict:
    return {"name": "main", "image": IMAGE, "command": ["python", "-c", textwrap.dedent(code)],
            **extra}


def _job(name: str, container: dict, role: str = "train") -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"completions": 1, "backoffLimit": 0,
                     "template": {"metadata": {"labels": {"mlform.dev/role": role}},
                                  "spec": {"containers": [container], "restartPolicy": "Never",
                                           "tolerations": TOLERATIONS}}}}


def _pod(name: str, container: dict, role: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"mlform.dev/role": role}},
            "spec": {"containers": [container], "restartPolicy": "Never",
                     "tolerations": TOLERATIONS}}


def _create(api: httpx.Client, namespace: str, obj: dict) -> None:
    path = (f"/apis/batch/v1/namespaces/{namespace}/jobs" if obj["kind"] == "Job"
            else f"/api/v1/namespaces/{namespace}/pods")
    api.post(path, json=obj).raise_for_status()


def _job_condition(api: httpx.Client, namespace: str, name: str, wanted: str) -> dict:
    """Wait for the Job's `wanted` condition (Complete or Failed) to be True; return it."""
    def condition():
        job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}").json()
        for c in (job.get("status") or {}).get("conditions") or []:
            if c["type"] == wanted and c["status"] == "True":
                return c
        return None
    return wait_until(condition, 60, f"job {name} to be {wanted}", interval=0.1)


def _job_pod(api: httpx.Client, namespace: str, job: str) -> dict:
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods",
                   params={"labelSelector": f"batch.kubernetes.io/job-name={job}"}
                   ).json()["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _pod_status(api: httpx.Client, namespace: str, name: str) -> dict:
    return api.get(f"/api/v1/namespaces/{namespace}/pods/{name}").json().get("status") or {}


def _terminated(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def test_a_job_whose_command_exits_0_completes_with_its_output_logged(
        control_plane, pod_harness, namespace):
    container = _container("""
        import os, sys
        print(sys.executable)
        print("hello from", os.environ["GREETING"], os.getcwd())
        """, env=[{"name": "GREETING", "value": "the harness"},
                  {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {
                      "name": "absent", "key": "k"}}}])
    with control_plane.api() as api:
        _create(api, namespace, _job("ok", container))
        _job_condition(api, namespace, "ok", "Complete")
        pod = _job_pod(api, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = _terminated(pod)
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert "message" not in terminated
    executable, greeting = pod_harness.log(namespace, pod["metadata"]["name"]).splitlines()
    assert executable == sys.executable  # "python" is this interpreter
    assert greeting.startswith("hello from the harness ")
    assert greeting.endswith("/cwd")  # a directory of the pod's own
    # The status came from the harness, which the audit log tells apart.
    patches = [e for e in control_plane.requests(agent=USER_AGENT)
               if e.get("verb") == "patch"
               and (e.get("objectRef") or {}).get("name") == pod["metadata"]["name"]]
    assert [e["objectRef"]["subresource"] for e in patches] == ["status"]


def test_a_failing_job_carries_its_termination_message(control_plane, pod_harness, namespace):
    container = _container("""
        import os, sys
        print("some output")
        with open(os.environ["MLFORM_TERMINATION_LOG"], "w") as f:
            f.write("loss diverged at step 7")
        sys.exit(3)
        """, env=[{"name": "MLFORM_TERMINATION_LOG", "value": "/dev/termination-log"}],
        terminationMessagePolicy="FallbackToLogsOnError")
    with control_plane.api() as api:
        _create(api, namespace, _job("bad", container))
        failed = _job_condition(api, namespace, "bad", "Failed")
        pod = _job_pod(api, namespace, "bad")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert pod["status"]["phase"] == "Failed"
    assert _terminated(pod)["exitCode"] == 3
    assert _terminated(pod)["reason"] == "Error"
    # The file wins over the log, as with the kubelet.
    assert _terminated(pod)["message"] == "loss diverged at step 7"


def test_without_a_message_file_a_failure_falls_back_to_its_logs_tail(
        control_plane, pod_harness, namespace):
    container = _container("""
        import sys
        for i in range(200):
            print(f"line {i:03d}")
        sys.exit(1)
        """, terminationMessagePolicy="FallbackToLogsOnError")
    with control_plane.api() as api:
        _create(api, namespace, _job("tail", container))
        _job_condition(api, namespace, "tail", "Failed")
        message = _terminated(_job_pod(api, namespace, "tail"))["message"]
    # The kubelet's fallback: the last 80 lines (120..199), 720 bytes here (under 2048).
    assert message.splitlines() == [f"line {i:03d}" for i in range(120, 200)]


def test_an_unpullable_image_leaves_the_pod_in_image_pull_back_off(
        control_plane, pod_harness, namespace):
    image = f"registry.invalid/{namespace}/missing:1"
    pod_harness.unpullable.add(image)
    container = {**_container("print('never run')"), "image": image}
    with control_plane.api() as api:
        _create(api, namespace, _pod("unpulled", container, role="train"))

        def backing_off():
            status = _pod_status(api, namespace, "unpulled")
            state = (status.get("containerStatuses") or [{}])[0].get("state") or {}
            return status if "waiting" in state else None
        status = wait_until(backing_off, 30, "the pod to wait for its image", interval=0.1)
        # kwok works through pods in order: once a pod created afterwards is Running, it
        # has seen the harness's Pending status, and has left it alone.
        _create(api, namespace, _pod("after", _container("pass"), role="other"))
        wait_until(lambda: _pod_status(api, namespace, "after").get("phase") == "Running",
                   30, "a later pod to be Running", interval=0.1)
        status = _pod_status(api, namespace, "unpulled")
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"] == {
        "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == ready["ContainersReady"] == "False"
    with pytest.raises(KeyError):
        pod_harness.log(namespace, "unpulled")


def test_fail_next_forces_an_outcome_without_running_the_pod(
        control_plane, pod_harness, namespace):
    pod_harness.fail_next(namespace, "OOMKilled", "", exit_code=137)
    with control_plane.api() as api:
        _create(api, namespace, _job("oom", _container("print('never run')")))
        _job_condition(api, namespace, "oom", "Failed")
        terminated = _terminated(_job_pod(api, namespace, "oom"))
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


SERVER = """
    import http.server, os

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["MODEL"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http.server.HTTPServer(("127.0.0.1", int(os.environ["MLFORM_PORT"])), Handler).serve_forever()
    """


def test_serve_runs_an_endpoint_pod_on_a_local_port(control_plane, pod_harness, namespace):
    container = _container(SERVER, env=[{"name": "MODEL", "value": "resnet"}])
    with control_plane.api() as api:
        _create(api, namespace, _pod("endpoint", container, role="endpoint"))
    port = pod_harness.serve(namespace, "endpoint")
    response = httpx.get(f"http://127.0.0.1:{port}/predict", timeout=10)
    assert (response.status_code, response.text) == (200, "resnet")


def test_deleting_a_pod_ends_its_process(control_plane, pod_harness, namespace):
    container = _container("""
        import os, time
        with open("pid.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("pid.tmp", "pid")
        time.sleep(300)
        """)
    with control_plane.api() as api:
        _create(api, namespace, _pod("doomed", container, role="train"))
        pid_file = wait_until(lambda: next(pod_harness.workdir.glob(
            f"{namespace}.doomed.*/cwd/pid"), None), 30, "the pod's process to start")
        pid = int(pid_file.read_text())
        assert _alive(pid)
        api.delete(f"/api/v1/namespaces/{namespace}/pods/doomed").raise_for_status()
    wait_until(lambda: not _alive(pid), 30, "the deleted pod's process to end")


def test_stop_leaves_no_process_behind(control_plane, namespace, tmp_path):
    # A harness of its own, on pods no other harness runs.
    harness = PodHarness(control_plane, base_env=default_env(), workdir=tmp_path,
                         selector="mlform.dev/role=stop-test").start()
    pids_file = "pids"
    sleeper = _container(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open("{pids_file}.tmp", "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        os.rename("{pids_file}.tmp", "{pids_file}")
        time.sleep(300)
        """)
    try:
        with control_plane.api() as api:
            _create(api, namespace, _job("sleeper", sleeper, role="stop-test"))
            _create(api, namespace, _pod("server", _container(SERVER, env=[
                {"name": "MODEL", "value": "m"}]), role="endpoint"))
        harness.serve(namespace, "server")
        written = wait_until(lambda: list(tmp_path.glob(f"*/cwd/{pids_file}")), 30,
                             "the sleeper to write its pids")
        pids = [int(p) for p in written[0].read_text().split()]
    finally:
        harness.stop()
    assert list(tmp_path.glob("*-serve0/output.log"))  # the serve run had its place
    assert not [pid for pid in pids if _alive(pid)]
    # Nor anything else working in the harness's folders (what the processes started).
    assert not _children_running(tmp_path)


def _alive(pid: int) -> bool:
    """Running, that is: neither gone nor a zombie (the orphaned grandchild is reaped by
    whatever init this machine has, perhaps never)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:  # gone, or going between open and read (ESRCH)
        return False
    return state not in ("Z", "X")


def _children_running(workdir) -> list[int]:
    """Processes whose cwd is under `workdir` (the harness's runs and their children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(workdir)):
            found.append(int(entry))
    return found


def test_a_broken_watch_is_raised_not_swallowed(control_plane, tmp_path):
    harness = PodHarness(control_plane, base_env=default_env(), workdir=tmp_path,
                         selector="mlform.dev/role in (")  # the API refuses it: 400
    with pytest.raises(HarnessError, match="400"):
        harness.start()

