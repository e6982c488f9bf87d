"""`monitor` on Kubernetes: a CronJob running the drift and health check.

The CronJob (``env.name(address)``, in the provider's namespace, on `schedule`;
suspended without one) starts a pod running ``pod monitor`` (`pod.py`): it fetches the
requests the endpoint's pods captured (``capture/<endpoint name>/`` in storage, one
JSON-lines object per pod, uploaded by the serving pods when `capture` is on) and the
baseline dataset from storage, runs the kit's check on them (`kit.monitor_check`, the
one the `local` provider runs), and uploads the report to ``monitors/<name>/reports/``
(``latest.json``, ``latest.txt``).  With ``on_breach = "retrain"`` a breach writes the
pipeline's stale marker (``stale/<pipeline name>.json``), which the pipeline handler
reads: the next plan re-runs the pipeline with the monitor's finding as the reason.

`mlform monitor run` starts a Job from the CronJob's template now (as ``kubectl create
job --from=cronjob/...`` does), waits for it, and returns its report.  Computed:
`breached` and `last_report` (the report's storage URI), read from storage; they change
out of band, so refresh keeps them as recorded (service-managed) and plan keeps them.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, error,
)
from mlform.providers.kit.monitor_check import MonitorSettings
from mlform.providers.kit.monitoring import BASELINE_FORMATS
from mlform.providers.kit.plans import plan_of

from .endpoints import capture_prefix
from .env import KubeHandler
from .pipelines import JOB_LABEL, ROLE, stale_key
from .pods import pod_failure, pod_spec

__all__ = ["MonitorHandler"]

COMPUTED = ("breached", "last_report")


def _address(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("address"), str):
        return value["address"]
    return None


class MonitorHandler(KubeHandler):
    schema = KindSchema(settings_model=MonitorSettings, computed=(*COMPUTED, "objects"),
                        service_managed=COMPUTED,
                        timeouts=Timeouts(create=300, update=300, delete=300))

    def name_of(self, address: str) -> str:
        return self.env.name(address, limit=52)      # CronJob names: at most 52 characters

    def main_ref(self, address: str) -> tuple[str, str, str, str | None]:
        return "batch/v1", "CronJob", self.name_of(address), self.env.config.namespace

    def reports(self, address: str) -> str:
        return self.env.store.key("monitors", self.env.name(address), "reports")

    def work(self, address: str, attrs: Mapping[str, Any]) -> dict:
        baseline = attrs.get("baseline") if isinstance(attrs.get("baseline"), Mapping) else {}
        pipeline = attrs.get("pipeline") if isinstance(attrs.get("pipeline"), Mapping) else None
        endpoint = _address(attrs.get("endpoint")) or ""
        store = self.env.store
        return {
            "address": address, "checks": list(attrs.get("checks") or []),
            "settings": dict(attrs.get("settings") or {}),
            "on_breach": attrs.get("on_breach") or "alert",
            "endpoint": endpoint,
            "capture": f"s3://{store.bucket}/{capture_prefix(self.env, endpoint)}",
            "baseline": {"address": baseline.get("address"), "uri": baseline.get("uri"),
                         "format": baseline.get("format") or "csv",
                         "digest": baseline.get("digest")},
            "reports": f"s3://{store.bucket}/{self.reports(address)}/",
            "pipeline": ({"address": pipeline.get("address"), "run_id": pipeline.get("run_id")}
                         if pipeline else None),
            "stale": (f"s3://{store.bucket}/{stale_key(self.env, pipeline['address'])}"
                      if pipeline and pipeline.get("address") else None),
        }

    def manifests(self, address: str, attrs: Mapping[str, Any]) -> list[dict]:
        name = self.name_of(address)
        labels = {ROLE: "monitor", **dict(attrs.get("tags") or {})}
        pod = pod_spec(self.env, "check", image=None, command="monitor",
                       work=self.work(address, attrs), cpu="250m", memory="512Mi")
        pod["restartPolicy"] = "Never"
        schedule = attrs.get("schedule")
        spec = {
            "schedule": schedule or "0 0 1 1 *",
            "suspend": not schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {**self.env.selector(address), **labels}},
                            "spec": {"backoffLimit": 0, "template": {
                                "metadata": {"labels": {**self.env.selector(address), **labels}},
                                "spec": pod}}},
        }
        return [{"apiVersion": "batch/v1", "kind": "CronJob",
                 "metadata": self.env.metadata(name, address, self.env.config.namespace,
                                               labels=labels),
                 "spec": spec}]

    # -- plan ----------------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found = super().validate(desired, facts)
        attrs = desired.attributes
        if attrs.get("on_breach") == "retrain" and attrs.get("pipeline") is None:
            found.append(error(f'{desired.address}: on_breach = "retrain" needs the '
                               "pipeline to retrain", address=desired.address,
                               hint="Add pipeline = pipeline.NAME to the monitor."))
        baseline = attrs.get("baseline")
        if isinstance(baseline, Mapping) and isinstance(baseline.get("format"), str) \
                and baseline["format"] not in BASELINE_FORMATS:
            found.append(error(f'{desired.address}: cannot read a "{baseline["format"]}" '
                               "baseline", address=desired.address,
                               detail=f"Readable formats: {', '.join(BASELINE_FORMATS)}."))
        if attrs.get("endpoint") is not UNKNOWN and not _address(attrs.get("endpoint")):
            found.append(error(f"{desired.address}: the monitor needs the endpoint as a "
                               "reference (endpoint = endpoint.NAME)", address=desired.address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        planned = super().plan(desired, prior, facts)
        kept = ({"breached": bool(prior.attributes.get("breached", False)),
                 "last_report": prior.attributes.get("last_report")} if prior is not None
                else {"breached": False, "last_report": None})
        return plan_of(desired, {**planned.attributes, **kept},
                       replace_paths=planned.replace_paths, reasons=planned.reasons)

    def live_attributes(self, prior: LiveObject, live: Mapping[str, dict]) -> dict[str, Any]:
        report = self.env.store.get_json(f"{self.reports(prior.address)}/latest.json",
                                         address=prior.address)
        if not isinstance(report, dict):
            return {"breached": False, "last_report": None}
        return {"breached": bool(report.get("breached")),
                "last_report": f"s3://{self.env.store.bucket}/{self.reports(prior.address)}"
                               f"/latest.json"}

    # -- mlform monitor run --------------------------------------------------------------

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        if name != "run":
            raise NotImplementedError(name)
        address, namespace = live.address, self.env.config.namespace
        cron = self.kube.get("batch/v1", "CronJob", self.name_of(address), namespace,
                             address=address)
        if cron is None:
            raise ProviderError(f"{address} has no CronJob: run mlform apply to create it "
                                "first", address=address)
        self.env.check_owner(cron, address)
        template = cron["spec"]["jobTemplate"]
        job_name = self.env.name(address, f"run-{int(time.time())}", limit=63)
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {**self.env.metadata(job_name, address, namespace,
                                                labels=template["metadata"].get("labels")),
                            "annotations": {**self.env.owner(address).annotations(),
                                            "cronjob.kubernetes.io/instantiate": "manual"}},
               "spec": {**template["spec"], "ttlSecondsAfterFinished": 600}}
        self.kube.apply(job, address=address)
        try:
            self._wait_job(address, namespace, job_name)
        finally:
            self.kube.delete("batch/v1", "Job", job_name, namespace, address=address)
        report = self.env.store.get_json(f"{self.reports(address)}/latest.json",
                                         address=address)
        if not isinstance(report, dict):
            raise ProviderError(f"{address}: the check ran but wrote no report",
                                address=address)
        return report

    def _wait_job(self, address: str, namespace: str, name: str) -> None:
        def check() -> tuple[bool, str]:
            job = self.kube.get("batch/v1", "Job", name, namespace, address=address) or {}
            conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions")
                          or [] if c.get("status") == "True"}
            if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
                return True, "Complete"
            pods = self.kube.list("v1", "Pod", namespace, labels={JOB_LABEL: name},
                                  address=address)
            problem = pod_failure(pods, 300.0) or (
                conditions["Failed"].get("message") if "Failed" in conditions else "")
            if problem:
                raise ProviderError(f"{address}: the check failed: {problem}", address=address)
            return False, "running"

        self.kube.wait(check, address=address, what=f"check Job {namespace}/{name}",
                       timeout=self.schema.timeouts.create)

    def computed_names(self) -> tuple[str, ...]:
        return ()

    def delete(self, prior: LiveObject) -> None:
        super().delete(prior)
        self.env.store.delete_prefix(self.reports(prior.address) + "/", address=prior.address)
