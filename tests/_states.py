"""State helpers for tests and benchmarks: a resource the size of a real one, and a
writer abandoned the way a killed process leaves it."""

from __future__ import annotations

import os

from mlform.state import ResourceState

__all__ = ["dataset_entry", "crash"]


def crash(writer) -> None:
    """Abandon a writer the way a killed process would: no snapshot, journal left."""
    with writer._cond:
        writer._stop = True
        writer._cond.notify_all()
    writer._flusher.join()
    os.close(writer._fd)
    writer._fd = None
    writer._backend._writer = None


def dataset_entry(i: int) -> ResourceState:
    """A resource the size of a real dataset entry (uri, digest, schema, ...)."""
    return ResourceState(
        address=f"dataset.d{i}", kind="dataset", name=f"d{i}", provider="memory",
        id=f"mlform-default-dataset-d{i}",
        attributes={"source": f"./data/part-{i}.csv", "format": "csv",
                    "uri": f"memory://datasets/mlform-default-dataset-d{i}",
                    "digest": f"{i:064x}", "size": 1000 + i,
                    "schema": {"amount": "float", "label": "int"},
                    "checks": {"min_rows": 100}},
        dependencies=["training_cluster.gpu"])
