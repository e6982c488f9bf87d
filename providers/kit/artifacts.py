"""Artifact URIs: where a model's files are, whatever produced them.

A model's `artifact` is a URI string, or a reference to a pipeline (its compact
reference carries the pipeline's `model_uri`, `UNKNOWN` while the pipeline is about to
run again).  `artifact_uri` gives the URI in both cases; `uri_to_path` turns a
``file://`` URI or a plain path into a local path (None for remote schemes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mlform.providers.base import UNKNOWN

__all__ = ["artifact_uri", "input_uri", "uri_to_path"]


def artifact_uri(artifact: Any) -> Any:
    """The artifact URI from `artifact`: a URI string, or a pipeline reference's `model_uri`."""
    if isinstance(artifact, Mapping):
        return artifact.get("model_uri", UNKNOWN if "address" in artifact else None)
    return artifact


def input_uri(value: Any) -> Any:
    """The URI a pipeline's `inputs` entry stands for: a dataset reference's `uri`, an
    upstream pipeline's `model_uri`, or the string itself."""
    if isinstance(value, Mapping):
        return value.get("uri") or value.get("model_uri")
    return value


def uri_to_path(uri: str, base: Path) -> Path | None:
    """A local path for `file://...` or a plain path (relative to `base`); None for other schemes."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:   # s3://, memory://, ... (not a drive letter)
        return None
    path = Path(uri).expanduser()
    return path if path.is_absolute() else base / path
