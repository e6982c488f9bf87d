"""`mlform lineage`: where a model, endpoint or run came from, and what it feeds.

The subject is a resource address in the state, a model version (``model.fraud@2``: the
version the state records), or a run id.  Upstream are the resources it depends on
(transitively, through the dependencies the state records) with what identifies each:
datasets with their content digests, pipelines with the run that made their current
output (its record: code digest, parameters, the dataset digests it read, metrics),
model versions and stages.  Downstream are the resources that depend on it: model
versions, the endpoints serving them, the monitors watching those.

Pure over its inputs (a `State` and the run records `mlform.runs.collect` read); the
JSON form is `Lineage`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, Field

from mlform.diagnostics import DiagnosticError
from mlform.providers.kit.run_records import RunRecord

__all__ = ["Lineage", "Node", "lineage_of", "DETAIL_KEYS"]

#: what identifies a resource of each kind in lineage (attributes, when present)
DETAIL_KEYS: Mapping[str, tuple[str, ...]] = {
    "dataset": ("digest", "uri", "rows"),
    "training_cluster": ("accelerator", "nodes", "gpus_per_node"),
    "pipeline": ("run_id", "fingerprint", "entrypoint", "entrypoint_sha256", "hyperparameters",
                 "metrics", "model_uri", "best_parameters"),
    "model": ("version", "stage", "approval", "uri", "artifact"),
    "endpoint": ("url", "model_version", "variants"),
    "monitor": ("endpoint", "on_breach"),
}


class Node(BaseModel):
    """One resource in the lineage."""

    address: str
    kind: str
    depth: int = Field(description="steps from the subject (upstream or downstream)")
    details: dict[str, Any] = Field(default_factory=dict)
    run: RunRecord | None = Field(None, description="a pipeline's current run, its record")
    changed_since_run: list[str] = Field(
        default_factory=list,
        description="(datasets) the runs upstream that read another digest than it has now")


class Lineage(BaseModel):
    """`mlform lineage --json`."""

    subject: str = Field(description="what was asked for, as given")
    address: str | None = Field(None, description="the subject's resource, if it is one")
    kind: str = Field(description="the subject's kind, or run")
    version: Any = None
    run: RunRecord | None = Field(None, description="the subject run, or the subject's run")
    upstream: list[Node]
    downstream: list[Node]
    notes: list[str] = Field(default_factory=list)


def _block(address: str) -> str:
    """``pipeline.train["a"]`` -> ``pipeline.train`` (dependencies name blocks)."""
    return address.split("[", 1)[0]


class _Graph:
    """The state's resources and dependency edges, both ways."""

    def __init__(self, state) -> None:
        self.resources = dict(state.resources)
        blocks: dict[str, list[str]] = {}
        for address in self.resources:
            blocks.setdefault(_block(address), []).append(address)
        self.up: dict[str, list[str]] = {}
        self.down: dict[str, list[str]] = {a: [] for a in self.resources}
        for address, rs in self.resources.items():
            targets = [t for dep in rs.dependencies
                       for t in (blocks.get(dep) or ([dep] if dep in self.resources else []))]
            self.up[address] = sorted(set(targets) - {address})
            for target in self.up[address]:
                self.down[target].append(address)

    def walk(self, start: str, edges: Mapping[str, list[str]]) -> list[tuple[str, int]]:
        seen, out, queue = {start}, [], deque([(start, 0)])
        while queue:
            address, depth = queue.popleft()
            for nxt in sorted(edges.get(address, [])):
                if nxt not in seen:
                    seen.add(nxt)
                    out.append((nxt, depth + 1))
                    queue.append((nxt, depth + 1))
        return out


def _details(kind: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: attributes[key] for key in DETAIL_KEYS.get(kind, ())
            if attributes.get(key) is not None}


def _node(graph: _Graph, address: str, depth: int, runs: Mapping[tuple[str, str], RunRecord]
          ) -> Node:
    rs = graph.resources[address]
    run = None
    if rs.kind == "pipeline" and isinstance(rs.attributes.get("run_id"), str):
        run = runs.get((address, rs.attributes["run_id"]))
    return Node(address=address, kind=rs.kind, depth=depth,
                details=_details(rs.kind, rs.attributes), run=run)


def _mark_changed(nodes: list[Node]) -> None:
    """A dataset whose digest now differs from the one an upstream run read."""
    datasets = {n.address: n for n in nodes if n.kind == "dataset"}
    for node in nodes:
        if node.run is None:
            continue
        for name, source in node.run.inputs.items():
            dataset = datasets.get(source or "")
            read = node.run.data_digests.get(name)
            if dataset is not None and read and dataset.details.get("digest") not in (None, read):
                dataset.changed_since_run.append(node.run.run_id)


def _split_version(ref: str) -> tuple[str, str | None]:
    if "@" in ref and not ref.startswith("@"):
        address, _, version = ref.rpartition("@")
        return address, version
    return ref, None


def lineage_of(ref: str, state, records: Iterable[RunRecord]) -> Lineage:
    """The lineage of `ref` (an address, ``MODEL@VERSION`` or a run id)."""
    records = list(records)
    runs = {(r.pipeline, r.run_id): r for r in records}
    graph = _Graph(state)
    address, version = _split_version(ref)
    notes: list[str] = []
    if address in graph.resources:
        rs = graph.resources[address]
        if version is not None:
            current = rs.attributes.get("version")
            if rs.kind != "model":
                raise DiagnosticError.single(
                    f"{address} is a {rs.kind}: only models have versions",
                    hint=f"Ask for mlform lineage {address}.")
            if str(current) != version:
                raise DiagnosticError.single(
                    f"{address} is at version {current}, not {version}",
                    hint=f"mlform lineage follows the version the state records: ask for "
                         f"{address}@{current} (or {address}); older versions' runs are in "
                         f"mlform runs list.")
        subject = _node(graph, address, 0, runs)
        upstream = [_node(graph, a, d, runs) for a, d in graph.walk(address, graph.up)]
        downstream = [_node(graph, a, d, runs) for a, d in graph.walk(address, graph.down)]
        _mark_changed([subject, *upstream])
        producing = subject.run or next((n.run for n in upstream if n.run is not None), None)
        if rs.kind == "pipeline" and subject.run is None:
            notes.append(f"no record of run {rs.attributes.get('run_id')} (its provider "
                         f"keeps none, or it was removed)")
        return Lineage(subject=ref, address=address, kind=rs.kind,
                       version=rs.attributes.get("version") if rs.kind == "model" else None,
                       run=producing, upstream=upstream, downstream=downstream, notes=notes)
    by_id = {r.run_id: r for r in records}
    run = by_id.get(ref)
    if run is None:
        known = sorted(a for a in graph.resources)
        raise DiagnosticError.single(
            f'"{ref}" is neither a resource in the state nor a recorded run',
            hint=("Give a resource address (" + ", ".join(known[:4]) +
                  (", ..." if len(known) > 4 else "") + "), MODEL@VERSION, or a run id from "
                  "mlform runs list." if known else "Apply the stack first."))
    upstream = [Node(address=source, kind=graph.resources[source].kind, depth=1,
                     details={**_details(graph.resources[source].kind,
                                         graph.resources[source].attributes),
                              "digest_read": run.data_digests.get(name)})
                for name, source in sorted(run.inputs.items())
                if source and source in graph.resources]
    _mark_changed([Node(address=run.pipeline, kind="pipeline", depth=0, run=run), *upstream])
    downstream: list[Node] = []
    pipeline = graph.resources.get(run.pipeline)
    if pipeline is not None and pipeline.attributes.get("run_id") == run.run_id:
        downstream = [_node(graph, a, d, runs) for a, d in graph.walk(run.pipeline, graph.down)]
    else:
        notes.append(f"{run.run_id} is not the current run of {run.pipeline}: nothing "
                     f"downstream is made from it now")
    return Lineage(subject=ref, address=run.pipeline, kind="run", run=run, upstream=upstream,
                   downstream=downstream, notes=notes)
