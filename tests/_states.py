"""State entries for tests and benchmarks: a resource the size of a real one."""

from __future__ import annotations

from mlform.state import ResourceState

__all__ = ["dataset_entry"]


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
