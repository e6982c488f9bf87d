"""A real Kubernetes control plane on 127.0.0.1 for tests, without containers.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes
that move pods through their lifecycle), started in that order on free loopback
ports from the binaries `build.sh` makes (see README.md).  Nothing runs a
container: kwok marks scheduled pods Running/Ready and removes deleted ones; how a pod
ends is left to the test's pod harness (`../harness.py`), which plays the kubelet.

    plane = ControlPlane(tools_dir(), tmp_path)
    plane.start()
    try:
        ... plane.kubeconfig, plane.api() ...
    finally:
        plane.stop()
"""

from __future__ import annotations

import base64
import json
import uuid
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from _waiting import wait_until

#: what lightkube (so mlform) sends as its user agent: its requests in the audit log
MLFORM_AGENT = "python-httpx2"
MUTATING = ("create", "update", "patch", "delete", "deletecollection")

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# kwok's shipped stages (kustomize/stage/ of its module, copied by build.sh): nodes
# become Ready and keep a heartbeat; pods become Ready, deleted pods go away.  Its
# pod-complete stage (Job pods Succeeded at once) is left out: the pod harness decides
# when and how a pod ends, and kwok would race it.
STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat/node-heartbeat.yaml",
          "pod/fast/pod-ready.yaml", "pod/fast/pod-delete.yaml")
# Extra selector terms for shipped stages.  pod-ready takes any Pending pod that is not
# Ready; a pod the harness has put back to Pending because its image "cannot be pulled"
# is exactly that, and kwok would mark it Running again at once.
STAGE_SELECTORS = {
    "pod-ready": [{"key": ".status.containerStatuses[]?.state.waiting.reason",
                   "operator": "NotIn", "values": ["ImagePullBackOff", "ErrImagePull"]}],
}
REPO = Path(__file__).resolve().parents[3]
# The nodes of the tests' session plane and of `make k8s-up` (`add_node` arguments): one
# CPU node, and two GPU nodes of two GPUs each, so that a workload can fill one node or
# need more than one node holds.
NODES: dict[str, dict[str, Any]] = {
    "kwok-cpu-0": {},
    "kwok-gpu-0": {"gpus": 2, "gpu_product": "NVIDIA-H100-80GB-HBM3"},
    "kwok-gpu-1": {"gpus": 2, "gpu_product": "NVIDIA-H100-80GB-HBM3"},
}


def tools_dir() -> Path:
    """Where the binaries are: MLFORM_K8S_BIN (a folder build.sh made, used as it is), or
    .tools/k8s in the repo, where build.sh builds them."""
    return Path(os.environ.get("MLFORM_K8S_BIN") or REPO / ".tools" / "k8s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- keys

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          sans: list | None = None, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [usage.CLIENT_AUTH] if client else [usage.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Keys:
    """A CA, the API server's serving pair, an admin client pair (system:masters) and
    the service-account signing pair, as files under `directory`."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    def make(self) -> "Keys":
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlform-test-ca")])
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        server_key = _key()
        server = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                       server_key, ca_name, ca_key,
                       sans=[x509.DNSName("localhost"),
                             x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                             x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
        admin_key = _key()
        admin = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]),
                      admin_key, ca_name, ca_key, client=True)
        sa_key = _key()
        pem = serialization.Encoding.PEM
        contents = {
            "ca.crt": ca.public_bytes(pem), "ca.key": _pem_key(ca_key),
            "server.crt": server.public_bytes(pem), "server.key": _pem_key(server_key),
            "admin.crt": admin.public_bytes(pem), "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                pem, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for name, data in contents.items():
            path = self.directory / name
            path.write_bytes(data)
            self.files[name] = path
        return self

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


# ------------------------------------------------------------------------- plane

class ControlPlane:
    """The five processes, their ports and files; `start` waits for each to be ready."""

    def __init__(self, tools: Path, root: Path) -> None:
        missing = [b for b in BINARIES if not (tools / b).is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not in {tools}: run "
                                    f"tests/k8s/cluster/build.sh first")
        self.tools = tools
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.keys = Keys(root / "pki")
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = root / "kubeconfig"

    # -------------------------------------------------------------- processes

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen([str(self.tools / name), *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def _alive(self, name: str, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait(self, name: str, proc: subprocess.Popen, ready, timeout: float = 90) -> None:
        def check():
            self._alive(name, proc)
            try:
                return ready()
            except httpx.HTTPError:
                return False
        wait_until(check, timeout, f"{name} to be ready", interval=0.2)

    def api(self) -> httpx.Client:
        """An HTTP client for the API server, as the admin (system:masters)."""
        context = ssl.create_default_context(cafile=str(self.keys["ca.crt"]))
        context.load_cert_chain(str(self.keys["admin.crt"]), str(self.keys["admin.key"]))
        return httpx.Client(base_url=self.server, verify=context, timeout=30)

    # -------------------------------------------------------------- the audit log

    def audit_offset(self) -> int:
        """Where the audit log ends now (for `requests(since=...)`)."""
        return self.audit_log.stat().st_size

    def requests(self, since: int = 0, agent: str = MLFORM_AGENT) -> list[dict]:
        """Completed requests whose user agent starts with `agent`, logged from byte
        `since` on.  The log backend writes an event just after its response: a marker
        request is made and waited for, so every request answered before this call is in."""
        marker = f"mlform-audit-marker-{uuid.uuid4().hex[:12]}"
        with self.api() as api:     # a GET of nothing (404): no object, no mutation
            api.get(f"/api/v1/namespaces/default/configmaps/{marker}")

        def caught_up() -> tuple[list[dict]] | None:    # a tuple: [] is an answer too
            with open(self.audit_log, "rb") as f:
                f.seek(since)
                lines = f.read().decode(errors="replace").splitlines()
            events = []
            for line in lines:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue        # a line still being written
            done = [e for e in events if e.get("stage") == "ResponseComplete"]
            if not any((e.get("objectRef") or {}).get("name") == marker for e in done):
                return None
            return ([e for e in done if e.get("userAgent", "").startswith(agent)],)
        return wait_until(caught_up, 30, "the audit log to catch up", interval=0.02)[0]

    def mutating_requests(self, since: int = 0) -> list[dict]:
        """mlform's requests that changed something (dry runs are not changes)."""
        return [e for e in self.requests(since) if e.get("verb") in MUTATING
                and "dryRun" not in e.get("requestURI", "")]

    def start(self) -> "ControlPlane":
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys.make()
        try:
            self._etcd()
            self._apiserver()
            self._write_kubeconfig()
            self._controller_manager()
            self._scheduler()
            self._kwok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM each process in reverse order of start and wait for it (SIGKILL the
        slow) before the next: the API server's shutdown still talks to etcd (its
        endpoint lease), and with etcd gone at the same time it waits out a timeout
        (20 s of the test session's teardown)."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    # -------------------------------------------------------------- the parts

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn(
            "etcd", "--name=default", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}", "--unsafe-no-fsync",
            "--log-level=warn")
        self._wait("etcd", proc, lambda: httpx.get(f"{self.etcd_url}/health").status_code == 200)

    def _apiserver(self) -> None:
        keys = self.keys
        policy = self.root / "audit-policy.yaml"
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                          "- level: Metadata\n")
        self.audit_log = self.root / "audit.log"
        self._apiserver_args = (
            f"--etcd-servers={self.etcd_url}",
            f"--secure-port={self.port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={keys['server.crt']}", f"--tls-private-key-file={keys['server.key']}",
            f"--client-ca-file={keys['ca.crt']}", "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={keys['sa.pub']}",
            f"--service-account-signing-key-file={keys['sa.key']}",
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            f"--cert-dir={self.root / 'apiserver-certs'}")
        self._start_apiserver()

    def _start_apiserver(self) -> None:
        proc = self._spawn("kube-apiserver", *self._apiserver_args)
        with self.api() as api:
            self._wait("kube-apiserver", proc, lambda: api.get("/readyz").status_code == 200)

    def kill_apiserver(self) -> None:
        """SIGKILL the API server (a crash, an outage); `restart_apiserver` brings it back
        on the same port, with the same etcd, so the cluster's objects are still there."""
        for entry in [e for e in self.procs if e[0] == "kube-apiserver"]:
            os.killpg(entry[1].pid, signal.SIGKILL)
            entry[1].wait()
            self.procs.remove(entry)

    def restart_apiserver(self) -> None:
        self._start_apiserver()

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig for `user` (a client certificate signed by the cluster's CA, in no
        group): what RBAC lets that user do is whatever the test grants it."""
        ca_key = serialization.load_pem_private_key(self.keys["ca.key"].read_bytes(), None)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlform-test-ca")])
        key = _key()
        cert = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]), key,
                     ca_name, ca_key, client=True)
        pem = serialization.Encoding.PEM
        path = self.root / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority-data":
                    base64.b64encode(self.keys["ca.crt"].read_bytes()).decode()}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": base64.b64encode(cert.public_bytes(pem)).decode(),
                "client-key-data": base64.b64encode(_pem_key(key)).decode()}}],
            "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
        }))
        return path

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode(self.keys[name].read_bytes()).decode()

        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64("admin.crt"),
                "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        }))

    def _controller_manager(self) -> None:
        proc = self._spawn(
            "kube-controller-manager", f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0",
            f"--root-ca-file={self.keys['ca.crt']}",
            f"--service-account-private-key-file={self.keys['sa.key']}")
        with self.api() as api:
            self._wait("kube-controller-manager", proc, lambda: api.get(
                "/api/v1/namespaces/default/serviceaccounts/default").status_code == 200)

    def _scheduler(self) -> None:
        port = free_port()
        proc = self._spawn(
            "kube-scheduler", f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez")
        # Its serving certificate is self-signed: readiness is all that is asked of it.
        self._wait("kube-scheduler", proc, lambda: httpx.get(
            f"https://127.0.0.1:{port}/readyz", verify=False).status_code == 200)

    def _kwok(self) -> None:
        stages = self.root / "kwok-stages.yaml"
        docs = []
        for stage in STAGES:
            for doc in yaml.safe_load_all((self.tools / "stages" / stage).read_text()):
                if doc:
                    extra = STAGE_SELECTORS.get(doc["metadata"]["name"], [])
                    doc["spec"]["selector"]["matchExpressions"].extend(extra)
                    docs.append(doc)
        stages.write_text(yaml.safe_dump_all(docs))
        self.kwok = self._spawn(
            "kwok", f"--kubeconfig={self.kubeconfig}", f"--config={stages}",
            "--manage-all-nodes=true", "--cidr=10.244.0.0/16", "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}")

    # -------------------------------------------------------------- nodes

    def add_node(self, name: str, *, cpu: str = "32", memory: str = "256Gi",
                 gpus: int = 0, gpu_product: str = "", timeout: float = 60) -> dict:
        """A fake node kwok manages, advertising `gpus` nvidia.com/gpu as the NVIDIA GPU
        operator would; returns it once it is Ready."""
        capacity: dict[str, Any] = {"cpu": cpu, "memory": memory, "pods": "110"}
        labels = {"type": "kwok", "kubernetes.io/hostname": name}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
            labels["nvidia.com/gpu.count"] = str(gpus)
            if gpu_product:
                labels["nvidia.com/gpu.product"] = gpu_product
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels,
                             "annotations": {"kwok.x-k8s.io/node": "fake"}},
                "spec": {}, "status": {"capacity": capacity, "allocatable": capacity}}
        with self.api() as api:
            api.post("/api/v1/nodes", json=node).raise_for_status()

            def ready():
                self._alive("kwok", self.kwok)
                got = api.get(f"/api/v1/nodes/{name}").json()
                conditions = got.get("status", {}).get("conditions") or []
                return got if any(c.get("type") == "Ready" and c.get("status") == "True"
                                  for c in conditions) else None
            return wait_until(ready, timeout, f"node {name} to be Ready", interval=0.2)


__all__ = ["ControlPlane", "Keys", "tools_dir", "free_port", "BINARIES", "NODES"]
