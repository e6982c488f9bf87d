"""Runtime operations of the expression language, with HCL semantics.

The compiled closures in `compile.py` call these helpers; each one takes plain
values plus the `SourceRange` of the sub-expression so that a failure points at
the right place.  Two markers ride through every operation:

* ``UNKNOWN`` in, ``UNKNOWN`` out (attribute or index into it, arithmetic...),
* ``Sensitive`` in, ``Sensitive`` out: the clear value is computed and wrapped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Callable

from mlform.diagnostics import SourceRange
from mlform.expr.errors import ExprError, suggest
from mlform.expr.values import UNKNOWN, Sensitive

_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Integral floats beyond this lose precision as ints; keep them as floats.
_INT_SAFE = 2 ** 63


# ---------------------------------------------------------------------------
# Type names and conversions
# ---------------------------------------------------------------------------

def type_name(value: Any) -> str:
    """The HCL type name used in messages: string, number, bool, list, object, null."""
    if value is None:
        return "null"
    if value is UNKNOWN:
        return "unknown value"
    if isinstance(value, Sensitive):
        return "sensitive " + type_name(value.value)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Whole numbers beyond ~3900 decimal digits cannot be converted to text.
_INT_BITS_MAX = 13_000


def normalize(number: int | float) -> int | float:
    """Numbers stay int where integral (HCL has one number type; 4/2 is 2, not 2.0)."""
    if type(number) is float and number.is_integer() and -_INT_SAFE < number < _INT_SAFE:
        return int(number)
    return number


def parse_number(text: str) -> int | float | None:
    """The number a string spells ("5", "-1.5", "1e3"), or None."""
    text = text.strip() if text[:1].isspace() or text[-1:].isspace() else text
    if not _NUMBER_RE.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    if math.isinf(value):
        return None
    return normalize(value)


def number_str(value: int | float) -> str:
    """Canonical text of a number: 5, 1.5, 1e+21."""
    if type(value) is int:
        return str(value)
    value = normalize(value)
    if type(value) is int:
        return str(value)
    text = repr(value)
    return text


def to_string(value: Any) -> str | None:
    """HCL's automatic conversion to string for primitives, else None."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return number_str(value)
    return None


def to_bool(value: Any, source: SourceRange | None, what: str = "value") -> Any:
    """A bool from a bool or "true"/"false"; UNKNOWN passes; Sensitive is kept."""
    if value is True or value is False or value is UNKNOWN:
        return value
    if isinstance(value, Sensitive):
        inner = to_bool(value.value, source, what)
        return inner if inner is UNKNOWN else Sensitive(inner)
    if value == "true" and type(value) is str:
        return True
    if value == "false" and type(value) is str:
        return False
    if value is None:
        raise ExprError("Invalid " + what, f"The {what} is null; a bool is required.", source)
    raise ExprError("Invalid " + what, f"A bool is required, got {type_name(value)}"
                    f"{_shown(value)}.", source)


def _shown(value: Any) -> str:
    """` "text"` / ` 5` for short primitives in messages, else nothing."""
    if isinstance(value, str) and len(value) <= 40:
        return " " + json.dumps(value)
    if is_number(value):
        return " " + number_str(value)
    return ""


def template_string(value: Any, source: SourceRange | None) -> str:
    """Convert an interpolated value to text, or explain why it cannot be."""
    text = to_string(value)
    if text is not None:
        return text
    if value is None:
        raise ExprError("Invalid template interpolation value",
                        "The expression result is null. Cannot include a null value in a "
                        "string template.", source)
    raise ExprError("Invalid template interpolation value",
                    f"Cannot include the given value in a string template: string required, "
                    f"got {type_name(value)}.", source,
                    hint="Use jsonencode() or join() to turn a collection into a string.")


# ---------------------------------------------------------------------------
# Arithmetic, comparison, logic
# ---------------------------------------------------------------------------

_VERBS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the "
          "modulo of", "<": "compare", ">": "compare", "<=": "compare", ">=": "compare"}


def _operand(value: Any, op: str, left: Any, right: Any, source: SourceRange | None):
    t = type(value)
    if t is int or t is float:
        return value
    if t is str:
        number = parse_number(value)
        if number is not None:
            return number
        raise ExprError("Invalid operand",
                        f"cannot {_VERBS[op]} {type_name(left)} and {type_name(right)}: "
                        f"a number is required, and the string {json.dumps(value)[:60]} "
                        f"is not a number.", source)
    raise ExprError("Invalid operand",
                    f"cannot {_VERBS[op]} {type_name(left)} and {type_name(right)}: "
                    f"a number is required, got {type_name(value)}.", source)


def _add(a, b):
    return a + b


def _sub(a, b):
    return a - b


def _mul(a, b):
    return a * b


def _div(a, b):
    if b == 0:
        raise ZeroDivisionError
    if type(a) is int and type(b) is int and a % b == 0:
        return a // b  # exact, even for big ints
    return a / b


def _mod(a, b):
    if b == 0:
        raise ZeroDivisionError
    if type(a) is int and type(b) is int:
        # HCL's modulo keeps the sign of the dividend (truncated division).
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    return math.fmod(a, b)


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}
ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def _unmark_pair(a: Any, b: Any) -> tuple[Any, Any, bool]:
    """Both operands without their Sensitive markers, and whether either had one."""
    sensitive = False
    if type(a) is Sensitive:
        a, sensitive = a.value, True
    if type(b) is Sensitive:
        b, sensitive = b.value, True
    return a, b, sensitive


def arithmetic(op: str, a: Any, b: Any, source: SourceRange | None) -> Any:
    """`a op b` for + - * / % with HCL's string-to-number conversion."""
    a, b, sensitive = _unmark_pair(a, b)
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    x = _operand(a, op, a, b, source)
    y = _operand(b, op, a, b, source)
    try:
        result = normalize(ARITHMETIC[op](x, y))
    except ZeroDivisionError:
        raise ExprError("Division by zero", f"The right operand of {op!r} is zero.",
                        source, hint=f"Guard it: b == 0 ? 0 : a {op} b.") from None
    except OverflowError:
        raise ExprError("Invalid operation", "The result is too large to represent.",
                        source) from None
    if type(result) is float and not math.isfinite(result):
        raise ExprError("Invalid operation", "The result is not a finite number.", source)
    if type(result) is int and result.bit_length() > _INT_BITS_MAX:
        # Python cannot even print such a number (sys.get_int_max_str_digits).
        raise ExprError("Invalid operation", "The result is too large to represent.", source)
    return Sensitive(result) if sensitive else result


def compare(op: str, a: Any, b: Any, source: SourceRange | None) -> Any:
    """`a op b` for < > <= >=; only numbers (or numeric strings) are ordered."""
    a, b, sensitive = _unmark_pair(a, b)
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    result = ORDERING[op](_operand(a, op, a, b, source), _operand(b, op, a, b, source))
    return Sensitive(result) if sensitive else result


def equal(a: Any, b: Any) -> Any:
    """Structural equality without conversion (1 != "1", true != 1); may be UNKNOWN."""
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    while type(a) is Sensitive:
        a = a.value
    while type(b) is Sensitive:
        b = b.value
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        return a == b
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if is_number(a) and is_number(b):
        return a == b
    if a is None or b is None:
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False
        return _all_equal(zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return False
        return _all_equal((a[k], b[k]) for k in a)
    return False


def _all_equal(pairs) -> Any:
    unknown = False
    for x, y in pairs:
        same = equal(x, y)
        if same is False:
            return False
        if same is UNKNOWN:
            unknown = True
    return UNKNOWN if unknown else True


def equality(negate: bool, a: Any, b: Any) -> Any:
    sensitive = type(a) is Sensitive or type(b) is Sensitive
    result = equal(a, b)
    if result is not UNKNOWN and negate:
        result = not result
    return Sensitive(result) if sensitive and result is not UNKNOWN else result


def negate(value: Any, source: SourceRange | None) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    if type(value) is Sensitive:
        inner = negate(value.value, source)
        return inner if inner is UNKNOWN else Sensitive(inner)
    t = type(value)
    if t is int or t is float:
        return -value
    if t is str:
        number = parse_number(value)
        if number is not None:
            return -number
    raise ExprError("Invalid operand", f"Unary minus needs a number, got {type_name(value)}.",
                    source)


def logical_not(value: Any, source: SourceRange | None) -> Any:
    value = to_bool(value, source, "operand")
    if value is UNKNOWN:
        return UNKNOWN
    if type(value) is Sensitive:
        return Sensitive(not value.value)
    return not value


# ---------------------------------------------------------------------------
# Attribute access, indexing, splat
# ---------------------------------------------------------------------------

def get_attr(value: Any, name: str, source: SourceRange | None) -> Any:
    """`value.name`: the key `name` of an object."""
    if type(value) is dict:
        if name in value:
            return value[name]
    elif value is UNKNOWN:
        return UNKNOWN
    elif type(value) is Sensitive:
        inner = get_attr(value.value, name, source)
        return inner if inner is UNKNOWN else Sensitive(inner)
    elif isinstance(value, Mapping):
        if name in value:
            return value[name]
    elif value is None:
        raise ExprError("Attempt to get attribute from null value",
                        f'This value is null, so it does not have an attribute named "{name}".',
                        source)
    elif isinstance(value, (list, tuple)):
        raise ExprError("Unsupported attribute",
                        "Can't access attributes on a list of objects. Did you mean to access "
                        f'attribute "{name}" for a specific element of the list, or across all '
                        "elements of the list?", source,
                        hint=f"Use [0].{name} for one element or [*].{name} for all of them.")
    else:
        raise ExprError("Unsupported attribute",
                        f"Can't access attributes on a primitive-typed value "
                        f"({type_name(value)}).", source)
    raise ExprError("Unsupported attribute",
                    f'This object does not have an attribute named "{name}".', source,
                    hint=suggest(name, [k for k in value
                                          if isinstance(k, str) and not k.startswith("__")]))


def _list_index(key: Any, source: SourceRange | None) -> int:
    t = type(key)
    if t is int:
        return key
    if t is float and key.is_integer():
        return int(key)
    if t is str:
        number = parse_number(key)
        if type(number) is int:
            return number
    raise ExprError("Invalid index",
                    "The given key does not identify an element in this collection value: "
                    f"a whole number is required, got {type_name(key)}{_shown(key)}.", source)


def get_index(value: Any, key: Any, source: SourceRange | None) -> Any:
    """`value[key]`: an element of a list (by number) or of an object/map (by string)."""
    if value is UNKNOWN or key is UNKNOWN:
        return UNKNOWN
    sensitive = False
    if type(value) is Sensitive:
        value, sensitive = value.value, True
    if type(key) is Sensitive:
        key, sensitive = key.value, True
    if value is UNKNOWN or key is UNKNOWN:
        return UNKNOWN
    if isinstance(value, (list, tuple)):
        index = _list_index(key, source)
        if 0 <= index < len(value):
            result = value[index]
        else:
            raise ExprError("Invalid index",
                            "The given key does not identify an element in this collection "
                            f"value: index {index} is out of range for a list of "
                            f"{len(value)} element{'s' if len(value) != 1 else ''}.", source)
    elif isinstance(value, Mapping):
        name = to_string(key)
        if name is None:
            raise ExprError("Invalid index",
                            "The given key does not identify an element in this collection "
                            f"value: a string is required, got {type_name(key)}.", source)
        if name not in value:
            raise ExprError("Invalid index",
                            "The given key does not identify an element in this collection "
                            f'value: there is no key "{name}".', source,
                            hint=suggest(name, [k for k in value
                                          if isinstance(k, str) and not k.startswith("__")]))
        result = value[name]
    elif value is None:
        raise ExprError("Attempt to index null value",
                        "This value is null, so it does not have any indices.", source)
    else:
        raise ExprError("Invalid index",
                        f"This value does not have any indices ({type_name(value)}).", source)
    if sensitive and result is not UNKNOWN:
        return Sensitive(result)
    return result


def splat(value: Any, each: Callable[[Any], Any], source: SourceRange | None) -> Any:
    """`value[*]...`: map over a list; null gives []; any other value v gives [v...]."""
    if value is UNKNOWN:
        return UNKNOWN
    if type(value) is Sensitive:
        inner = splat(value.value, each, source)
        return inner if inner is UNKNOWN else Sensitive(inner)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [each(item) for item in value]
    return [each(value)]


def iteration_pairs(value: Any, source: SourceRange | None, what: str) -> list[tuple[Any, Any]]:
    """(key, value) pairs a `for` iterates: index/element for lists, sorted key/value for maps."""
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if isinstance(value, Mapping):
        try:
            keys = sorted(value)
        except TypeError:
            keys = list(value)
        return [(k, value[k]) for k in keys]
    if value is None:
        raise ExprError("Iteration over null value",
                        f"A null value cannot be used as the collection in a {what}.", source)
    raise ExprError("Iteration over non-iterable value",
                    f"A value of type {type_name(value)} cannot be used as the collection in a "
                    f"{what}.", source)


def object_key(key: Any, source: SourceRange | None) -> str:
    """An evaluated object key as a string (numbers and bools convert, like HCL)."""
    name = to_string(key)
    if name is not None:
        return name
    if key is None:
        raise ExprError("Invalid object key", "The key expression produced a null value.",
                        source)
    raise ExprError("Invalid object key",
                    f"The key expression produced an invalid result: string required, got "
                    f"{type_name(key)}.", source)


def hcl_literal(value: Any) -> str:
    """A value written as HCL source (used to print type defaults and messages)."""
    if value is None:
        return "null"
    if value is UNKNOWN:
        return "(known after apply)"
    if isinstance(value, Sensitive):
        return "(sensitive value)"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if is_number(value):
        return number_str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            key = k if isinstance(k, str) and re.fullmatch(r"[A-Za-z_][\w-]*", k) \
                else json.dumps(str(k))
            items.append(f"{key} = {hcl_literal(v)}")
        return "{" + ", ".join(items) + "}"
    return repr(value)
