"""The pod harness: a stand-in kubelet that runs chosen pods' commands as local processes.

Nothing in the test cluster runs containers (kwok fakes the kubelet: pods become
Running and stay so).  For the pods whose container *is* the thing under test (training
and monitoring jobs, labelled `mlform.dev/role` `train` or `monitor`), the harness plays
the container: once kwok has marked such a pod Running, it runs the first container's
`command + args` as a local process, with `python`/`python3` meaning this interpreter,
and when the process exits it writes the pod's status the way a kubelet does (phase
Succeeded/Failed, the container terminated with its exit code and termination message).
The Job controller then finishes the Job as it would on a real cluster.

    harness = PodHarness(plane, base_env={"PATH": ..., "HOME": ...}, workdir=tmp).start()
    try:
        ...                                   # create Jobs; wait for them to finish
        harness.log(namespace, pod_name)      # the process's stdout and stderr
        port = harness.serve(namespace, pod)  # an endpoint pod's server, on a local port
    finally:
        harness.stop()                        # ends every process; raises what went wrong

An image listed in `harness.unpullable` is not run: its pod goes back to Pending with the
container waiting in `ImagePullBackOff`, as on a node that cannot pull it.
`fail_next(...)` makes the next pod end with a given reason without running it (e.g. an
`OOMKilled`, which a local process cannot be made to produce honestly).

Errors in the harness's threads (a watch that breaks, a status the API refuses) are kept
and raised by `check()` and `stop()`, never only logged.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx

from _waiting import wait_until

__all__ = ["PodHarness", "HarnessError", "default_env", "ROLE_SELECTOR", "TERMINATION_LOG_ENV",
           "USER_AGENT"]

# The pods the harness runs; endpoint pods are started on request only (`serve`).
ROLE_SELECTOR = "mlform.dev/role in (train,monitor,serve)"
#: serving pods are watched but run only when a test asks (`serve`); they end when their
#: pod is deleted, as a kubelet's containers would
SERVE_ROLE = "serve"
# A container that declares this variable gets it set to a file the harness reads when the
# process exits, as a kubelet reads the file at `terminationMessagePath`.
TERMINATION_LOG_ENV = "MLFORM_TERMINATION_LOG"
# The kubelet's limits (pkg/kubelet/container/runtime.go): a termination message file is
# read up to its last 4096 bytes; the log fallback takes the last 80 lines, at most 2048
# bytes of them.
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
# How long a process has between SIGTERM and SIGKILL when the harness stops it.
GRACE_S = 5.0
# The API server closes a watch after this long; the harness resumes it where it was.
WATCH_S = 300
USER_AGENT = "mlform-pod-harness"
# In each run's directory, beside the process's cwd.
LOG_NAME, TERMINATION_LOG_NAME = "output.log", "termination-log"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


def default_env() -> dict[str, str]:
    """The base environment of the harness's processes in the tests and `make k8s-up`:
    PATH and HOME, and the credentials of the tests' S3 (moto).  Nothing else of the
    starting process's environment reaches the pods' processes."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


class HarnessError(RuntimeError):
    """Something went wrong in the harness's own threads (see `PodHarness.check`)."""


@dataclass
class _Forced:
    """An outcome `fail_next` asked for, taken by the next pod the harness would run."""

    namespace: str | None
    reason: str
    message: str
    exit_code: int


@dataclass
class _Run:
    """One process the harness started for a pod (a job pod's run, or a `serve`)."""

    namespace: str
    name: str
    uid: str
    directory: Path
    proc: subprocess.Popen
    container: dict
    started_at: str
    serving: bool = False
    # Set before the harness kills the process itself (stop, pod deleted): its exit is
    # then no outcome of the pod's and must not be reported as one.
    killed: bool = False
    waiter: threading.Thread | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def termination_log(self) -> Path:
        return self.directory / TERMINATION_LOG_NAME


class PodHarness:
    """Runs the commands of chosen pods as local processes: by default those with
    `mlform.dev/role` train or monitor once Running, and `serve` pods on request.

    `base_env` is the whole environment of every process besides the container's own
    plain `env` values (so nothing leaks in from the test process); `workdir` holds one
    fresh directory per pod run (its cwd, its log, its termination log).  `unpullable`
    (a set, changeable while the harness runs) names images whose pods get
    `ImagePullBackOff` instead of a run.  `selector` (a label selector) chooses the pods
    to run; a second harness on the same plane needs pods of its own.
    """

    def __init__(self, plane, *, base_env: Mapping[str, str], workdir: Path,
                 unpullable: set[str] | frozenset[str] = frozenset(),
                 selector: str = ROLE_SELECTOR) -> None:
        self.plane = plane
        self.selector = selector
        self.base_env = dict(base_env)
        self.workdir = Path(workdir)
        self.unpullable: set[str] = set(unpullable)
        self._lock = threading.Lock()
        self._runs: list[_Run] = []                      # every run, in start order
        self._latest: dict[tuple[str, str], _Run] = {}   # (namespace, pod) -> last run
        self._seen: set[str] = set()                     # uids of pods acted upon
        self._forced: deque[_Forced] = deque()
        self._errors: list[BaseException] = []
        self._outage = threading.Event()          # the API server is down on purpose
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._watch_response: httpx.Response | None = None
        self._thread: threading.Thread | None = None
        self._api: httpx.Client | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> "PodHarness":
        """Start watching; returns once the first listing of pods has been handled."""
        if self._thread is not None:
            raise RuntimeError("the pod harness is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._api = self._client()
        self._thread = threading.Thread(target=self._watch_loop, name="pod-harness-watch",
                                        daemon=True)
        self._thread.start()
        try:
            wait_until(lambda: self._synced.is_set() or self.errors, timeout,
                       "the pod harness's first listing of pods", interval=0.05)
        except AssertionError:
            self.stop()
            raise
        if not self._synced.is_set():
            self.stop()  # raises what the first listing ran into
        return self

    def stop(self) -> None:
        """End every process still running (serve processes too), stop the watch thread,
        and raise what went wrong in the harness's threads, if anything did."""
        self._stopping.set()
        with self._lock:
            # a leader that exited may have left children in its group: those end too
            runs = [run for run in self._runs if run.proc.poll() is None
                    or (not isinstance(run.proc, _NotStarted) and _group_members(run.proc.pid))]
            for run in runs:
                run.killed = True
            response = self._watch_response
        if response is not None:
            _interrupt(response)
        for run in runs:
            self._end(run)
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._record(HarnessError("the pod harness's watch thread did not stop"))
        with self._lock:
            waiters = [run.waiter for run in self._runs if run.waiter is not None]
        for waiter in waiters:
            waiter.join(timeout=10)
        if self._api is not None:
            self._api.close()
        self.check()

    @property
    def errors(self) -> list[BaseException]:
        """What went wrong in the harness's threads so far, oldest first (a copy)."""
        with self._lock:
            return list(self._errors)

    def check(self) -> None:
        """Raise HarnessError (from the first of them) if the harness's threads failed."""
        errors = self.errors
        if errors:
            summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors[:5])
            more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise HarnessError(f"{len(errors)} error(s) in the pod harness: "
                               f"{summary}{more}") from errors[0]

    # ------------------------------------------------------------------ for tests

    def log(self, namespace: str, pod: str) -> str:
        """The stdout and stderr of the latest process run for that pod, so far."""
        with self._lock:
            run = self._latest.get((namespace, pod))
        if run is None:
            raise KeyError(f"the pod harness has run nothing for pod {namespace}/{pod}")
        return run.log_path.read_text(errors="replace")

    def fail_next(self, namespace: str | None, reason: str, message: str = "",
                  exit_code: int = 1) -> None:
        """The next pod the harness would run (in `namespace`, or any when None) ends at
        once with this terminated state instead (phase Succeeded for exit code 0)."""
        with self._lock:
            self._forced.append(_Forced(namespace, reason, message, exit_code))

    def serve(self, namespace: str, pod_name: str, port_env: str = "MLFORM_PORT",
              timeout: float = 30) -> int:
        """Run an endpoint pod's command with `port_env` set to a free 127.0.0.1 port and
        return the port, once something accepts connections on it."""
        response = self._api.get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
        response.raise_for_status()
        pod = response.json()
        port = _free_port()
        run = self._spawn(pod, extra_env={port_env: str(port)}, serving=True)
        if run is None:
            raise HarnessError("the pod harness is stopping")

        def listening() -> bool:
            if run.proc.poll() is not None:
                raise AssertionError(
                    f"{namespace}/{pod_name} exited with {run.proc.returncode} before "
                    f"listening on port {port}:\n{run.log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True
        wait_until(listening, timeout, f"{namespace}/{pod_name} to listen on port {port}",
                   interval=0.05)
        return port

    @contextmanager
    def outage(self) -> Iterator[None]:
        """While the test has the API server down: the harness's lost connections are
        expected, not errors (it reconnects once the server is back)."""
        self._outage.set()
        try:
            yield
        finally:
            self._outage.clear()

    # ------------------------------------------------------------------ the watch

    def _client(self) -> httpx.Client:
        # The plane's admin, as kwok and the tests are: a user agent of its own tells the
        # harness's requests apart in the audit log.
        client = self.plane.api()
        client.headers["User-Agent"] = USER_AGENT
        return client

    def _record(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)

    def _watch_loop(self) -> None:
        """List, then watch from the list's resourceVersion; list again when the watch
        falls too far behind (410 Gone).  Errors are recorded and the loop goes on."""
        with self._client() as api:
            version = None
            while not self._stopping.is_set():
                try:
                    if version is None:
                        version = self._list(api)
                        self._synced.set()
                    version = self._watch(api, version)
                except _Gone:
                    version = None
                except Exception as error:  # noqa: BLE001 - kept for check()/stop()
                    if self._stopping.is_set():
                        break
                    if not (self._outage.is_set() and isinstance(
                            error, (httpx.TransportError, httpx.HTTPStatusError))):
                        self._record(error)
                    version = None
                    self._stopping.wait(1)

    def _list(self, api: httpx.Client) -> str:
        response = api.get("/api/v1/pods", params={"labelSelector": self.selector})
        response.raise_for_status()
        listing = response.json()
        for pod in listing["items"]:
            self._on_pod("ADDED", pod)
        return listing["metadata"]["resourceVersion"]

    def _watch(self, api: httpx.Client, version: str) -> str:
        params = {"watch": "1", "labelSelector": self.selector, "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_S)}
        # No read timeout: the server ends the watch after WATCH_S, and stop() interrupts it.
        with api.stream("GET", "/api/v1/pods", params=params,
                        timeout=httpx.Timeout(30, read=None)) as response:
            if response.status_code == 410:
                raise _Gone()
            response.raise_for_status()
            with self._lock:
                if self._stopping.is_set():
                    return version
                self._watch_response = response
            try:
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone()
                        raise HarnessError(f"the pod watch failed: {obj.get('message', obj)}")
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._on_pod(kind, obj)
            except httpx.HTTPError:
                if self._stopping.is_set():
                    return version
                raise
            finally:
                with self._lock:
                    self._watch_response = None
        return version

    def _on_pod(self, kind: str, pod: dict) -> None:
        """What a kubelet would do about this pod: kill it when deleted, run it (or fail
        to pull its image) once it is Running and new to the harness."""
        try:
            meta, status = pod["metadata"], pod.get("status") or {}
            uid = meta["uid"]
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                self._kill_pod(uid)
                return
            if status.get("phase") != "Running":
                return
            if (meta.get("labels") or {}).get("mlform.dev/role") == SERVE_ROLE:
                return
            with self._lock:
                if uid in self._seen or self._stopping.is_set():
                    return
                self._seen.add(uid)
                forced = self._take_forced(meta["namespace"])
            container = pod["spec"]["containers"][0]
            if forced is not None:
                now = _now()
                self._report(pod, forced.exit_code, forced.reason, forced.message, now, now)
            elif container.get("image") in self.unpullable:
                self._report_unpullable(pod)
            else:
                run = self._spawn(pod)
                if run is not None:
                    run.waiter = threading.Thread(
                        target=self._await_exit, args=(run, pod), daemon=True,
                        name=f"pod-harness-{meta['namespace']}/{meta['name']}")
                    run.waiter.start()
        except Exception as error:  # noqa: BLE001 - kept for check()/stop()
            self._record(error)

    def _take_forced(self, namespace: str) -> _Forced | None:
        for forced in self._forced:
            if forced.namespace in (None, namespace):
                self._forced.remove(forced)
                return forced
        return None

    def _kill_pod(self, uid: str) -> None:
        """A deleted pod's processes end, as its containers would (serve ones included).
        In threads of their own: the watch does not wait out a grace period."""
        with self._lock:
            runs = [r for r in self._runs if r.uid == uid and r.proc.poll() is None]
            for run in runs:
                run.killed = True
        for run in runs:
            threading.Thread(target=self._end, args=(run,), daemon=True,
                             name=f"pod-harness-kill-{run.namespace}/{run.name}").start()

    def _end(self, run: _Run) -> None:
        try:
            _terminate(run.proc)
        except Exception as error:  # noqa: BLE001 - kept for check()/stop()
            self._record(error)

    # ------------------------------------------------------------------ processes

    def _spawn(self, pod: dict, *, extra_env: Mapping[str, str] = {},
               serving: bool = False) -> _Run | None:
        """Start the pod's first container as a process (None when stopping)."""
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        started_at = _now()
        with self._lock:
            if self._stopping.is_set():
                return None
            name = f"{meta['namespace']}.{meta['name']}.{meta['uid'][:8]}"
            if serving:  # a pod may be served more than once
                name += f"-serve{sum(r.uid == meta['uid'] and r.serving for r in self._runs)}"
            directory = self.workdir / name
            cwd = directory / "cwd"
            cwd.mkdir(parents=True)
            with open(directory / LOG_NAME, "wb") as log:
                try:
                    env, argv = _process(container, self.base_env, meta)
                    env.update(extra_env)
                    if TERMINATION_LOG_ENV in env:
                        env[TERMINATION_LOG_ENV] = str(directory / TERMINATION_LOG_NAME)
                    # A session of its own: stop() ends the process's children with it.
                    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                except (OSError, _CannotRun) as error:
                    if serving:
                        raise
                    # The pod fails as on a node whose runtime cannot start the command.
                    proc = _NotStarted(f"{type(error).__name__}: {error}")
            run = _Run(meta["namespace"], meta["name"], meta["uid"], directory, proc,
                       container, started_at, serving=serving)
            self._runs.append(run)
            self._latest[(run.namespace, run.name)] = run
        return run

    def _await_exit(self, run: _Run, pod: dict) -> None:
        try:
            code = run.proc.wait()
            with self._lock:
                if run.killed:
                    return
            if isinstance(run.proc, _NotStarted):
                self._report(pod, 128, "StartError", run.proc.message, run.started_at, _now())
                return
            if code < 0:  # killed by a signal: runtimes report 128 + signal number
                code = 128 - code
            self._report(pod, code, "Completed" if code == 0 else "Error",
                         _termination_message(run, code), run.started_at, _now())
        except Exception as error:  # noqa: BLE001 - kept for check()/stop()
            self._record(error)

    # ------------------------------------------------------------------ statuses

    def _report(self, pod: dict, exit_code: int, reason: str, message: str,
                started_at: str, finished_at: str) -> None:
        """The pod ended: phase, Ready conditions and container states, as a kubelet
        writes them once every container has terminated."""
        succeeded = exit_code == 0
        names = [c["name"] for c in pod["spec"]["containers"]]
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                      "finishedAt": finished_at}
        if message:
            terminated["message"] = message
        statuses = [_container_status(pod["spec"]["containers"][0], terminated=terminated)]
        # The pod is over, so its other containers (never run here) are over too.
        statuses += [_container_status(c, terminated={
            "exitCode": 0, "reason": "Completed", "startedAt": started_at,
            "finishedAt": finished_at}) for c in pod["spec"]["containers"][1:]]
        if succeeded:
            condition = {"status": "False", "reason": "PodCompleted"}
        else:
            condition = {"status": "False", "reason": "ContainersNotReady",
                         "message": f"containers with unready status: [{' '.join(names)}]"}
        self._patch_status(pod, {
            "phase": "Succeeded" if succeeded else "Failed",
            "conditions": _conditions(condition, finished_at),
            "containerStatuses": statuses})

    def _report_unpullable(self, pod: dict) -> None:
        """The first container's image cannot be pulled: the pod never starts."""
        first, *others = pod["spec"]["containers"]
        image = first.get("image", "")
        waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        current = {s.get("name"): s for s in (pod.get("status") or {}).get(
            "containerStatuses") or []}
        statuses = [_container_status(first, waiting=waiting)]
        statuses += [current.get(c["name"]) or _container_status(c, waiting={
            "reason": "PodInitializing"}) for c in others]
        self._patch_status(pod, {
            "phase": "Pending",
            "conditions": _conditions({
                "status": "False", "reason": "ContainersNotReady",
                "message": f"containers with unready status: [{first['name']}]"}, _now()),
            "containerStatuses": statuses})

    def _patch_status(self, pod: dict, status: dict) -> None:
        """PATCH the status subresource (strategic merge: `conditions` merge by type,
        `containerStatuses` is replaced whole).  The uid in the patch is a precondition,
        as in the kubelet's patches: a pod recreated under the same name is left alone."""
        meta = pod["metadata"]
        response = self._api.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            content=json.dumps({"metadata": {"uid": meta["uid"]}, "status": status}),
            headers={"Content-Type": STRATEGIC_MERGE})
        # Gone (404) or replaced (409): there is no pod left to report to.
        if response.status_code not in (404, 409):
            response.raise_for_status()


# ---------------------------------------------------------------------- helpers

class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class _CannotRun(Exception):
    """The harness cannot run this container (it has no explicit command)."""


class _NotStarted:
    """Stands in for the Popen of a command that could not be started."""

    returncode = 128

    def __init__(self, message: str) -> None:
        self.message = message
        self.pid = None

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def _process(container: dict, base_env: Mapping[str, str],
             meta: Mapping | None = None) -> tuple[dict[str, str], list[str]]:
    """The environment and argv of a container's process, as a kubelet would make them:
    `$(VAR)` in env values, command and args refers to the container's env; a
    `valueFrom.fieldRef` to the pod's metadata is resolved (the Job controller gives an
    Indexed Job's pods `JOB_COMPLETION_INDEX` that way); secrets have no value here."""
    declared: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            declared[var["name"]] = _expand(var["value"], declared)
        elif meta is not None:
            field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            found = _field(meta, field) if isinstance(field, str) else None
            if found is not None:
                declared[var["name"]] = found
    argv = [_expand(a, declared)
            for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv:
        # The image's entrypoint is not known here: only explicit commands can be run.
        raise _CannotRun(f"container {container.get('name')!r} has no command: the pod "
                         f"harness runs only containers with an explicit command")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return {**base_env, **declared}, argv


_FIELD = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]")


def _field(meta: Mapping, path: str) -> str | None:
    """A `fieldRef` path into the pod's metadata (name, namespace, uid, an annotation or
    a label), or None for what this harness does not know."""
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return meta.get(path.split(".", 1)[1])
    match = _FIELD.fullmatch(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2))
    return None


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' variable expansion: `$(NAME)` becomes its value when NAME is defined
    (and stays as written when not); `$$` is a literal `$`."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _REFERENCE.sub(replace, text)


def _termination_message(run: _Run, exit_code: int) -> str:
    """The kubelet's rule: the termination message file when it has anything in it, else,
    for a failure under FallbackToLogsOnError, the tail of the container's log."""
    path = run.termination_log
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()[-MAX_TERMINATION_MESSAGE:]
        return data.decode(errors="replace")
    policy = run.container.get("terminationMessagePolicy", "File")
    if policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = run.log_path.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
    return ""


def _container_status(container: dict, **state: dict) -> dict:
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": False, "restartCount": 0, "started": False, "state": state}


def _conditions(ready: dict, at: str) -> list[dict]:
    return [{"type": kind, "lastTransitionTime": at, **ready}
            for kind in ("Ready", "ContainersReady")]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the process's group, SIGKILL it after GRACE_S, reap the process, and
    return once nothing of its group runs any more (its children included)."""
    if isinstance(proc, _NotStarted):
        return
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader is gone, but others of its group may linger, or still be on their way
    # out.  (That its pid, the group's id, went this fast to a new group's leader is a
    # risk a test machine can take.)
    if _group_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not _group_members(proc.pid), 10,
                   f"the processes of group {proc.pid} to end", interval=0.01)


def _group_members(pgid: int) -> list[int]:
    """The processes of a process group that have not exited (zombies have: an orphan's
    may never be reaped on a machine whose init does not)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # "pid (comm) state ppid pgrp ...": comm may hold anything but ")".
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _interrupt(response: httpx.Response) -> None:
    """Wake a thread blocked reading this streaming response: closing a socket does not
    interrupt a recv() in another thread, shutting it down does."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
