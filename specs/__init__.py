"""Provider-agnostic models of mlform's six resource kinds.

``dataset``, ``training_cluster``, ``pipeline``, ``model``, ``endpoint`` and
``monitor`` are pydantic v2 models (`KIND_MODELS`) of what a user may set on a
resource block; `COMPUTED` lists what providers fill in.  The engine checks
evaluated attributes with `validate_attributes`, which accepts values known
only after apply; `project_refs` shrinks evaluated whole-object references to
the fields a provider needs; `json_schema` feeds editors and ``mlform schema``.

This package imports nothing else of mlform (DESIGN.md section 1).
"""

from ._kinds import (
    COLUMN_TYPES,
    COMPUTED,
    KIND_MODELS,
    META_ARGUMENTS,
    REFERENCE_FIELDS,
    Autoscaling,
    Capture,
    Dataset,
    DatasetChecks,
    Endpoint,
    Gate,
    Lifecycle,
    Model,
    Monitor,
    MonitorCheck,
    Pipeline,
    Rollout,
    SpecModel,
    TrainingCluster,
)
from ._cron import Cron, CronError, parse_cron, validate_cron
from ._refs import (
    REF_KEY,
    REF_PROJECTION,
    Ref,
    address_kind,
    is_ref,
    looks_like_address,
    project_refs,
    ref,
    split_address,
)
from ._schema import SCHEMA_DIALECT, json_schema
from ._validate import Problem, field_names, validate_attributes, validate_model
from ._words import closest, did_you_mean

KINDS = tuple(KIND_MODELS)

__all__ = [
    "KINDS", "KIND_MODELS", "COMPUTED", "REFERENCE_FIELDS", "META_ARGUMENTS", "COLUMN_TYPES",
    "SpecModel", "Dataset", "DatasetChecks", "TrainingCluster", "Pipeline", "Gate", "Model",
    "Endpoint", "Rollout", "Capture", "Autoscaling", "Monitor", "MonitorCheck", "Lifecycle",
    "REF_KEY", "REF_PROJECTION", "Ref", "ref", "is_ref", "address_kind", "split_address",
    "looks_like_address", "project_refs",
    "Problem", "validate_attributes", "validate_model", "field_names", "validate_cron", "Cron", "CronError", "parse_cron",
    "json_schema", "SCHEMA_DIALECT", "closest", "did_you_mean",
]
