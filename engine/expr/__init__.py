"""The expression language: HCL expressions compiled once, evaluated many times.

`compile_hcl` (a python-hcl2 lark subtree), `parse_expression` (text) and
`compile_value` (YAML/JSON values with ``${...}``) produce an `Expr`;
`Expr.evaluate(scope)` gives its value in a `Scope`.  Values may be or contain
`UNKNOWN` (known after apply) and `Sensitive` wrappers, which propagate through
every operation.  Every failure is an `ExprError`.  `parse_type` reads variable
type constraints.
"""

from mlform.expr.compile import Expr, Reference, compile_hcl, compile_value, parse_expression
from mlform.expr.errors import ExprError
from mlform.expr.functions import FUNCTIONS
from mlform.expr.scope import Scope
from mlform.expr.types import TypeConstraint, parse_type
from mlform.expr.values import (
    UNKNOWN,
    Sensitive,
    contains_unknown,
    is_sensitive,
    is_unknown,
    strip_sensitive,
    unmark,
)

__all__ = [
    "Expr",
    "ExprError",
    "FUNCTIONS",
    "Reference",
    "Scope",
    "Sensitive",
    "TypeConstraint",
    "UNKNOWN",
    "compile_hcl",
    "compile_value",
    "contains_unknown",
    "is_sensitive",
    "is_unknown",
    "parse_expression",
    "parse_type",
    "strip_sensitive",
    "unmark",
]
