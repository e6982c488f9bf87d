"""mlform: a Terraform-style declarative engine for ML infrastructure.

The import package is assembled from three folders (see pyproject.toml):
``engine/`` is ``mlform`` itself, ``providers/`` is ``mlform.providers`` and
``specs/`` is ``mlform.specs``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
