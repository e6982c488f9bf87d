"""What the kubernetes provider's tests share: a provider on the session's cluster with
moto's S3 as storage, one stack name per test, and helpers to create resources the way
the engine does (validate, plan, create), and a serving pod's program run here."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Mapping

from mlform.providers.base import Desired, LiveObject, ProviderContext
from mlform.providers.kit import calls
from mlform.providers.kubernetes import KubernetesProvider

BUCKET = "mlform-k8s"
_stacks = itertools.count()


def make_provider(plane, aws, stack_dir: Path, stack: str | None = None,
                  **config) -> KubernetesProvider:
    aws.client("s3").create_bucket(Bucket=BUCKET) if not _bucket_exists(aws) else None
    context = ProviderContext(
        name="kubernetes", alias=None, stack=stack or f"k{next(_stacks)}", env="test",
        stack_dir=stack_dir,
        config={"kubeconfig": str(plane.kubeconfig), "storage": f"s3://{BUCKET}/{{stack}}",
                "endpoint_url": aws.url, "poll_seconds": 0.1, **config})
    return KubernetesProvider(context)


def _bucket_exists(aws) -> bool:
    return any(b["Name"] == BUCKET for b in aws.client("s3").list_buckets().get("Buckets", []))


def create(provider, kind: str, attrs: dict, name: str = "x") -> LiveObject:
    desired = Desired(f"{kind}.{name}", kind, name, attrs)
    errors = [d for d in calls.validate(provider, desired) if d.severity == "error"]
    assert not errors, errors
    live = provider.create(calls.plan(provider, desired))
    provider.made.append(live)
    return live


ENDPOINT = {"model": {"address": "model.m", "version": 1, "uri": f"s3://{BUCKET}/m/"},
             "replicas": 2}


TRAIN = """\
import json, os, pathlib, warnings
import torch
warnings.simplefilter("ignore", DeprecationWarning)
rows = pathlib.Path(os.environ["MLFORM_INPUT_TRAIN"]).read_text().splitlines()[1:]
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))
torch.jit.save(torch.jit.script(net), str(out / "model.pt"))
(out / "signature.json").write_text(json.dumps({"inputs": ["amount", "label"],
                                                "outputs": ["p0", "p1"]}))
epochs = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])["epochs"]
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "rows": len(rows),
                                              "epochs": epochs}))
"""


def pipeline_desired(k8s, tmp_path, script: str, **extra) -> Desired:
    (tmp_path / "train.py").write_text(script)
    (tmp_path / "d.csv").write_text("amount,label\n1.5,0\n2.0,1\n")
    data = create(k8s, "dataset", {"source": "./d.csv", "format": "csv"}, name="tx")
    attrs = {"fingerprint": "sha256:" + "ab" * 32, "entrypoint": "train.py",
             "inputs": {"train": {"address": "dataset.tx", **data.attributes}},
             "hyperparameters": {"epochs": 3}, "gate": {"metric": "accuracy", "min": 0.5},
             **extra}
    return Desired("pipeline.train", "pipeline", "train", attrs)


def install_crds(plane, path: Path) -> None:
    """Install the CustomResourceDefinitions in `path` (YAML documents) into the test
    cluster and wait until the API server serves them (installing twice is fine)."""
    import yaml

    from _waiting import wait_until

    with plane.api() as api:
        for crd in yaml.safe_load_all(path.read_text()):
            response = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                json=crd)
            assert response.status_code in (201, 409), response.text
            name, spec = crd["metadata"]["name"], crd["spec"]
            listing = (f"/apis/{spec['group']}/{spec['versions'][0]['name']}/"
                       f"{spec['names']['plural']}")

            def served() -> bool:
                # established, and its storage ready: a listing answers
                return api.get(listing).status_code == 200
            wait_until(served, 30, f"{name} to be served", interval=0.1)


def kubectl_changes(plane, name: str, label: tuple[str, str], namespace: str = "default"
                    ) -> None:
    """What `kubectl scale --replicas=3`, `kubectl delete service` and `kubectl label`
    send, to the Deployment and Service `name`: three out-of-band changes."""
    merge = {"Content-Type": "application/merge-patch+json"}
    with plane.api() as api:
        api.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
                  json={"spec": {"replicas": 3}}, headers=merge).raise_for_status()
        api.delete(f"/api/v1/namespaces/{namespace}/services/{name}").raise_for_status()
        api.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                  json={"metadata": {"labels": {label[0]: label[1]}}},
                  headers=merge).raise_for_status()


@contextlib.contextmanager
def pod_serve(work: dict, workdir: Path, what: str,
              env: Mapping[str, str] | None = None) -> Iterator:
    """`python -m mlform.providers.kubernetes.pod serve` run here as pod `pod-a` would run
    it, with `work` as its MLFORM_POD on a free port and no upload round before the stop
    (`env` adds to or replaces its variables); yields an httpx client once its server is
    ready (`what` names the wait), then stops it with SIGTERM: it must exit 0, its last
    upload made."""
    import httpx
    from _waiting import wait_until

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    variables = {**os.environ, "MLFORM_POD": json.dumps(work), "MLFORM_PORT": str(port),
                 "MLFORM_WORKDIR": str(workdir), "HOSTNAME": "pod-a",
                 "MLFORM_CAPTURE_SECONDS": "3600", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mlform.providers.kubernetes.pod", "serve"],
                            env=variables, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as client:
            def ready() -> bool:
                try:
                    return client.get("/v2/health/ready").status_code == 200
                except httpx.TransportError:
                    return False
            wait_until(ready, 120, what)
            yield client
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
