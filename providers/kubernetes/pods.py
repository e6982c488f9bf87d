"""The pods mlform starts (training, serving, monitor checks) and what their status says.

Every pod runs the provider's `image` with ``python -m mlform.providers.kubernetes.pod
<command>`` (`pod.py`, the container side) and its work in one environment variable,
``MLFORM_POD`` (JSON); the storage is reached with ``AWS_ENDPOINT_URL_S3`` and
``AWS_DEFAULT_REGION``, and the provider's `storage_secret` when set (the keys of a
Secret as environment).  Termination messages fall back to the log on error, so a
failed pod's last lines come back with its status.

`pod_failure` reads pods the way ``kubectl describe`` would, for a wait to fail early
and say why: a container that terminated with an error (its message, or OOMKilled), an
image that cannot be pulled, a pod the scheduler cannot place (its reason, e.g.
"0/3 nodes are available: 3 Insufficient nvidia.com/gpu") for longer than allowed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from .clusters import GPU

__all__ = ["pod_spec", "pod_failure", "POD_ENV"]

POD_ENV = "MLFORM_POD"
_PULL_ERRORS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                "CreateContainerConfigError"}


def pod_spec(env: Any, name: str, *, image: str | None, command: str, work: Mapping[str, Any],
             gpus: int = 0, cpu: str | None = None, memory: str | None = None,
             extra_env: Mapping[str, str] | None = None,
             ports: Iterable[dict] = (), probes: Mapping[str, Any] | None = None) -> dict:
    """A pod spec running `command` of the container side with `work`."""
    config = env.config
    variables = {POD_ENV: json.dumps(dict(work), sort_keys=True, default=str),
                 "AWS_DEFAULT_REGION": config.region, **dict(extra_env or {})}
    if config.endpoint_url:
        variables["AWS_ENDPOINT_URL_S3"] = config.endpoint_url
    container: dict[str, Any] = {
        "name": name,
        "image": image or config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "mlform.providers.kubernetes.pod", command],
        "env": [{"name": k, "value": str(v)} for k, v in sorted(variables.items())],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources: dict[str, dict] = {}
    if cpu or memory:
        resources["requests"] = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if gpus:
        resources.setdefault("requests", {})[GPU] = str(gpus)
        resources["limits"] = {GPU: str(gpus)}
    if resources:
        container["resources"] = resources
    if config.storage_secret:
        container["envFrom"] = [{"secretRef": {"name": config.storage_secret}}]
    if ports:
        container["ports"] = list(ports)
    container.update(probes or {})
    spec: dict[str, Any] = {"containers": [container]}
    if gpus:   # the GPU operator taints GPU nodes; only pods asking for GPUs tolerate it
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def _since(stamp: Any) -> float:
    if not isinstance(stamp, str):
        return 0.0
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - when).total_seconds()


def pod_failure(pods: Iterable[Mapping[str, Any]], schedule_timeout: float) -> str:
    """Why these pods cannot succeed, or "" while they still may."""
    for pod in pods:
        status = pod.get("status") or {}
        name = (pod.get("metadata") or {}).get("name")
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            done = state.get("terminated")
            if done and done.get("exitCode"):
                reason = done.get("reason") or "Error"
                message = (done.get("message") or "").strip()
                return (f"pod {name}: container {cs.get('name')} exited with code "
                        f"{done['exitCode']} ({reason})" + (f": {message}" if message else ""))
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _PULL_ERRORS:
                return (f"pod {name}: {waiting['reason']}: "
                        f"{waiting.get('message') or cs.get('image')}")
        for cond in status.get("conditions") or []:
            if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable"
                    and _since(cond.get("lastTransitionTime")) >= schedule_timeout):
                return f"pod {name} cannot be scheduled: {cond.get('message') or 'Unschedulable'}"
    return ""
