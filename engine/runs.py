"""Pipeline run records across a stack environment: what `mlform runs` reads and compares.

Every provider keeps the records of the runs it made (`Provider.run_records`, one shape:
`providers.kit.run_records.RunRecord`); this module gathers them from the providers of
the stack and the state, finds one by id, and lines several up for comparison.  It calls
providers but changes nothing: no lock is taken and nothing is written.

The JSON forms of `mlform runs list|show|compare` are the models here (`RunList`,
`RunComparison`); `json_schemas()` gives their JSON Schemas (docs/tracking.md).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pydantic import BaseModel, Field, ValidationError

from mlform.diagnostics import Diagnostic, DiagnosticError, warning
from mlform.providers.base import ProviderError
from mlform.providers.kit.run_records import RunRecord

__all__ = ["RunSet", "collect", "find", "compare", "RunList", "RunComparison", "Row",
           "json_schemas"]


@dataclass
class RunSet:
    """The records found, oldest first, and what could not be read (as warnings)."""

    records: list[RunRecord]
    warnings: list[Diagnostic] = field(default_factory=list)

    def of(self, pipeline: str | None) -> list[RunRecord]:
        return [r for r in self.records if pipeline is None or r.pipeline == pipeline]

    def by_id(self) -> dict[str, RunRecord]:
        return {r.run_id: r for r in self.records}


def collect(session, state=None, pipeline: str | None = None) -> RunSet:
    """Every run record of the providers the stack (and `state`) uses: each provider
    asked once; one that cannot answer is a warning, not a failure of the others."""
    providers = session.provider_set(state)
    found: dict[tuple[str, str], RunRecord] = {}
    warnings = [warning(f"Provider {key} could not be configured, so its runs are not "
                        f"listed: {exc.diagnostics[0].summary}")
                for key, exc in sorted(providers.failures.items())]
    for key, provider in sorted(providers.items()):
        try:
            raw = provider.run_records(pipeline)
        except ProviderError as exc:
            warnings.append(warning(
                f"Provider {key} could not list its runs: {exc.message}",
                hint="Retrying may help." if exc.retryable else ""))
            continue
        for doc in raw:
            try:
                record = RunRecord.model_validate({**doc, "provider": key})
            except ValidationError as exc:
                warnings.append(warning(
                    f"Provider {key} gave a run record mlform cannot read: "
                    f"{exc.errors()[0]['msg']}", hint="This is a bug in the provider; report it."))
                continue
            # two provider keys may share one root (an alias): a run is listed once
            found.setdefault((record.pipeline, record.run_id), record)
    records = sorted(found.values(), key=lambda r: (r.started or "", r.run_id))
    return RunSet(records, warnings)


def find(runs: RunSet, ref: str) -> RunRecord:
    """The run `ref` names: its id, or a prefix of exactly one id."""
    by_id = runs.by_id()
    if ref in by_id:
        return by_id[ref]
    matches = sorted(i for i in by_id if i.startswith(ref))
    if len(matches) == 1:
        return by_id[matches[0]]
    if len(matches) > 1:
        raise DiagnosticError.single(
            f'"{ref}" names {len(matches)} runs: ' + ", ".join(matches[:5]),
            hint="Give more of the run id.")
    close = difflib.get_close_matches(ref, list(by_id), n=3)
    hint = (f"Did you mean {' or '.join(close)}? " if close else "") + (
        "mlform runs list shows the runs." if by_id else
        "No run is recorded yet: apply a stack with a pipeline first.")
    raise DiagnosticError.single(f'No run "{ref}" in this stack environment', hint=hint)


# -- comparing -------------------------------------------------------------------

class Row(BaseModel):
    """One compared value: its name, each run's value (None: the run has none), and
    whether they differ."""

    field: str
    values: list[Any]
    differs: bool


class RunComparison(BaseModel):
    """`mlform runs compare --format json`."""

    runs: list[str] = Field(description="the run ids, in the order given")
    rows: list[Row]
    metric: str | None = Field(None, description="the metric charted across the runs")
    records: list[RunRecord]


class RunList(BaseModel):
    """`mlform runs list --json` and (one record) `mlform runs show --json`."""

    runs: list[RunRecord]


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in values.items()}


def _fields(record: RunRecord) -> dict[str, Any]:
    return {
        "pipeline": record.pipeline, "status": record.status,
        "fingerprint": record.fingerprint, "code": record.code_digest,
        **_flat("data", record.data_digests), **_flat("param", record.parameters),
        **_flat("metric", record.metrics),
        "cluster": record.cluster, "accelerator": record.accelerator,
        "processes": record.processes, "duration_seconds": record.duration_seconds,
        "started": record.started, "failure": record.failure,
    }


def _same(values: Sequence[Any]) -> bool:
    keys = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return len(keys) <= 1


#: rows that are expected to differ between any two runs: shown, never marked
_ALWAYS_DIFFERENT = {"started", "duration_seconds"}


def compare(records: Iterable[RunRecord], metric: str | None = None) -> RunComparison:
    """The runs side by side: every field any of them has, differences marked; `metric`
    (default: the first metric they all report) is the one charted."""
    records = list(records)
    fields = [_fields(r) for r in records]
    names = list(dict.fromkeys(name for f in fields for name in f))
    rows = [Row(field=name, values=[f.get(name) for f in fields],
                differs=name not in _ALWAYS_DIFFERENT and not _same([f.get(name) for f in fields]))
            for name in names]
    rows = [row for row in rows if any(v is not None for v in row.values)]
    if metric is None:
        common = [m for m in (records[0].metrics if records else {})
                  if all(m in r.metrics for r in records)]
        numeric = [m for m in common if all(isinstance(r.metrics[m], (int, float))
                                            for r in records)]
        metric = numeric[0] if numeric else None
    return RunComparison(runs=[r.run_id for r in records], rows=rows, metric=metric,
                         records=records)


def json_schemas() -> dict[str, dict]:
    """The JSON Schemas of the commands' JSON forms, by command."""
    from mlform.lineage import Lineage
    return {"runs list": RunList.model_json_schema(), "runs show": RunRecord.model_json_schema(),
            "runs compare": RunComparison.model_json_schema(),
            "lineage": Lineage.model_json_schema()}
