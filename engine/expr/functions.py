"""Built-in functions of the expression language.

`FUNCTIONS` maps each name to a plain Python callable taking already-evaluated
arguments.  Metadata rides on the callable as attributes, set by `@builtin`:

* ``needs_scope`` - the callable takes the `Scope` first (file functions, for
  ``scope.base_dir``);
* ``structural`` - the function only rearranges values, so unknown or sensitive
  *elements* inside its arguments pass through untouched (``length([x, y])``
  is known even if ``x`` is not).  Other functions return UNKNOWN when any
  argument contains UNKNOWN, and a Sensitive result when any contains Sensitive;
* ``raw`` - the function sees markers as they are (``sensitive``, ``nonsensitive``);
* ``reads_files`` - the result depends on files, so the expression is not constant.

`call()` applies those rules and turns every failure into an `ExprError` that
names the function and the parameter.  ``try`` and ``can`` evaluate their
arguments lazily and are therefore implemented by the compiler, not here.

Available: abs, alltrue, anytrue, base64decode, base64encode, basename, can, ceil,
chomp, coalesce, coalescelist, compact, concat, contains, dirname, distinct,
element, endswith, file, filebase64, fileexists, filesha256, flatten, floor,
format, formatlist, index, indent, join, jsondecode, jsonencode, keys, length,
lookup, lower, max, md5, merge, min, nonsensitive, one, pow, range, regex,
regexall, replace, reverse, sensitive, setintersection, setsubtract, setunion,
sha256, signum, slice, sort, split, startswith, strcontains, strrev, substr, sum,
templatefile, title, tobool, tolist, tomap, tonumber, toset, tostring, transpose,
trim, trimprefix, trimspace, trimsuffix, try, upper, urlencode, uuidv5, values,
yamldecode, yamlencode, zipmap.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import inspect
import json
import math
import os
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from mlform.diagnostics import SourceRange
from mlform.expr import ops
from mlform.expr.errors import ExprError
from mlform.expr.values import UNKNOWN, Sensitive, contains_unknown, strip_sensitive

__all__ = ["FUNCTIONS", "ArgError", "FunctionError", "call", "arity"]

FUNCTIONS: dict[str, Callable[..., Any]] = {}

# Names the compiler handles itself (lazy arguments); listed for suggestions.
LAZY_FUNCTIONS = ("can", "try")

_RANGE_LIMIT = 65536  # a typo like range(1e9) must not exhaust memory
_WIDTH_LIMIT = 4096


class ArgError(Exception):
    """A function rejects one argument; `index` is its position (0-based)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


class FunctionError(Exception):
    """A function fails as a whole (not one argument's fault)."""


def builtin(name: str, *, needs_scope: bool = False, structural: bool = False,
            raw: bool = False, reads_files: bool = False):
    """Register a callable in FUNCTIONS under `name` with its metadata."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters.values())
        if needs_scope:
            params = params[1:]
        fn.needs_scope = needs_scope  # type: ignore[attr-defined]
        fn.structural = structural  # type: ignore[attr-defined]
        fn.raw = raw  # type: ignore[attr-defined]
        fn.reads_files = reads_files  # type: ignore[attr-defined]
        fn.params = tuple(p.name for p in params)  # type: ignore[attr-defined]
        fn.min_args = sum(1 for p in params if p.default is p.empty  # type: ignore[attr-defined]
                          and p.kind is not p.VAR_POSITIONAL)
        fn.max_args = None if any(p.kind is p.VAR_POSITIONAL  # type: ignore[attr-defined]
                                  for p in params) else len(params)
        fn.function_name = name  # type: ignore[attr-defined]
        FUNCTIONS[name] = fn
        return fn

    return register


def arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    return fn.min_args, fn.max_args  # type: ignore[attr-defined]


def param_name(fn: Callable[..., Any], index: int) -> str:
    params = fn.params  # type: ignore[attr-defined]
    if not params:
        return "arg"
    return params[min(index, len(params) - 1)]


def call(name: str, fn: Callable[..., Any], args: list[Any], scope: Any,
         source: SourceRange | None, arg_sources: Sequence[SourceRange | None] = ()) -> Any:
    """Call builtin `fn` with the unknown/sensitive rules of its metadata."""
    lo, hi = arity(fn)
    if len(args) < lo or (hi is not None and len(args) > hi):
        raise arity_error(name, fn, len(args), source)
    sensitive = False
    if not fn.raw:  # type: ignore[attr-defined]
        for i, arg in enumerate(args):
            if arg is UNKNOWN:
                return UNKNOWN
            if type(arg) is Sensitive:
                sensitive = True
                args[i] = arg = arg.value
                if arg is UNKNOWN:
                    return UNKNOWN
        if not fn.structural:  # type: ignore[attr-defined]
            for i, arg in enumerate(args):
                if isinstance(arg, (list, dict)):
                    if contains_unknown(arg):
                        return UNKNOWN
                    clear, marked = strip_sensitive(arg)
                    if marked:
                        args[i], sensitive = clear, True
    try:
        result = fn(scope, *args) if fn.needs_scope else fn(*args)  # type: ignore[attr-defined]
    except ExprError as err:
        raise err.at(source)
    except ArgError as err:
        at = arg_sources[err.index] if err.index < len(arg_sources) else source
        raise ExprError("Invalid function argument",
                        f'Invalid value for "{param_name(fn, err.index)}" parameter: '
                        f"{err.message}.", at or source,
                        hint=f'In call to function "{name}".') from None
    except RecursionError:
        raise ExprError("Error in function call",
                        f'Call to function "{name}" failed: value nested too deeply.',
                        source) from None
    except Exception as err:  # any other failure is still the user's input, not a crash
        message = str(err) or type(err).__name__
        raise ExprError("Error in function call",
                        f'Call to function "{name}" failed: {message}.', source) from None
    if sensitive and result is not UNKNOWN:
        return Sensitive(result)
    return result


def arity_error(name: str, fn: Callable[..., Any], given: int,
                source: SourceRange | None) -> ExprError:
    lo, hi = arity(fn)
    if given < lo:
        missing = param_name(fn, given)
        return ExprError("Not enough function arguments",
                         f'Function "{name}" expects {_count(lo, hi)} but {given} '
                         f'{"was" if given == 1 else "were"} given. Missing value for '
                         f'"{missing}".', source)
    return ExprError("Too many function arguments",
                     f'Function "{name}" expects {_count(lo, hi)} but {given} were given.',
                     source)


def _count(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"at least {lo} argument{'s' if lo != 1 else ''}"
    if lo == hi:
        return f"{lo} argument{'s' if lo != 1 else ''}"
    return f"{lo} to {hi} arguments"


# ---------------------------------------------------------------------------
# Argument helpers: HCL converts primitives automatically
# ---------------------------------------------------------------------------

def _str(value: Any, i: int) -> str:
    text = ops.to_string(value)
    if text is None:
        if value is None:
            raise ArgError(i, "argument must not be null")
        raise ArgError(i, f"string required, got {ops.type_name(value)}")
    return text


def _num(value: Any, i: int) -> int | float:
    if ops.is_number(value):
        return value
    if type(value) is str:
        number = ops.parse_number(value)
        if number is not None:
            return number
        raise ArgError(i, f"a number is required, got string {json.dumps(value)[:40]}")
    if value is None:
        raise ArgError(i, "argument must not be null")
    raise ArgError(i, f"a number is required, got {ops.type_name(value)}")


def _int(value: Any, i: int) -> int:
    number = _num(value, i)
    if type(number) is float:
        if not number.is_integer():
            raise ArgError(i, f"a whole number is required, got {ops.number_str(number)}")
        return int(number)
    return number


def _bool(value: Any, i: int) -> bool:
    if value is True or value is False:
        return value
    if value == "true" and type(value) is str:
        return True
    if value == "false" and type(value) is str:
        return False
    raise ArgError(i, f"a bool is required, got {ops.type_name(value)}")


def _list(value: Any, i: int) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        raise ArgError(i, "argument must not be null")
    raise ArgError(i, f"a list is required, got {ops.type_name(value)}")


def _map(value: Any, i: int) -> Mapping:
    if isinstance(value, Mapping):
        return value
    if value is None:
        raise ArgError(i, "argument must not be null")
    raise ArgError(i, f"a map or object is required, got {ops.type_name(value)}")


def _canon(value: Any) -> str:
    """A key that is equal exactly when HCL values are equal (for distinct/toset)."""
    return json.dumps(value, sort_keys=True, default=repr)


def _unify(values: list, i: int) -> list:
    """Convert mixed primitives to strings, as HCL does when building a list/set/map."""
    kinds = {type(v) for v in values if v is not None and v is not UNKNOWN}
    kinds = {int if k is float else k for k in kinds}
    if len(kinds) > 1 and kinds <= {str, int, bool}:
        return [ops.to_string(v) if v is not None and v is not UNKNOWN else v for v in values]
    return values


def _set_order(values: list) -> list:
    """Deduplicate and sort: numbers numerically, others by their text."""
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(_canon(v), v)
    items = list(seen.values())
    if all(ops.is_number(v) for v in items):
        return sorted(items)
    if all(isinstance(v, str) for v in items):
        return sorted(items)
    if all(isinstance(v, bool) for v in items):
        return sorted(items)
    return sorted(items, key=_canon)


# ---------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------

_VERB_RE = re.compile(r"%(?:\[(\d+)\])?([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])?")


def _format_one(verb: str, flags: str, width: str | None, precision: str | None,
                value: Any, i: int) -> str:
    if width and int(width) > _WIDTH_LIMIT:
        raise FunctionError(f"width {width} is too large")
    if verb == "v":
        text = ops.to_string(value)
        if text is None:
            text = "null" if value is None else _jsonencode(value)
        if "#" in flags:
            text = _jsonencode(value)
        return _pad(text, flags, width)
    if verb == "s":
        return _pad(_str(value, i)[: int(precision)] if precision else _str(value, i), flags,
                    width)
    if verb == "q":
        return _pad(json.dumps(_str(value, i), ensure_ascii=False), flags, width)
    if verb == "t":
        return _pad("true" if _bool(value, i) else "false", flags, width)
    number = _num(value, i)
    if verb in "dbox" or verb == "X":
        if type(number) is float:
            if not number.is_integer():
                raise ArgError(i, f"%{verb} requires a whole number, got "
                                  f"{ops.number_str(number)}")
            number = int(number)
        if verb == "b":
            text = format(number, "b")
            return _pad(text, flags, width)
        return ("%" + flags + (width or "") + verb) % number
    if verb in "eEfFgG":
        spec = "%" + flags + (width or "") + ("." + precision if precision else "") + verb
        return spec % float(number)
    raise FunctionError(f"unsupported format verb %{verb}")


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width:
        return text
    if "-" in flags:
        return text.ljust(int(width))
    return text.rjust(int(width), "0" if "0" in flags else " ")


def _format(spec: str, args: Sequence[Any], first: int = 1) -> str:
    out: list[str] = []
    pos = 0
    next_arg = 0
    used = set()
    for m in _VERB_RE.finditer(spec):
        out.append(spec[pos:m.start()])
        pos = m.end()
        explicit, flags, width, precision, verb = m.groups()
        if verb is None:
            raise FunctionError(f"unterminated format verb at offset {m.start()}")
        if verb == "%":
            out.append("%")
            continue
        index = int(explicit) - 1 if explicit else next_arg
        if index < 0 or index >= len(args):
            raise FunctionError(f"not enough arguments for format verb "
                                f"{m.group(0)!r} (argument {index + 1})")
        value = args[index]
        if value is UNKNOWN:
            return UNKNOWN  # type: ignore[return-value]
        out.append(_format_one(verb, flags, width, precision, value, index + first))
        used.add(index)
        next_arg = index + 1
    out.append(spec[pos:])
    if len(used) < len(args):
        unused = min(set(range(len(args))) - used) + 1
        raise FunctionError(f"too many arguments; no verbs for argument {unused}")
    return "".join(out)


@builtin("format")
def fn_format(format: Any, *args: Any) -> str:
    """format(spec, values...): printf-style, verbs %s %d %f %v %q %t %x %e %g %%."""
    return _format(_str(format, 0), args)


@builtin("formatlist")
def fn_formatlist(format: Any, *args: Any) -> list:
    """formatlist(spec, values...): format() across lists (scalars repeat)."""
    spec = _str(format, 0)
    length = None
    for i, arg in enumerate(args):
        if isinstance(arg, (list, tuple)):
            if length is not None and len(arg) != length:
                raise ArgError(i + 1, f"all list arguments must have the same length "
                                      f"({length} and {len(arg)})")
            length = len(arg)
    if length is None:
        return [_format(spec, args)]
    return [_format(spec, [a[n] if isinstance(a, (list, tuple)) else a for a in args])
            for n in range(length)]


@builtin("join")
def fn_join(separator: Any, *lists: Any) -> str:
    """join(separator, list...): concatenate string elements."""
    sep = _str(separator, 0)
    if not lists:
        raise ArgError(1, "at least one list is required")
    parts = []
    for i, lst in enumerate(lists, start=1):
        for n, item in enumerate(_list(lst, i)):
            if item is None:
                raise ArgError(i, f"element {n} is null")
            text = ops.to_string(item)
            if text is None:
                raise ArgError(i, f"element {n}: string required, got {ops.type_name(item)}")
            parts.append(text)
    return sep.join(parts)


@builtin("split")
def fn_split(separator: Any, string: Any) -> list:
    """split(separator, string) -> list of strings."""
    sep, text = _str(separator, 0), _str(string, 1)
    if sep == "":
        return list(text)
    return text.split(sep)


@builtin("lower")
def fn_lower(string: Any) -> str:
    return _str(string, 0).lower()


@builtin("upper")
def fn_upper(string: Any) -> str:
    return _str(string, 0).upper()


@builtin("title")
def fn_title(string: Any) -> str:
    """Uppercase the first letter of each word (the rest is left alone)."""
    return re.sub(r"(?<![\w'])(\w)", lambda m: m.group(1).upper(), _str(string, 0))


@builtin("trimspace")
def fn_trimspace(string: Any) -> str:
    return _str(string, 0).strip()


@builtin("chomp")
def fn_chomp(string: Any) -> str:
    """Remove trailing newline characters."""
    return _str(string, 0).rstrip("\r\n")


@builtin("trim")
def fn_trim(string: Any, cutset: Any) -> str:
    """trim(string, cutset): strip any of the cutset characters at both ends."""
    return _str(string, 0).strip(_str(cutset, 1))


@builtin("trimprefix")
def fn_trimprefix(string: Any, prefix: Any) -> str:
    return _str(string, 0).removeprefix(_str(prefix, 1))


@builtin("trimsuffix")
def fn_trimsuffix(string: Any, suffix: Any) -> str:
    return _str(string, 0).removesuffix(_str(suffix, 1))


@builtin("indent")
def fn_indent(spaces: Any, string: Any) -> str:
    """Indent every line but the first by `spaces` spaces."""
    pad = " " * max(0, min(_int(spaces, 0), _WIDTH_LIMIT))
    return _str(string, 1).replace("\n", "\n" + pad)


def _regex(pattern: str, i: int) -> re.Pattern:
    try:
        return _compile_regex(pattern)
    except re.error as err:
        raise ArgError(i, f"invalid regular expression: {err}") from None


@functools.lru_cache(maxsize=256)
def _compile_regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _go_replacement(text: str) -> str:
    """Translate Go's $1 / ${name} replacement syntax to Python's \\g<...>."""
    text = text.replace("\\", "\\\\")
    return re.sub(r"\$(?:\{(\w+)\}|(\d+)|(\$))",
                  lambda m: "$" if m.group(3) else f"\\g<{m.group(1) or m.group(2)}>", text)


@builtin("replace")
def fn_replace(string: Any, substring: Any, replacement: Any) -> str:
    """replace(string, search, replacement); a /search/ is a regular expression."""
    text, search, repl = _str(string, 0), _str(substring, 1), _str(replacement, 2)
    if len(search) >= 2 and search.startswith("/") and search.endswith("/"):
        return _regex(search[1:-1], 1).sub(_go_replacement(repl), text)
    return text.replace(search, repl)


@builtin("substr")
def fn_substr(string: Any, offset: Any, length: Any) -> str:
    """substr(string, offset, length); negative offset counts from the end, length -1 = rest."""
    text, start, size = _str(string, 0), _int(offset, 1), _int(length, 2)
    if start < 0:
        start = max(0, len(text) + start)
    if start > len(text):
        raise ArgError(1, "offset is beyond the end of the string")
    if size < 0:
        return text[start:]
    return text[start:start + size]


@builtin("strrev")
def fn_strrev(string: Any) -> str:
    return _str(string, 0)[::-1]


def _match_value(m: re.Match) -> Any:
    if m.re.groupindex:
        return {name: m.group(name) for name in m.re.groupindex}
    if m.re.groups:
        return list(m.groups())
    return m.group(0)


@builtin("regex")
def fn_regex(pattern: Any, string: Any) -> Any:
    """regex(pattern, string): the match; a list of groups or a map of named groups."""
    m = _regex(_str(pattern, 0), 0).search(_str(string, 1))
    if m is None:
        raise FunctionError("pattern did not match any part of the given string")
    return _match_value(m)


@builtin("regexall")
def fn_regexall(pattern: Any, string: Any) -> list:
    """regexall(pattern, string): every match, as regex() would return it."""
    return [_match_value(m) for m in _regex(_str(pattern, 0), 0).finditer(_str(string, 1))]


@builtin("startswith")
def fn_startswith(string: Any, prefix: Any) -> bool:
    return _str(string, 0).startswith(_str(prefix, 1))


@builtin("endswith")
def fn_endswith(string: Any, suffix: Any) -> bool:
    return _str(string, 0).endswith(_str(suffix, 1))


@builtin("strcontains")
def fn_strcontains(string: Any, substr: Any) -> bool:
    return _str(substr, 1) in _str(string, 0)


@builtin("urlencode")
def fn_urlencode(string: Any) -> str:
    return urllib.parse.quote(_str(string, 0), safe="-._~")


# ---------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------

@builtin("merge", structural=True)
def fn_merge(*maps: Any) -> dict:
    """merge(maps...): later keys win; null arguments are skipped."""
    out: dict = {}
    for i, m in enumerate(maps):
        if m is None:
            continue
        out.update(_map(m, i))
    return out


@builtin("lookup", structural=True)
def fn_lookup(map: Any, key: Any, *default: Any) -> Any:
    """lookup(map, key, default?): the element, or the default when the key is absent."""
    m, k = _map(map, 0), _str(key, 1)
    if len(default) > 1:
        raise ArgError(3, "lookup takes at most one default")
    if k in m:
        return m[k]
    if default:
        return default[0]
    raise FunctionError(f'lookup failed to find key "{k}"')


@builtin("length", structural=True)
def fn_length(value: Any) -> int:
    """Elements of a list or map, or characters of a string."""
    if isinstance(value, (list, tuple, str)) or isinstance(value, Mapping):
        return len(value)
    if value is None:
        raise ArgError(0, "argument must not be null")
    raise ArgError(0, f"a collection or string is required, got {ops.type_name(value)}")


@builtin("keys", structural=True)
def fn_keys(inputMap: Any) -> list:
    """Sorted keys of a map."""
    return sorted(_map(inputMap, 0))


@builtin("values", structural=True)
def fn_values(mapping: Any) -> list:
    """Values of a map, in the order of its sorted keys."""
    m = _map(mapping, 0)
    return [m[k] for k in sorted(m)]


@builtin("range")
def fn_range(*params: Any) -> list:
    """range(limit) / range(start, limit) / range(start, limit, step)."""
    nums = [_num(p, i) for i, p in enumerate(params)]
    if not 1 <= len(nums) <= 3:
        raise FunctionError("range takes 1 to 3 arguments")
    start, step = 0, 1
    if len(nums) == 1:
        limit = nums[0]
    elif len(nums) == 2:
        start, limit = nums
    else:
        start, limit, step = nums
    if step == 0:
        raise ArgError(2, "step must not be zero")
    out = []
    value = start
    while (value < limit) if step > 0 else (value > limit):
        out.append(ops.normalize(value))
        if len(out) > _RANGE_LIMIT:
            raise FunctionError(f"more than {_RANGE_LIMIT} elements")
        value += step
    return out


@builtin("toset")
def fn_toset(v: Any) -> list:
    """A set: deduplicated, sorted list (mixed primitives become strings)."""
    return _set_order(_unify(_list(v, 0), 0))


@builtin("tolist", structural=True)
def fn_tolist(v: Any) -> list:
    return _unify(_list(v, 0), 0)


@builtin("tomap", structural=True)
def fn_tomap(v: Any) -> dict:
    m = dict(_map(v, 0))
    return dict(zip(m.keys(), _unify(list(m.values()), 0)))


@builtin("tostring")
def fn_tostring(v: Any) -> Any:
    if v is None:
        return None
    text = ops.to_string(v)
    if text is None:
        raise ArgError(0, f"cannot convert {ops.type_name(v)} to string")
    return text


@builtin("tonumber")
def fn_tonumber(v: Any) -> Any:
    if v is None:
        return None
    if type(v) is bool:
        raise ArgError(0, "cannot convert bool to number")
    return _num(v, 0)


@builtin("tobool")
def fn_tobool(v: Any) -> Any:
    if v is None:
        return None
    return _bool(v, 0)


@builtin("concat", structural=True)
def fn_concat(*seqs: Any) -> list:
    out: list = []
    for i, s in enumerate(seqs):
        out.extend(_list(s, i))
    return out


@builtin("contains")
def fn_contains(list: Any, value: Any) -> bool:
    return any(ops.equal(item, value) is True for item in _list(list, 0))


@builtin("distinct")
def fn_distinct(list: Any) -> list:
    seen: dict[str, Any] = {}
    for item in _list(list, 0):
        seen.setdefault(_canon(item), item)
    return [*seen.values()]


def _flatten(items: Sequence[Any], out: list) -> list:
    for item in items:
        if isinstance(item, (list, tuple)):
            _flatten(item, out)
        else:
            out.append(item)
    return out


@builtin("flatten")
def fn_flatten(list: Any) -> list:
    """Replace nested lists by their elements, recursively."""
    return _flatten(_list(list, 0), [])


@builtin("element", structural=True)
def fn_element(list: Any, index: Any) -> Any:
    """element(list, index): index wraps around the end."""
    items, n = _list(list, 0), _int(index, 1)
    if not items:
        raise FunctionError("cannot use element function with an empty list")
    if n < 0:
        raise ArgError(1, "cannot use element function with a negative index")
    return items[n % len(items)]


@builtin("index")
def fn_index(list: Any, value: Any) -> int:
    """Position of the first element equal to value."""
    for n, item in enumerate(_list(list, 0)):
        if ops.equal(item, value) is True:
            return n
    raise FunctionError("item not found")


@builtin("slice", structural=True)
def fn_slice(list: Any, start_index: Any, end_index: Any) -> list:
    items = _list(list, 0)
    start, end = _int(start_index, 1), _int(end_index, 2)
    if start < 0 or start > len(items):
        raise ArgError(1, f"start index {start} is out of range")
    if end < start or end > len(items):
        raise ArgError(2, f"end index {end} is out of range")
    return items[start:end]


@builtin("reverse", structural=True)
def fn_reverse(list: Any) -> list:
    return _list(list, 0)[::-1]


@builtin("sort")
def fn_sort(list: Any) -> list:
    """Lexicographic sort; elements are converted to strings, as in Terraform."""
    return sorted(_str(item, 0) for item in _list(list, 0))


@builtin("zipmap", structural=True)
def fn_zipmap(keys: Any, values: Any) -> dict:
    ks, vs = _list(keys, 0), _list(values, 1)
    if len(ks) != len(vs):
        raise FunctionError(f"number of keys ({len(ks)}) does not match number of values "
                            f"({len(vs)})")
    out = {}
    for k, v in zip(ks, vs):
        if k is UNKNOWN:
            return UNKNOWN  # type: ignore[return-value]
        if isinstance(k, Sensitive):
            raise ArgError(0, "keys must not be sensitive")
        out[_str(k, 0)] = v
    return out


@builtin("coalesce", structural=True)
def fn_coalesce(*vals: Any) -> Any:
    """The first argument that is not null or an empty string."""
    for v in vals:
        if v is UNKNOWN:
            return UNKNOWN
        if v is not None and v != "":
            return v
    raise FunctionError("no non-null, non-empty-string arguments")


@builtin("coalescelist", structural=True)
def fn_coalescelist(*vals: Any) -> Any:
    """The first argument that is a non-empty list."""
    for i, v in enumerate(vals):
        if v is UNKNOWN:
            return UNKNOWN
        if _list(v, i):
            return v
    raise FunctionError("no non-empty list arguments")


@builtin("compact")
def fn_compact(list: Any) -> list:
    """Remove null and empty-string elements."""
    return [v for v in _list(list, 0) if v is not None and v != ""]


@builtin("one", structural=True)
def fn_one(list: Any) -> Any:
    """The only element of a 0- or 1-element list (null when empty)."""
    items = _list(list, 0)
    if len(items) > 1:
        raise ArgError(0, f"must be a list of zero or one elements, got {len(items)}")
    return items[0] if items else None


@builtin("alltrue")
def fn_alltrue(list: Any) -> bool:
    return all(_bool(v, 0) for v in _list(list, 0))


@builtin("anytrue")
def fn_anytrue(list: Any) -> bool:
    return any(_bool(v, 0) for v in _list(list, 0))


@builtin("setunion")
def fn_setunion(first_set: Any, *other_sets: Any) -> list:
    items = []
    for i, s in enumerate((first_set, *other_sets)):
        items.extend(_list(s, i))
    return _set_order(_unify(items, 0))


@builtin("setintersection")
def fn_setintersection(first_set: Any, *other_sets: Any) -> list:
    keep = {_canon(v): v for v in _list(first_set, 0)}
    for i, s in enumerate(other_sets, start=1):
        present = {_canon(v) for v in _list(s, i)}
        keep = {k: v for k, v in keep.items() if k in present}
    return _set_order(list(keep.values()))


@builtin("setsubtract")
def fn_setsubtract(a: Any, b: Any) -> list:
    remove = {_canon(v) for v in _list(b, 1)}
    return _set_order([v for v in _list(a, 0) if _canon(v) not in remove])


@builtin("transpose")
def fn_transpose(map: Any) -> dict:
    """Swap keys and values of a map of lists of strings."""
    out: dict[str, list] = {}
    m = _map(map, 0)
    for k in sorted(m):
        for v in _list(m[k], 0):
            out.setdefault(_str(v, 0), []).append(k)
    return out


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

@builtin("min")
def fn_min(*numbers: Any) -> Any:
    if not numbers:
        raise FunctionError("at least one number is required")
    return min(_num(n, i) for i, n in enumerate(numbers))


@builtin("max")
def fn_max(*numbers: Any) -> Any:
    if not numbers:
        raise FunctionError("at least one number is required")
    return max(_num(n, i) for i, n in enumerate(numbers))


@builtin("abs")
def fn_abs(num: Any) -> Any:
    return abs(_num(num, 0))


@builtin("ceil")
def fn_ceil(num: Any) -> int:
    return math.ceil(_num(num, 0))


@builtin("floor")
def fn_floor(num: Any) -> int:
    return math.floor(_num(num, 0))


@builtin("signum")
def fn_signum(num: Any) -> int:
    n = _num(num, 0)
    return (n > 0) - (n < 0)


@builtin("pow")
def fn_pow(base: Any, exponent: Any) -> Any:
    """pow(base, exponent), computed in floating point (no runaway big ints)."""
    result = math.pow(_num(base, 0), _num(exponent, 1))
    return ops.normalize(result) if abs(result) < 2 ** 53 else result


@builtin("sum")
def fn_sum(list: Any) -> Any:
    items = _list(list, 0)
    if not items:
        raise FunctionError("cannot sum an empty list")
    return ops.normalize(sum(_num(v, 0) for v in items))


# ---------------------------------------------------------------------------
# Encoding and hashing
# ---------------------------------------------------------------------------

def _jsonencode(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    # Terraform (Go's encoder) escapes these inside strings; match it byte for byte.
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _normalize_data(value: Any) -> Any:
    """Decoded JSON/YAML as expression values (integral floats to int, dates to str)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FunctionError("infinite and NaN numbers are not supported")
        return ops.normalize(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, bool) else ("true" if k else "false"):
                _normalize_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize_data(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        raise FunctionError("binary data is not supported")
    if isinstance(value, set):
        return _set_order([_normalize_data(v) for v in value])
    return value


@builtin("jsonencode")
def fn_jsonencode(val: Any) -> str:
    return _jsonencode(val)


@builtin("jsondecode")
def fn_jsondecode(str: Any) -> Any:
    try:
        return _normalize_data(json.loads(_str(str, 0)))
    except json.JSONDecodeError as err:
        raise ArgError(0, f"invalid JSON: {err}") from None
    except ValueError:  # an integer of more digits than Python converts
        raise ArgError(0, "invalid JSON: a number has too many digits") from None


@builtin("yamlencode")
def fn_yamlencode(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True)


@builtin("yamldecode")
def fn_yamldecode(src: Any) -> Any:
    try:
        return _normalize_data(yaml.safe_load(_str(src, 0)))
    except yaml.YAMLError as err:
        raise ArgError(0, f"invalid YAML: {str(err).splitlines()[0]}") from None
    except ValueError:  # an integer of more digits than Python converts
        raise ArgError(0, "invalid YAML: a number has too many digits") from None


@builtin("base64encode")
def fn_base64encode(str: Any) -> Any:
    return base64.b64encode(_str(str, 0).encode()).decode("ascii")


@builtin("base64decode")
def fn_base64decode(str: Any) -> Any:
    try:
        raw = base64.b64decode(_str(str, 0), validate=True)
    except ValueError:
        raise ArgError(0, "invalid base64 data") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArgError(0, "the decoded bytes are not valid UTF-8") from None


@builtin("sha256")
def fn_sha256(str: Any) -> str:
    return hashlib.sha256(_str(str, 0).encode()).hexdigest()


@builtin("md5")
def fn_md5(str: Any) -> str:
    return hashlib.md5(_str(str, 0).encode()).hexdigest()


_UUID_NAMESPACES = {"dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL,
                    "oid": uuid.NAMESPACE_OID, "x500": uuid.NAMESPACE_X500}


@builtin("uuidv5")
def fn_uuidv5(namespace: Any, name: Any) -> str:
    ns = _str(namespace, 0)
    try:
        space = _UUID_NAMESPACES.get(ns) or uuid.UUID(ns)
    except ValueError:
        raise ArgError(0, 'must be "dns", "url", "oid", "x500" or a UUID') from None
    return str(uuid.uuid5(space, _str(name, 1)))


# ---------------------------------------------------------------------------
# Files (relative to the scope's base_dir)
# ---------------------------------------------------------------------------

def _path(scope: Any, value: Any, i: int) -> Path:
    path = Path(_str(value, i)).expanduser()
    if not path.is_absolute():
        path = Path(scope.base_dir) / path
    return path


def _read_bytes(path: Path, i: int) -> bytes:
    try:
        stat = path.stat()
    except OSError:
        raise ArgError(i, f'no file exists at "{path}"') from None
    if not path.is_file():
        raise ArgError(i, f'"{path}" is not a regular file')
    # Cached by size and mtime: 10,000 instances reading one file read it once.
    return _cached_read(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=128)
def _cached_read(path: str, size: int, mtime_ns: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _read_text(path: Path, i: int) -> str:
    try:
        return _read_bytes(path, i).decode("utf-8")
    except UnicodeDecodeError:
        raise ArgError(i, f'the contents of "{path}" are not valid UTF-8; use filebase64 '
                          "for binary files") from None


@builtin("file", needs_scope=True, reads_files=True)
def fn_file(scope: Any, path: Any) -> str:
    """Contents of a UTF-8 file, relative to the stack directory."""
    return _read_text(_path(scope, path, 0), 0)


@builtin("filebase64", needs_scope=True, reads_files=True)
def fn_filebase64(scope: Any, path: Any) -> str:
    return base64.b64encode(_read_bytes(_path(scope, path, 0), 0)).decode("ascii")


@builtin("filesha256", needs_scope=True, reads_files=True)
def fn_filesha256(scope: Any, path: Any) -> str:
    return hashlib.sha256(_read_bytes(_path(scope, path, 0), 0)).hexdigest()


@builtin("fileexists", needs_scope=True, reads_files=True)
def fn_fileexists(scope: Any, path: Any) -> bool:
    return _path(scope, path, 0).is_file()


@builtin("basename")
def fn_basename(path: Any) -> str:
    return os.path.basename(_str(path, 0))


@builtin("dirname")
def fn_dirname(path: Any) -> str:
    return os.path.dirname(_str(path, 0)) or "."


@functools.lru_cache(maxsize=64)
def _jinja_template(source: str):
    # Imported lazily: most stacks never render a template.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                               keep_trailing_newline=True)
    return env.from_string(source)


@builtin("templatefile", needs_scope=True, reads_files=True)
def fn_templatefile(scope: Any, path: Any, vars: Any) -> str:
    """Render a Jinja2 template (sandboxed, undefined names are errors) with `vars`."""
    import jinja2

    file = _path(scope, path, 0)
    variables = dict(_map(vars, 1))
    text = _read_text(file, 0)
    try:
        return _jinja_template(text).render(variables)
    except jinja2.TemplateSyntaxError as err:
        raise FunctionError(f'template "{file.name}" line {err.lineno}: {err.message}') \
            from None
    except jinja2.exceptions.SecurityError as err:
        raise FunctionError(f'template "{file.name}" is not allowed to do that: {err}') \
            from None
    except jinja2.UndefinedError as err:
        raise FunctionError(f'template "{file.name}": {err.message}') from None
    except jinja2.TemplateError as err:
        raise FunctionError(f'template "{file.name}": {err}') from None


# ---------------------------------------------------------------------------
# Sensitivity
# ---------------------------------------------------------------------------

@builtin("sensitive", raw=True)
def fn_sensitive(value: Any) -> Any:
    """Mark a value sensitive: it will never be shown or stored in clear."""
    return Sensitive(value)


@builtin("nonsensitive", raw=True)
def fn_nonsensitive(value: Any) -> Any:
    """Remove every sensitive mark from a value (the caller vouches it is safe)."""
    return strip_sensitive(value)[0]
