"""`training_cluster` on the `local` provider: this machine's GPUs, capacity checked at plan.

A local cluster is one node: the GPUs NVML finds here (see `gpus`), read once per
run as a fact before planning.  `validate` fails the plan when the spec asks for
more GPUs, or another accelerator, than the machine has, and says what it found;
`plan` picks the GPU indices the cluster hands to the runs it hosts (`devices`, given
to them as ``CUDA_VISIBLE_DEVICES``).  The record ``root/clusters/<slug>.json`` holds
the attributes; runs read their devices from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, Timeouts, contains_unknown, error,
)
from mlform.providers.kit.plans import computed_or_unknown, plan_of

from . import gpus
from .env import LocalEnv, LocalHandler, read_json, write_json_atomic

__all__ = ["ClusterHandler", "capacity_problem", "allocate", "record_path", "devices_for"]


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _machine_text(machine: gpus.Machine) -> str:
    if not machine.gpus:
        return f"this machine has no NVIDIA GPU ({machine.reason})"
    noun = "GPU" if len(machine.gpus) == 1 else "GPUs"
    return f"this machine has {len(machine.gpus)} {noun}: {gpus.describe(machine.gpus)}"


def capacity_problem(address: str, attrs: Mapping[str, Any], machine: gpus.Machine) -> str | None:
    """Why this machine cannot host the cluster, or None when it can."""
    nodes = _count(attrs.get("nodes"), 1)
    if nodes != 1:
        return (f"{address} asks for {nodes} nodes, but the local provider runs on this one "
                f"machine: nodes must be 1")
    accelerator = str(attrs.get("accelerator") or gpus.CPU)
    wanted = _count(attrs.get("gpus_per_node"), 0)
    if accelerator.lower() == gpus.CPU or wanted == 0:
        return None
    found = machine.matching(accelerator)
    if len(found) >= wanted:
        return None
    text = f"{address} asks for {wanted} × {accelerator} but {_machine_text(machine)}"
    if machine.gpus and 0 < len(found) < len(machine.gpus):
        text += f", of which {len(found)} match {accelerator}"
    return text


def allocate(attrs: Mapping[str, Any], machine: gpus.Machine) -> list[gpus.Gpu]:
    """The GPUs a cluster with these attributes hands out: the first matching ones."""
    accelerator = str(attrs.get("accelerator") or gpus.CPU)
    wanted = _count(attrs.get("gpus_per_node"), 0)
    if accelerator.lower() == gpus.CPU or wanted == 0:
        return []
    return machine.matching(accelerator)[:wanted]


def record_path(env: LocalEnv, address: str) -> Path:
    return env.root / "clusters" / f"{env.slug(address)}.json"


def devices_for(env: LocalEnv, cluster: Any) -> list[int]:
    """The GPU indices a pipeline's `cluster` (a reference, an address or None) hands out.

    The cluster's record says; a cluster this provider has not created yet (or
    that another provider serves) gets the GPUs it would be given here.  No
    cluster means the provider's default compute: the CPU.
    """
    address = cluster.get("address") if isinstance(cluster, Mapping) else cluster
    if isinstance(address, str):
        record = read_json(record_path(env, address))
        devices = record.get("attributes", {}).get("devices") if isinstance(record, dict) else None
        if isinstance(devices, list):
            return [int(d) for d in devices]
    if isinstance(cluster, Mapping):
        return [gpu.index for gpu in allocate(cluster, gpus.discover())]
    return []


_SHAPE = ("nodes", "gpus_per_node", "accelerator")
COMPUTED = ("gpus_total", "devices", "device_names")
#: the fact every local cluster plans with: this machine's GPUs
MACHINE = FactKey("training_cluster", "machine")


class ClusterHandler(LocalHandler):
    """`training_cluster`: capacity from NVML, devices handed to pipelines."""

    schema = KindSchema(replace_paths=("accelerator",), computed=COMPUTED,
                        timeouts=Timeouts(create=60.0, update=60.0, delete=60.0))

    def record_path(self, address: str) -> Path:
        return record_path(self.env, address)

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return (MACHINE,)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        return {MACHINE: gpus.discover()} if MACHINE in keys else {}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        if contains_unknown([desired.attributes.get(k) for k in _SHAPE]):
            return []
        problem = capacity_problem(desired.address, desired.attributes, facts[MACHINE])
        if problem is None:
            return []
        return [error(problem, address=desired.address,
                      hint='Ask for fewer GPUs, another accelerator, or accelerator = "cpu" '
                           "with gpus_per_node = 0.")]

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        return plan_of(desired, computed_or_unknown(
            attrs, _SHAPE, COMPUTED, lambda: self._computed(attrs, facts[MACHINE])))

    def _computed(self, attrs: Mapping[str, Any], machine: gpus.Machine) -> dict[str, Any]:
        given = allocate(attrs, machine)
        return {"gpus_total": _count(attrs.get("gpus_per_node"), 0) * _count(attrs.get("nodes"), 1),
                "devices": [gpu.index for gpu in given],
                "device_names": [gpu.name for gpu in given]}

    def create(self, planned: Planned) -> LiveObject:
        # a plan file may come from another machine: check the capacity of this one
        problem = capacity_problem(planned.address, planned.attributes, gpus.discover())
        if problem is not None:
            raise ProviderError(problem, address=planned.address)
        attrs = dict(planned.attributes)
        attrs.update({k: v for k, v in self._computed(attrs, gpus.discover()).items()
                      if attrs.get(k) is UNKNOWN})
        write_json_atomic(self.record_path(planned.address),
                          {"address": planned.address, "attributes": attrs})
        return LiveObject(planned.address, planned.kind, self.env.object_id(planned.address), attrs)

    def read(self, prior: LiveObject) -> LiveObject | None:
        record = read_json(self.record_path(prior.address))
        if not isinstance(record, dict):
            return None
        return LiveObject(prior.address, prior.kind, self.env.object_id(prior.address),
                          record.get("attributes", {}))

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def delete(self, prior: LiveObject) -> None:
        self.record_path(prior.address).unlink(missing_ok=True)
