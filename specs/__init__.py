"""Provider-agnostic models of mlform's six resource kinds.

``dataset``, ``training_cluster``, ``pipeline``, ``model``, ``endpoint`` and
``monitor`` are pydantic v2 models (`KIND_MODELS`) of what a user may set on a
resource block; `COMPUTED` lists what providers fill in.  The engine checks
evaluated attributes with `validate_attributes`, which accepts values known
only after apply; `project_refs` shrinks evaluated whole-object references to
the fields a provider needs; `json_schema` feeds editors and ``mlform schema``.

This package imports nothing else of mlform (DESIGN.md section 1).
"""

import importlib
from typing import Any

# Names are imported from their module on first use (PEP 562): a run that needs only
# `did_you_mean` or `parse_cron` does not build the kinds' pydantic models (0.1 s),
# and a plan answered by the no-op memo builds none of them.
_EXPORTS = {
    "_kinds": ("COLUMN_TYPES", "COMPUTED", "KIND_MODELS", "META_ARGUMENTS", "REFERENCE_FIELDS",
               "Autoscaling", "Capture", "Dataset", "DatasetChecks", "Endpoint", "Gate",
               "Lifecycle", "Model", "Monitor", "MonitorCheck", "Pipeline", "Rollout",
               "SpecModel", "Sweep", "SweepParameter", "TrainingCluster"),
    "_cron": ("Cron", "CronError", "parse_cron", "validate_cron"),
    "_refs": ("REF_KEY", "REF_PROJECTION", "Ref", "address_kind", "is_ref",
              "looks_like_address", "project_refs", "ref", "split_address"),
    "_schema": ("SCHEMA_DIALECT", "json_schema"),
    "_validate": ("Problem", "field_names", "validate_attributes", "validate_model"),
    "_words": ("closest", "did_you_mean"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name == "KINDS":
        value: Any = tuple(__getattr__("KIND_MODELS"))
    else:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, "KINDS"})


__all__ = [
    "KINDS", "KIND_MODELS", "COMPUTED", "REFERENCE_FIELDS", "META_ARGUMENTS", "COLUMN_TYPES",
    "SpecModel", "Dataset", "DatasetChecks", "TrainingCluster", "Pipeline", "Gate", "Model",
    "Endpoint", "Rollout", "Capture", "Autoscaling", "Monitor", "MonitorCheck", "Lifecycle",
    "REF_KEY", "REF_PROJECTION", "Ref", "ref", "is_ref", "address_kind", "split_address",
    "looks_like_address", "project_refs",
    "Problem", "validate_attributes", "validate_model", "field_names", "validate_cron", "Cron", "CronError", "parse_cron",
    "json_schema", "SCHEMA_DIALECT", "closest", "did_you_mean",
]
