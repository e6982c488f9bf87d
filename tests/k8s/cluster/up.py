"""`make k8s-up` / `make k8s-down`: the tests' cluster, left running for trying things by hand.

`up` starts, in a background process of its own session, what a test session has: the
control plane (control_plane.py) with the same nodes, the pod harness (../harness.py)
running training and monitoring pods as local processes, and an S3 (a moto server with
the bucket "mlform") for the kubernetes environment's storage.  It waits until the API
answers, then prints the `export` lines for the quickstart's kubernetes environment
(also kept in .tools/k8s-run/env.sh).  Run twice, it says it is running already.
`down` stops the background process (its process group, then anything of it that is
left) and removes .tools/k8s-run.

    python tests/k8s/cluster/up.py           # make k8s-up
    python tests/k8s/cluster/up.py --down    # make k8s-down
    python tests/k8s/cluster/up.py --serve   # the background process itself
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# control_plane, harness and _waiting live in three folders of tests/.
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

import httpx  # noqa: E402

from _waiting import wait_until  # noqa: E402
from control_plane import NODES, REPO, ControlPlane, free_port, tools_dir  # noqa: E402

RUN = REPO / ".tools" / "k8s-run"
PID = RUN / "pid"
READY = RUN / "ready.json"
ENV_FILE = RUN / "env.sh"
LOG = RUN / "up.log"
BUCKET = "mlform"
STORAGE = f"s3://{BUCKET}/{{stack}}/{{env}}"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


# ---------------------------------------------------------------------- up / down

def up() -> int:
    pid = _running_pid()
    if pid is not None:
        print(f"the test cluster is already running (pid {pid}; make k8s-down stops it)")
        print(ENV_FILE.read_text() if ENV_FILE.exists() else "(it is still starting)", end="")
        return 0
    _clean()  # what a background process that died abruptly may have left
    RUN.mkdir(parents=True)
    with open(LOG, "wb") as log:
        # A session of its own: it outlives this process and `make`, and `down` can end
        # it as a group.
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)
    PID.write_text(str(proc.pid))

    def ready():
        if proc.poll() is not None:
            raise SystemExit(f"the test cluster did not start (exit {proc.returncode}):\n"
                             + LOG.read_text(errors="replace")[-4000:])
        return READY.exists()
    try:
        wait_until(ready, START_TIMEOUT_S, "the test cluster to start", interval=0.2)
        info = json.loads(READY.read_text())
        _wait_for_api(info)
    except BaseException:
        down(quiet=True)
        raise
    env = _exports(info)
    ENV_FILE.write_text(env)
    print(f"the test cluster is running (pid {proc.pid}; make k8s-down stops it)\n"
          f"kubeconfig: {info['kubeconfig']}\n"
          f"nodes: {', '.join(_describe(n, r) for n, r in NODES.items())}\n"
          f"pods labelled mlform.dev/role=train or monitor run as local processes "
          f"(logs under {RUN / 'pods'})\n"
          f"storage: a moto S3 server on port {info['s3_port']} with the bucket {BUCKET!r}\n"
          f"then: mlform -C stacks/quickstart apply --env kubernetes, after "
          f". {ENV_FILE.relative_to(REPO)}, or:\n")
    print(env, end="")
    return 0


def down(quiet: bool = False) -> int:
    pid = _read_pid()
    if pid is None and not RUN.exists():
        if not quiet:
            print("the test cluster is not running")
        return 0
    stopped = False
    if _running_pid() is not None:
        _signal_group(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S, "the test cluster to stop",
                       interval=0.1)
            stopped = True
        except AssertionError:
            _signal_group(pid, signal.SIGKILL)
    # The plane's processes and the pods' have sessions of their own, which the group
    # signal does not reach: the background process ends them itself on SIGTERM.  Only
    # when it could not (killed, or found dead) are its leftovers looked for.
    _clean(leftovers=not stopped)
    if not quiet:
        print("the test cluster is stopped")
    return 0


def _wait_for_api(info: dict) -> None:
    with httpx.Client(base_url=info["server"], verify=info["ca"],
                      cert=(info["client_cert"], info["client_key"]), timeout=5) as api:
        def answers():
            try:
                return api.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(answers, 30, "the API server to answer", interval=0.2)


def _exports(info: dict) -> str:
    # the quickstart's environments/kubernetes.hcl reads these variables
    env = {"KUBECONFIG": info["kubeconfig"], "MLFORM_VAR_k8s_kubeconfig": info["kubeconfig"],
           "MLFORM_VAR_k8s_storage": STORAGE,
           "MLFORM_VAR_k8s_endpoint_url": f"http://127.0.0.1:{info['s3_port']}", **AWS}
    return "".join(f"export {k}={v}\n" for k, v in env.items())


def _describe(name: str, resources: dict) -> str:
    if resources.get("gpus"):
        return f"{name} ({resources['gpus']} × {resources.get('gpu_product') or 'GPU'})"
    return name


# ---------------------------------------------------------------------- processes

def _read_pid() -> int | None:
    try:
        return int(PID.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _running_pid() -> int | None:
    """The background process's pid, if it runs (and the pid is not another's by now)."""
    pid = _read_pid()
    if pid is None or not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"--serve" in cmdline and any(a.endswith(b"up.py") for a in cmdline) else None


def _alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (an orphan's exit may never be reaped here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):  # gone, or going between open and read (ESRCH)
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _leftovers() -> list[int]:
    """Processes naming RUN on their command line (the plane's binaries: their files are
    there) or working in RUN/pods (the pods' processes)."""
    run, pods, found = str(RUN), str(RUN / "pods"), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if run in cmdline.decode(errors="replace") or cwd.startswith(pods):
            found.append(int(entry))
    return found


def _clean(leftovers: bool = True) -> None:
    for pid in _leftovers() if leftovers else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(RUN, ignore_errors=True)


# ---------------------------------------------------------------------- the background

def serve() -> int:
    """Start everything, write READY, and run until SIGTERM; then stop everything."""
    from harness import PodHarness, default_env  # the harness needs tests/ on sys.path
    from moto.server import ThreadedMotoServer
    import boto3

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plane = harness = s3 = None
    try:
        plane = ControlPlane(tools_dir(), RUN / "plane").start()
        for name, resources in NODES.items():
            plane.add_node(name, **resources)
        harness = PodHarness(plane, base_env=default_env(), workdir=RUN / "pods").start()
        s3_port = free_port()
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        s3.start()
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=BUCKET)
        info = {"server": plane.server, "kubeconfig": str(plane.kubeconfig),
                "ca": str(plane.keys["ca.crt"]), "client_cert": str(plane.keys["admin.crt"]),
                "client_key": str(plane.keys["admin.key"]), "s3_port": s3_port}
        # Written whole, then renamed: `up` never reads half a file.
        (RUN / "ready.json.tmp").write_text(json.dumps(info))
        (RUN / "ready.json.tmp").rename(READY)
        print(f"{time.strftime('%H:%M:%S')} ready: {json.dumps(info)}", flush=True)
        # Until told to stop.  A part of the plane that dies ends it all; the harness's
        # errors are logged as they come, and the cluster stays up.
        reported = 0
        while not stop.wait(2):
            dead = [name for name, proc in plane.procs if proc.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited: stopping", flush=True)
                return 1
            errors = harness.errors
            for error in errors[reported:]:
                print(f"{time.strftime('%H:%M:%S')} pod harness: {type(error).__name__}: "
                      f"{error}", flush=True)
            reported = len(errors)
        return 0
    finally:
        print(f"{time.strftime('%H:%M:%S')} stopping", flush=True)
        if harness is not None:
            try:
                harness.stop()
            except Exception as error:  # noqa: BLE001 - the rest must stop all the same
                print(error, flush=True)
        if s3 is not None:
            s3.stop()
        if plane is not None:
            plane.stop()
        print(f"{time.strftime('%H:%M:%S')} stopped", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--down", action="store_true", help="stop the background cluster")
    mode.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    return down() if args.down else up()


if __name__ == "__main__":
    sys.exit(main())
