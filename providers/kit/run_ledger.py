"""Run records kept in an object store: written when a run starts, closed when it ends.

The providers that run training elsewhere (SageMaker's training jobs, Kubernetes' Jobs)
keep each run's record (`kit.run_records.RunRecord` JSON) as one small object in their
`ObjectStore`, so it outlives the apply that made it, a crash of that apply, and the
job itself (a Job deleted by its TTL, a training job SageMaker keeps only as a name):

    records/<pipeline slug>/<run id>.json     {"record": RunRecord JSON,
                                               "job": what the provider needs to find
                                                      the run's job again}

`open` writes the record (status running) before the job is started, so an apply cut
off after starting it still leaves the run on record; `close` rewrites it with the
outcome.  `records` lists them with one listing of the records prefix (of one pipeline,
or of the whole stack environment) and one read per record, never one call per job to
the service: only a record still marked running is handed to the provider's `refresh`,
which looks at its job (it may have ended while no apply was watching) and says what it
is now.  A refreshed record is reported, not written: listing runs changes nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .run_records import RUNNING, closed_record
from .storage import ObjectStore

__all__ = ["RunLedger", "closed_record"]   # closed_record: kit.run_records's, for callers


class RunLedger:
    """The run records of one stack environment, under `prefix` in `store`.

    `tags` gives the object tags of a pipeline's records (the provider's ownership tags),
    or None for untagged objects.
    """

    def __init__(self, store: ObjectStore, prefix: str,
                 tags: Callable[[str], Mapping[str, str] | None] = lambda address: None
                 ) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self._tags = tags

    def key(self, slug: str, run_id: str) -> str:
        return f"{self.prefix}/{slug}/{run_id}.json"

    def entry(self, slug: str, run_id: str, *, address: str = "") -> dict | None:
        """The stored entry ({"record", "job"}) of a run, or None."""
        doc = self.store.get_json(self.key(slug, run_id), address=address)
        return doc if isinstance(doc, dict) and isinstance(doc.get("record"), dict) else None

    def open(self, slug: str, record: Mapping[str, Any], *, job: Mapping[str, Any] | None = None,
             address: str = "") -> None:
        """Keep a run's record as it starts (it is written whole: a retried start rewrites it)."""
        self._put(slug, {"record": dict(record), "job": dict(job or {})}, address)

    def close(self, slug: str, run_id: str, status: str, *, address: str = "",
              **outcome: Any) -> dict | None:
        """Rewrite a run's record with its outcome (`closed_record`'s arguments); None when
        the run has no record (started before records were kept)."""
        entry = self.entry(slug, run_id, address=address)
        if entry is None:
            return None
        record = closed_record(entry["record"], status, **outcome)
        if record != entry["record"]:   # closing twice (a retried apply) writes once
            self._put(slug, {**entry, "record": record}, address)
        return record

    def records(self, slug: str | None = None, *, address: str = "",
                refresh: Callable[[dict, dict], dict | None] | None = None) -> list[dict]:
        """Every record (of one pipeline's `slug`), oldest first; a record still running
        is passed with its job to `refresh`, whose answer (None: as it is) is reported."""
        prefix = f"{self.prefix}/{slug}/" if slug else f"{self.prefix}/"
        found = []
        for item in self.store.list(prefix, address=address):
            if not item["Key"].endswith(".json"):
                continue
            doc = self.store.get_json(item["Key"], address=address)
            if not isinstance(doc, dict) or not isinstance(doc.get("record"), dict):
                continue   # not a record mlform wrote
            record = doc["record"]
            if record.get("status") == RUNNING and refresh is not None:
                record = refresh(record, dict(doc.get("job") or {})) or record
            found.append(record)
        return sorted(found, key=lambda r: (str(r.get("started") or ""), str(r.get("run_id"))))

    def _put(self, slug: str, doc: Mapping[str, Any], address: str) -> None:
        record = doc["record"]
        self.store.put_json(self.key(slug, str(record["run_id"])), doc, address=address,
                            tags=self._tags(str(record.get("pipeline") or address)))
