"""Tests of the expression language (mlform.expr): syntax, semantics, markers, errors."""

from __future__ import annotations

import hashlib
import json

import hcl2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlform.expr as expr_pkg
from mlform.diagnostics import Diagnostic, SourceRange
from mlform.expr import (
    FUNCTIONS,
    UNKNOWN,
    Expr,
    ExprError,
    Reference,
    Scope,
    Sensitive,
    compile_hcl,
    compile_value,
    parse_expression,
    parse_type,
)

VARS = {
    "var": {"env": "prod", "n": 3, "f": 1.5, "s": "5", "flag": True, "none": None,
            "list": ["a", "b", "c"], "nums": [3, 1, 2], "map": {"x": 1, "y": 2},
            "objs": [{"name": "a", "size": 1}, {"name": "b", "size": 2}],
            "nested": {"inner": {"deep": "v"}}},
    "local": {"prefix": "fraud-prod", "secret": Sensitive("hunter2")},
    "dataset": {"d": {"uri": "s3://b/d", "parts": {"k": {"uri": "s3://b/k"}}},
                "pending": {"uri": UNKNOWN, "rows": 10}},
    "endpoint": {"e": {"url": UNKNOWN}},
    "module": {"m": {"out": "mo"}},
    "path": {"module": "/stack"},
}


@pytest.fixture
def scope(tmp_path):
    return Scope(VARS, tmp_path)


def ev(text: str, scope: Scope | None = None):
    return parse_expression(text, "main.hcl").evaluate(scope or Scope(VARS))


def err(text: str, scope: Scope | None = None) -> ExprError:
    with pytest.raises(ExprError) as info:
        parse_expression(text, "main.hcl", 7, 3).evaluate(scope or Scope(VARS))
    return info.value


# ---------------------------------------------------------------------------
# Constructs
# ---------------------------------------------------------------------------

CONSTRUCTS = [
    # literals
    ("1", 1), ("-7", -7), ("1.5", 1.5), ("1.0", 1), ("1.5e3", 1500), ("true", True),
    ("false", False), ("null", None),
    # strings, escapes, interpolation
    ('"plain"', "plain"), (r'"a\nb\t\"q\" \\ \u00e9"', 'a\nb\t"q" \\ é'),
    ('"x-${var.env}"', "x-prod"), ('"${var.n}"', 3), ('"n=${var.n} f=${var.f}"', "n=3 f=1.5"),
    ('"${var.flag}!"', "true!"), ('"$${literal}"', "${literal}"), ('"100%"', "100%"),
    ('"%%{x}"', "%{x}"), ('"${"nested ${var.env}"}"', "nested prod"),
    # template directives
    ('"%{ if var.flag }yes%{ else }no%{ endif }"', "yes"),
    ('"%{ if var.n > 5 }big%{ endif }"', ""),
    ('"%{ for x in var.list }${x};%{ endfor }"', "a;b;c;"),
    ('"%{ for i, x in var.list ~} ${i}=${x} %{~ endfor }"', "0=a1=b2=c"),
    ('"%{ for k, v in var.map }${k}${v}%{ endfor }"', "x1y2"),
    # heredocs
    ("<<EOT\nhello ${var.env}\nEOT\n", "hello prod\n"),
    ("<<-EOT\n    a\n      b ${var.n}\n    EOT\n", "a\n  b 3\n"),
    ("<<EOT\nno \"escapes\" \\n here\nEOT\n", 'no "escapes" \\n here\n'),
    # collections
    ("[1, \"a\", true]", [1, "a", True]), ("[]", []), ("{}", {}),
    ('{a = 1, "b" = 2, c: 3}', {"a": 1, "b": 2, "c": 3}),
    ('{(var.env) = 1, "${var.env}-x" = 2}', {"prod": 1, "prod-x": 2}),
    ("{in = 1, for = 2, if = 3}", {"in": 1, "for": 2, "if": 3}),
    ("{var = 1}", {"var": 1}),  # a bare key is a name, not a reference
    # arithmetic and conversions
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 / 2", 3.5), ("4 / 2", 2), ("7 % 3", 1),
    ("-7 % 3", -1), ("10 - 2 - 3", 5), ('"5" + 1', 6), ("var.s * 2", 10), ("-var.n", -3),
    ("- 5", -5), ("0.5 + 0.5", 1),
    # comparison and logic
    ("1 < 2", True), ("2 <= 2", True), ("3 > 4", False), ("3 >= 4", False),
    ('"10" > 9', True), ("1 == 1.0", True), ('1 == "1"', False), ("1 == true", False),
    ("[1, {a = 2}] == [1, {a = 2}]", True), ("null == null", True), ("var.none == null", True),
    ("1 != 2", True), ("true && false", False), ("true || false", True), ("!true", False),
    ('"true" && true', True), ("false && var.missing", False), ("true || var.missing", True),
    # conditional
    ("var.flag ? 1 : 2", 1), ("!var.flag ? 1 : 2", 2), ("false ? var.missing : 0", 0),
    # traversal
    ("var.list[0]", "a"), ("var.list.1", "b"), ('var.map["x"]', 1), ("var.map.y", 2),
    ('var.list["2"]', "c"), ("var.nested.inner.deep", "v"), ('dataset.d.parts["k"].uri', "s3://b/k"),
    ("module.m.out", "mo"), ("[10, 20][1.0]", 20), ("{a = {b = 1}}.a.b", 1),
    # splats
    ("var.objs[*].name", ["a", "b"]), ("var.objs.*.size", [1, 2]), ("var.objs.*.name[1]", "b"),
    ("var.objs[*]", VARS["var"]["objs"]), ("var.none[*]", []), ("var.map[*]", [VARS["var"]["map"]]),
    ("var.nested[*].inner.deep", ["v"]), ("[[1, 2], [3]][*][0]", [1, 3]),
    # for expressions
    ("[for x in var.list : upper(x)]", ["A", "B", "C"]),
    ("[for i, x in var.list : i]", [0, 1, 2]),
    ("[for x in var.nums : x if x > 1]", [3, 2]),
    ("[for k, v in var.map : k]", ["x", "y"]),
    ("{for k, v in var.map : v => k}", {"1": "x", "2": "y"}),
    ("{for x in var.objs : x.name => x.size}", {"a": 1, "b": 2}),
    ('{for s in ["a", "bb", "cc"] : length(s) => s...}', {"1": ["a"], "2": ["bb", "cc"]}),
    ("[for x in [] : x]", []),
    ("[for var in [1, 2] : var * 2]", [2, 4]),  # iteration names shadow roots
    # function calls, expansion, lazy functions
    ("max(var.nums...)", 3), ('format("%s-%s", ["a", "b"]...)', "a-b"),
    ("try(var.missing, var.n)", 3), ('try(var.map.zz, "fallback")', "fallback"),
    ("can(var.map.zz)", False), ("can(var.map.x)", True),
]


@pytest.mark.parametrize("text,expected", CONSTRUCTS, ids=[c[0] for c in CONSTRUCTS])
def test_constructs(text, expected):
    assert ev(text) == expected


def test_integral_numbers_stay_int():
    assert type(ev("4 / 2")) is int
    assert type(ev("1.0")) is int
    assert type(ev("7 / 2")) is float


def test_file_compile_hcl_positions_and_text():
    text = 'a = 1\nb = "x-${var.env}"\nc = <<EOT\nline ${var.missing}\nEOT\n'
    tree = hcl2.parses_to_tree(text)
    attrs = [c for c in tree.children[0].children if getattr(c, "data", "") == "attribute"]
    a, b, c = (compile_hcl(node, "m.hcl") for node in attrs)
    assert a.evaluate() == 1 and a.constant
    assert b.source == SourceRange("m.hcl", 2, 5)
    assert b.evaluate(Scope(VARS)) == "x-prod"
    assert b.source_text() == '"x-${var.env}"'
    with pytest.raises(ExprError) as info:
        c.evaluate(Scope(VARS))
    assert info.value.source == SourceRange("m.hcl", 4, 11)  # the ".missing" step
    # the expression child works as well as the attribute
    assert compile_hcl(attrs[1].children[-1], "m.hcl").evaluate(Scope(VARS)) == "x-prod"


# ---------------------------------------------------------------------------
# Unknown and sensitive
# ---------------------------------------------------------------------------

UNKNOWN_CASES = [
    ("endpoint.e.url", UNKNOWN), ("endpoint.e.url.host", UNKNOWN), ('endpoint.e.url["k"]', UNKNOWN),
    ('"https://${endpoint.e.url}/x"', UNKNOWN), ("endpoint.e.url + 1", UNKNOWN),
    ("endpoint.e.url == 1", UNKNOWN), ("endpoint.e.url ? 1 : 2", UNKNOWN), ("!endpoint.e.url", UNKNOWN),
    ("upper(endpoint.e.url)", UNKNOWN), ('join(",", [endpoint.e.url, "a"])', UNKNOWN),
    ("length([endpoint.e.url, 1])", 2), ("keys({a = endpoint.e.url})", ["a"]),
    ("[endpoint.e.url, 1][1]", 1), ("[for x in endpoint.e.url : x]", UNKNOWN),
    ("[for x in [1, 2] : endpoint.e.url]", [UNKNOWN, UNKNOWN]),
    ("[for x in [1, 2] : x if endpoint.e.url]", UNKNOWN), ("endpoint.e.url[*].a", UNKNOWN),
    ('"%{ if endpoint.e.url }a%{ endif }"', UNKNOWN), ("can(endpoint.e.url)", UNKNOWN),
    ("try(endpoint.e.url, 1)", UNKNOWN), ("false && endpoint.e.url", False),
    ("true && endpoint.e.url", UNKNOWN), ("{a = endpoint.e.url}", {"a": UNKNOWN}),
    ("concat([endpoint.e.url], [1])", [UNKNOWN, 1]), ("dataset.pending.rows", 10),
    ("max(endpoint.e.url, 1)", UNKNOWN), ("{(endpoint.e.url) = 1}", UNKNOWN),
]


@pytest.mark.parametrize("text,expected", UNKNOWN_CASES, ids=[c[0] for c in UNKNOWN_CASES])
def test_unknown_propagation(text, expected):
    assert ev(text) == expected


SENSITIVE_CASES = [
    ("local.secret", Sensitive("hunter2")), ('"pw=${local.secret}"', Sensitive("pw=hunter2")),
    ("upper(local.secret)", Sensitive("HUNTER2")), ("length(local.secret)", Sensitive(7)),
    ('local.secret == "hunter2"', Sensitive(True)), ("local.secret ? 1 : 2", None),
    ("[local.secret, 1][0]", Sensitive("hunter2")), ("[local.secret, 1][1]", 1),
    ("{a = local.secret}", {"a": Sensitive("hunter2")}),
    ('join("-", [local.secret, "x"])', Sensitive("hunter2-x")),
    ("nonsensitive(local.secret)", "hunter2"), ("sensitive(5)", Sensitive(5)),
    ("sensitive(5) + 1", Sensitive(6)), ('sensitive({a = 1}).a', Sensitive(1)),
    ("[for c in sensitive([1, 2]) : c * 2]", Sensitive([2, 4])),
    ("nonsensitive({a = sensitive(1)})", {"a": 1}),
]


@pytest.mark.parametrize("text,expected", SENSITIVE_CASES, ids=[c[0] for c in SENSITIVE_CASES])
def test_sensitive_propagation(text, expected):
    if text == "local.secret ? 1 : 2":
        with pytest.raises(ExprError):  # a string is not a condition
            ev(text)
        return
    assert ev(text) == expected


def test_sensitive_condition_marks_result():
    scope = Scope({"v": {"c": Sensitive(True)}})
    assert ev("v.c ? 1 : 2", scope) == Sensitive(1)


# ---------------------------------------------------------------------------
# References and static traversals
# ---------------------------------------------------------------------------

REFERENCE_CASES = [
    ("var.env", [("var", "env")]),
    ('dataset.d[each.key].uri', [("dataset", "d"), ("each", "key")]),
    ('dataset.d["k"].uri', [("dataset", "d", "k", "uri")]),
    ("module.m.out", [("module", "m", "out")]),
    ("var.list[0]", [("var", "list", 0)]), ("var.list.0", [("var", "list", 0)]),
    ("var.objs[*].name", [("var", "objs")]), ("var.objs.*.name", [("var", "objs")]),
    ("[for x in var.list : x.y if local.z]", [("var", "list"), ("local", "z")]),
    ("{for k, v in var.map : k => v}", [("var", "map")]),
    ('"${var.env}-${var.env}-${count.index}"', [("var", "env"), ("count", "index")]),
    ("upper(var.env) == local.prefix", [("var", "env"), ("local", "prefix")]),
    ("1 + 2", []), ("{a = b}", [("b",)]), ("{(a) = 1}", [("a",)]),
    ('"%{ for x in var.list }${x}${path.module}%{ endfor }"', [("var", "list"), ("path", "module")]),
    ("try(var.a, var.b)", [("var", "a"), ("var", "b")]),
]


@pytest.mark.parametrize("text,parts", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_references(text, parts):
    e = parse_expression(text, "main.hcl")
    assert [r.parts for r in e.references] == parts
    assert all(isinstance(r, Reference) for r in e.references)
    assert e.constant == (not parts)


def test_reference_source_and_str():
    e = parse_expression('1 + dataset.d["my key"].uri', "main.hcl", 4, 9)
    (ref,) = e.references
    assert ref.source == SourceRange("main.hcl", 4, 13)
    assert str(ref) == 'dataset.d["my key"].uri'


STATIC_CASES = [
    ("replicas", ("replicas",)), ("settings.instance_type", ("settings", "instance_type")),
    ("dataset.x", ("dataset", "x")), ("module.m.out", ("module", "m", "out")),
    ('dataset.d["k"]', ("dataset", "d", "k")), ("dataset.d[0]", ("dataset", "d", 0)),
    ("dataset.d[var.k]", None), ("dataset.d[*].x", None), ('"dataset.x"', None),
    ("(dataset.x)", None), ("upper(x)", None), ("a + b", None), ("1", None),
]


@pytest.mark.parametrize("text,parts", STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_static_traversal(text, parts):
    assert parse_expression(text, "main.hcl").static_traversal() == parts


def test_constant_flag_for_file_functions():
    assert not parse_expression('file("x")', "f").constant
    assert parse_expression('upper("x")', "f").constant


# ---------------------------------------------------------------------------
# YAML/JSON values with ${...}
# ---------------------------------------------------------------------------

YAML_CASES = [
    ("plain", "plain"), ("${var.n}", 3), ("${var.list}", ["a", "b", "c"]), ("n-${var.n}", "n-3"),
    ("$${var.n}", "${var.n}"), ('say "${var.env}"', 'say "prod"'), ("back\\slash ${var.n}", "back\\slash 3"),
    ("line1\n${var.env}\n", "line1\nprod\n"), ('${format("%s}", var.env)}', "prod}"),
    ('${ {a = 1}["a"] }', 1), ("%{ for x in var.list }${x}%{ endfor }", "abc"),
    ("50% of ${var.n}", "50% of 3"), ("$5 and %d", "$5 and %d"),
    ({"a": ["${var.env}", 2, 2.0, None, True], "b": {"c": "${var.map.x}"}},
     {"a": ["prod", 2, 2, None, True], "b": {"c": 1}}),
    (5, 5), (None, None), ([], []),
]


@pytest.mark.parametrize("value,expected", YAML_CASES, ids=[repr(c[0])[:40] for c in YAML_CASES])
def test_yaml_values(value, expected):
    assert compile_value(value, "s.yaml", 3, 7).evaluate(Scope(VARS)) == expected


def test_yaml_references_traversal_and_positions():
    e = compile_value({"x": "${dataset.d.uri}", "y": ["a-${var.env}"]}, "s.yaml", 3, 7)
    assert [r.parts for r in e.references] == [("dataset", "d", "uri"), ("var", "env")]
    assert not e.constant
    assert compile_value("${dataset.d.uri}", "s.yaml").static_traversal() == ("dataset", "d", "uri")
    assert compile_value("x${dataset.d.uri}", "s.yaml").static_traversal() is None
    with pytest.raises(ExprError) as info:
        compile_value("abc ${var.nope}", "s.yaml", 3, 7).evaluate(Scope(VARS))
    assert info.value.source == SourceRange("s.yaml", 3, 16)  # the ".nope" step
    assert info.value.summary == "Unsupported attribute"
    with pytest.raises(ExprError) as info:
        compile_value("abc\n ${var.nope}", "s.yaml", 3, 7).evaluate(Scope(VARS))
    assert (info.value.source.line, info.value.source.column) == (4, 7)


@pytest.mark.parametrize("bad", ["${", "${var.n", "${)}", "x ${1 +}", "%{ if true }x", "%{ endif }",
                                 '${"unterminated}'])
def test_yaml_syntax_errors(bad):
    with pytest.raises(ExprError):
        compile_value(bad, "s.yaml").evaluate(Scope(VARS))


# ---------------------------------------------------------------------------
# Errors: summaries, details, hints and positions
# ---------------------------------------------------------------------------

ERROR_CASES = [
    ("var.map.z", "Unsupported attribute", 'does not have an attribute named "z"', (7, 10)),
    ("foo.bar", 'Unknown name "foo"', "", (7, 3)),
    ("var.list.x", "Unsupported attribute", "list of objects", (7, 11)),
    ("var.list[9]", "Invalid index", "out of range", (7, 11)),
    ('var.map["q"]', "Invalid index", 'no key "q"', (7, 10)),
    ("var.none.x", "Attempt to get attribute from null value", "", (7, 11)),
    ("var.none[0]", "Attempt to index null value", "", (7, 11)),
    ('"a"[0]', "Invalid index", "does not have any indices", (7, 6)),
    ("lenght(var.list)", "Call to unknown function", 'named "lenght"', (7, 3)),
    ("upper({})", "Invalid function argument", '"string" parameter', (7, 9)),
    ("1 / 0", "Division by zero", "", (7, 3)),
    ("1 % 0", "Division by zero", "", (7, 3)),
    ('"a" + {}', "Invalid operand", "cannot add string and object", (7, 3)),
    ('"abc" * 2', "Invalid operand", "not a number", (7, 3)),
    ("!1", "Invalid operand", "bool is required", (7, 3)),
    ("1 ? 2 : 3", "Invalid condition", "bool is required", (7, 3)),
    ('"${var.map}"', None, None, None),  # a lone interpolation returns the map itself
    ('"x${var.map}"', "Invalid template interpolation value", "string required", (7, 7)),
    ('"x${null}"', "Invalid template interpolation value", "null", (7, 7)),
    ("{for x in [1, 1] : x => x}", "Duplicate object key", 'key "1"', (7, 22)),
    ("[for x in 5 : x]", "Iteration over non-iterable value", "", (7, 3)),
    ("[for x in null : x]", "Iteration over null value", "", (7, 3)),
    ("(1", "Invalid expression", "end of expression", (7, 5)),
    ("1 +", "Invalid expression", "", (7, 6)),
    ("a b", "Invalid expression", "", None),
    ("1\nb = 2", "Invalid expression", "Extra characters", (8, 1)),
    (r'"\q"', "Invalid escape sequence", '"q"', (7, 4)),
    ("max()", "Error in function call", 'Call to function "max" failed', (7, 3)),
    ("join()", "Not enough function arguments", '"separator"', (7, 3)),
    ("upper(1, 2)", "Too many function arguments", "", (7, 3)),
    ("try(var.a, var.b)", "Error in function call", "no expression succeeded", (7, 3)),
    ("can(1, 2)", "Too many function arguments", "", (7, 3)),
    ("max(1...)", "Invalid expanding argument value", "", (7, 7)),
    ("provider::p::f(1)", "Call to unknown function", "", (7, 3)),
    ("[for x in var.list : x.y]", "Unsupported attribute", "primitive", (7, 25)),
    ('jsondecode("{")', "Invalid function argument", "invalid JSON", (7, 14)),
    ("10 == var.map.q", "Unsupported attribute", "", (7, 16)),
]


@pytest.mark.parametrize("text,summary,detail,pos", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(text, summary, detail, pos):
    if summary is None:
        assert ev(text) == VARS["var"]["map"]
        return
    e = err(text)
    assert e.summary == summary
    assert detail in e.detail
    assert e.source.file == "main.hcl"
    if pos is not None:
        assert (e.source.line, e.source.column) == pos, str(e)


def test_error_hints_and_diagnostic():
    e = err("var.map.z")
    assert e.hint == "Available: x, y."
    assert "Valid names here:" in err("vra.env").hint and '"var"' in err("vra.env").hint
    assert '"length"' in err("lenght(var.list)").hint
    d = e.diagnostic()
    assert isinstance(d, Diagnostic) and d.severity == "error"
    assert d.summary == "Unsupported attribute" and d.source == e.source
    assert str(e).startswith("main.hcl:7:10: Unsupported attribute: ")
    assert e.diagnostic(address="endpoint.x").address == "endpoint.x"


def test_unknown_root_in_scope_lookup():
    with pytest.raises(ExprError) as info:
        Scope({"var": {}}).lookup("each")
    assert info.value.summary == 'Unknown name "each"'
    assert "var" in info.value.hint


@pytest.mark.parametrize("text,value", [("(" * 400 + "1" + ")" * 400, 1),
                                        (" + ".join(["1"] * 3000), 3000)],
                         ids=["400-parentheses", "3000-term-sum"])
def test_no_python_exception_escapes_deep_nesting(text, value):
    # Either the right value or the diagnostic for too deep an expression (where the
    # limit falls depends on the parser and the stack), never a RecursionError.
    try:
        result = parse_expression(text, "f").evaluate()
    except ExprError as e:
        assert e.summary == "Expression too complex", e
        assert e.source.file == "f"
    else:
        assert result == value


# ---------------------------------------------------------------------------
# Scope
# ---------------------------------------------------------------------------

def test_scope_child_shadows_and_is_cheap():
    root = Scope({"var": {"a": 1}, "each": {"key": "outer"}}, "/base")
    child = root.child(each={"key": "k"})
    assert child.lookup("each") == {"key": "k"}
    assert child.lookup("var") == {"a": 1}
    assert child.base_dir == root.base_dir
    assert root.child({"count": {"index": 2}}).lookup("count") == {"index": 2}
    assert child.names() == ["each", "var"]
    assert "var" in child and "nope" not in child
    assert dict(child.variables)["each"] == {"key": "k"}
    e = parse_expression('"${each.key}-${var.a}"', "f")
    assert [e.evaluate(root.child(each={"key": k})) for k in "xy"] == ["x-1", "y-1"]


# ---------------------------------------------------------------------------
# Functions: every one at least once
# ---------------------------------------------------------------------------

FUNCTION_CASES = [
    ('format("%s-%d-%.2f-%v-%q-%%-%t", "a", 3, 1.234, [1], "q", true)', 'a-3-1.23-[1]-"q"-%-true'),
    ('format("%5s|%-4d|%05d|%x|%[1]s", "ab", 7, 42, 255)', "   ab|7   |00042|ff|ab"),
    ('formatlist("%s=%d", ["a", "b"], [1, 2])', ["a=1", "b=2"]),
    ('formatlist("%s-x", ["a", "b"])', ["a-x", "b-x"]),
    ('join(", ", ["a", 1, true])', "a, 1, true"), ('join("", ["a"], ["b"])', "ab"),
    ('split(",", "a,b,,c")', ["a", "b", "", "c"]), ('lower("AbC")', "abc"), ('upper("aBc")', "ABC"),
    ('title("hello big-world")', "Hello Big-World"), ('trimspace("  x \\n")', "x"),
    ('trim("?!hello?!", "!?")', "hello"), ('trimprefix("helloworld", "hello")', "world"),
    ('trimsuffix("helloworld", "world")', "hello"),
    ('replace("a-b-c", "-", "+")', "a+b+c"), ('replace("a1b22", "/([0-9]+)/", "<$1>")', "a<1>b<22>"),
    ('substr("hello world", 1, 4)', "ello"), ('substr("hello", -3, -1)', "llo"),
    ('strrev("abc")', "cba"), ('regex("[a-z]+", "53abc12")', "abc"),
    ('regex("(\\\\d+)-(\\\\d+)", "x10-20")', ["10", "20"]),
    ('regex("(?P<k>\\\\w+)=(?P<v>\\\\w+)", "a=b")', {"k": "a", "v": "b"}),
    ('regexall("[0-9]", "a1b2")', ["1", "2"]),
    ('startswith("hello", "he")', True), ('endswith("hello", "he")', False),
    ('strcontains("hello", "ll")', True), ('chomp("x\\n\\n")', "x"), ('indent(2, "a\\nb")', "a\n  b"),
    ('urlencode("a b&c")', "a%20b%26c"),
    ("merge({a = 1, b = 2}, {b = 3}, null)", {"a": 1, "b": 3}),
    ('lookup({a = 1}, "a")', 1), ('lookup({a = 1}, "b", "d")', "d"),
    ("length([1, 2])", 2), ("length({a = 1})", 1), ('length("héllo")', 5),
    ("keys({b = 1, a = 2})", ["a", "b"]), ("values({b = 1, a = 2})", [2, 1]),
    ("range(3)", [0, 1, 2]), ("range(1, 4)", [1, 2, 3]), ("range(5, 0, -2)", [5, 3, 1]),
    ("range(0, 1, 0.25)", [0, 0.25, 0.5, 0.75]),
    ('toset(["b", "a", "b"])', ["a", "b"]), ("toset([3, 1, 3])", [1, 3]), ('toset([1, "a"])', ["1", "a"]),
    ("tolist([1, 2])", [1, 2]), ('tomap({a = 1, b = "x"})', {"a": "1", "b": "x"}),
    ("tostring(5)", "5"), ("tostring(true)", "true"), ("tostring(null)", None),
    ('tonumber("5")', 5), ('tonumber("1.5")', 1.5), ('tobool("true")', True), ("tobool(false)", False),
    ("concat([1], [2, 3], [])", [1, 2, 3]), ('contains(["a", "b"], "b")', True),
    ("contains([1, 2], \"1\")", False), ("distinct([1, 2, 1, 3])", [1, 2, 3]),
    ("flatten([[1, [2]], 3, []])", [1, 2, 3]), ('element(["a", "b"], 3)', "b"),
    ('index(["a", "b"], "b")', 1), ("slice([1, 2, 3, 4], 1, 3)", [2, 3]),
    ("reverse([1, 2, 3])", [3, 2, 1]), ('sort(["b", "a", "c"])', ["a", "b", "c"]),
    ("sort([10, 9])", ["10", "9"]),
    ('zipmap(["a", "b"], [1, 2])', {"a": 1, "b": 2}), ('coalesce(null, "", "x")', "x"),
    ('coalescelist([], [1])', [1]), ('compact(["a", "", null, "b"])', ["a", "b"]),
    ("min(3, 1, 2)", 1), ('max(1, "7")', 7), ("abs(-2)", 2), ("ceil(1.1)", 2), ("floor(1.9)", 1),
    ("pow(2, 10)", 1024), ("pow(4, 0.5)", 2), ("signum(-3)", -1), ("sum([1, 2, 3.5])", 6.5),
    ("one([])", None), ("one([4])", 4), ("alltrue([true, \"true\"])", True), ("anytrue([false])", False),
    ("setunion([\"b\"], [\"a\", \"b\"])", ["a", "b"]), ("setintersection([1, 2], [2, 3])", [2]),
    ("setsubtract([1, 2, 3], [2])", [1, 3]),
    ('transpose({a = ["1", "2"], b = ["2"]})', {"1": ["a"], "2": ["a", "b"]}),
    ('jsonencode({b = [1, "x<"], a = null})', '{"a":null,"b":[1,"x\\u003c"]}'),
    ('jsondecode("{\\"a\\": [1, 2.0, true]}")', {"a": [1, 2, True]}),
    ('yamlencode({a = 1})', "a: 1\n"), ('yamldecode("a: [1, x]")', {"a": [1, "x"]}),
    ('base64encode("hi")', "aGk="), ('base64decode("aGk=")', "hi"),
    ('sha256("abc")', hashlib.sha256(b"abc").hexdigest()), ('md5("abc")', hashlib.md5(b"abc").hexdigest()),
    ('uuidv5("dns", "example.com")', "cfbff0d1-9375-5685-968c-48ce8b15ae17"),
    ('basename("/a/b.txt")', "b.txt"), ('dirname("/a/b.txt")', "/a"),
    ("sensitive(1)", Sensitive(1)), ("nonsensitive(sensitive(1))", 1),
    ("try(1)", 1), ("can(1)", True),
]


@pytest.mark.parametrize("text,expected", FUNCTION_CASES, ids=[c[0] for c in FUNCTION_CASES])
def test_functions(text, expected):
    assert ev(text) == expected


def test_every_function_is_exercised():
    tested = " ".join(t for t, _ in FUNCTION_CASES) + " file filebase64 filesha256 " \
        "fileexists templatefile"
    missing = [name for name in FUNCTIONS if f"{name}(" not in tested and name not in tested.split()]
    assert missing == []


@pytest.mark.parametrize("text,detail", [
    ('element([], 0)', "empty list"), ('lookup({}, "k")', 'find key "k"'),
    ('regex("x", "abc")', "did not match"), ('tonumber("x")', "number is required"),
    ('base64decode("!!")', "invalid base64"), ('format("%d", "x")', "number is required"),
    ('format("%s %s", "a")', "not enough arguments"), ('format("%s", "a", "b")', "too many"),
    ('zipmap(["a"], [])', "does not match"), ("range(1, 2, 0)", "zero"),
    ('substr("ab", 5, 1)', "beyond"), ("sum([])", "empty"), ('coalesce(null, "")', "no non-null"),
])
def test_function_errors(text, detail):
    e = err(text)
    assert detail in e.detail, e.detail
    assert e.summary in ("Invalid function argument", "Error in function call")


def test_file_functions(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "bin").write_bytes(b"\xff\x00")
    scope = Scope({"var": {"name": "x"}}, tmp_path)
    assert ev('file("a.txt")', scope) == "hello\n"
    assert ev(f'file("{tmp_path}/a.txt")', scope) == "hello\n"
    assert ev('filesha256("a.txt")', scope) == hashlib.sha256(b"hello\n").hexdigest()
    assert ev('filebase64("bin")', scope) == "/wA="
    assert ev('fileexists("a.txt")', scope) is True
    assert ev('fileexists("nope")', scope) is False
    assert "no file exists" in err('file("nope")', scope).detail
    assert "UTF-8" in err('file("bin")', scope).detail


def test_templatefile(tmp_path):
    (tmp_path / "t.j2").write_text("Hi {{ name }}{% for i in items %} {{ i }}{% endfor %}\n")
    scope = Scope({"var": {"s": Sensitive("pw")}}, tmp_path)
    assert ev('templatefile("t.j2", {name = "bob", items = [1, 2]})', scope) == "Hi bob 1 2\n"
    assert ev('templatefile("t.j2", {name = var.s, items = []})', scope) == Sensitive("Hi pw\n")
    assert ev('templatefile("t.j2", {name = endpoint.e.url, items = []})',
              Scope({**VARS}, tmp_path)) is UNKNOWN
    e = err('templatefile("t.j2", {items = []})', scope)  # StrictUndefined
    assert e.summary == "Error in function call" and "name" in e.detail


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ x.__class__.__base__ }}",
])
def test_templatefile_sandbox(tmp_path, template):
    (tmp_path / "evil.j2").write_text(template)
    scope = Scope({}, tmp_path)
    try:
        out = ev('templatefile("evil.j2", {x = "a"})', scope)
    except ExprError as e:
        assert e.summary == "Error in function call"
    else:  # rendering harmlessly is acceptable; leaking Python internals is not
        assert "class" not in out and "module" not in out and "subclasses" not in out


# ---------------------------------------------------------------------------
# Type constraints
# ---------------------------------------------------------------------------

TYPE_TEXT = [
    "string", "number", "bool", "any", "list(string)", "set(number)", "map(bool)",
    "tuple([string, number])", "object({a = string, b = optional(number, 3)})",
    "map(object({n = optional(list(string))}))",
]


@pytest.mark.parametrize("text", TYPE_TEXT)
def test_type_roundtrip(text):
    assert str(parse_type(text)) == text


def test_type_from_hcl_tree_and_yaml_string():
    tree = hcl2.parses_to_tree("type = list(number)\nt2 = \"string\"\n")
    attrs = [c for c in tree.children[0].children if getattr(c, "data", "") == "attribute"]
    assert str(parse_type(attrs[0].children[-1], "v.hcl")) == "list(number)"
    assert str(parse_type(compile_hcl(attrs[1], "v.hcl"))) == "string"
    assert str(parse_type(compile_value("map(string)", "v.yaml"))) == "map(string)"


CONVERT_CASES = [
    ("number", "5", 5), ("number", 2.0, 2), ("string", 5, "5"), ("string", True, "true"),
    ("bool", "true", True), ("bool", "false", False), ("list(number)", ["1", 2], [1, 2]),
    ("set(string)", ["b", "a", "b"], ["a", "b"]), ("map(number)", {"a": "1"}, {"a": 1}),
    ("tuple([string, bool])", [1, "true"], ["1", True]),
    ("object({a = string, b = optional(number, 3), c = optional(string)})", {"a": 1, "z": 0},
     {"a": "1", "b": 3, "c": None}),
    ("any", {"x": [1]}, {"x": [1]}), ("number", None, None), ("number", UNKNOWN, UNKNOWN),
    ("list(number)", [UNKNOWN, "2"], [UNKNOWN, 2]), ("number", Sensitive("4"), Sensitive(4)),
]


@pytest.mark.parametrize("text,value,expected", CONVERT_CASES)
def test_type_convert(text, value, expected):
    assert parse_type(text).convert(value) == expected


@pytest.mark.parametrize("text,value,detail", [
    ("number", "abc", 'A number is required, got string "abc".'),
    ("number", True, "A number is required, got bool."),
    ("bool", 1, "A bool is required, got number."),
    ("string", [1], "A string is required, got list."),
    ("list(number)", [1, "x"], 'At [1]: a number is required, got string "x".'),
    ("map(object({n = number}))", {"k": {"n": "z"}}, "At k.n: a number is required"),
    ("object({a = string})", {}, 'Attribute "a" is required.'),
    ("tuple([string])", [1, 2], "A tuple of 1 element is required, got a list of 2."),
    ("list(string)", "x", "A list of string is required"),
])
def test_type_convert_errors(text, value, detail):
    with pytest.raises(ExprError) as info:
        parse_type(text).convert(value, SourceRange("v.hcl", 2, 3))
    assert info.value.summary == "Invalid value"
    assert info.value.detail.startswith(detail)
    assert info.value.source == SourceRange("v.hcl", 2, 3)
    assert text.replace(" ", "") in info.value.hint.replace(" ", "")


@pytest.mark.parametrize("text,detail", [
    ("foo", 'The keyword "foo"'), ("list(string, number)", "exactly one"),
    ("optional(string)", "only allowed"), ("tuple(string)", "list of element types"),
    ("object(string)", "map of attribute types"), ("1 + 2", "A type is written"),
    ("frob(string)", "not a type constructor"),
])
def test_type_parse_errors(text, detail):
    with pytest.raises(ExprError) as info:
        parse_type(text, "v.hcl", 3, 10)
    assert info.value.summary == "Invalid type specification"
    assert detail in info.value.detail
    assert info.value.source.line == 3


def test_type_error_position():
    with pytest.raises(ExprError) as info:
        parse_type("list(foo)", "v.hcl", 3, 10)
    assert info.value.source == SourceRange("v.hcl", 3, 15)


# ---------------------------------------------------------------------------
# Public surface
# ---------------------------------------------------------------------------

def test_public_names():
    for name in expr_pkg.__all__:
        assert hasattr(expr_pkg, name), name
    assert {"Expr", "ExprError", "Scope", "Reference", "compile_hcl", "parse_expression",
            "compile_value", "parse_type", "FUNCTIONS", "UNKNOWN", "Sensitive"} <= set(expr_pkg.__all__)


def test_results_are_fresh_containers():
    e = parse_expression("[1, 2]", "f")
    first = e.evaluate()
    first.append(3)
    assert e.evaluate() == [1, 2]
    assert isinstance(e, Expr) and "[1, 2]" in e.source_text()


# ---------------------------------------------------------------------------
# Robustness: random input raises ExprError or nothing
# ---------------------------------------------------------------------------

_ATOMS = ["var", "local", ".", "env", "list", "map", "x", "[", "]", "(", ")", "{", "}", "0", "1", "2.5",
          "-", "+", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||", "!", "?", ":", ",", "=", "=>",
          '"', "${", "%{", "for", "in", "if", "endif", "...", "[*]", ".*", "null", "true", "\\",
          "upper", "length", "try", "can", "format", "file", "range", "each", "key", " ", "\n",
          "<<EOT\n", "EOT\n", "#", "'", "é", "\t", "~", "a-b", "0.0"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=14))
def test_random_expressions_only_raise_expr_error(atoms):
    text = "".join(atoms)
    scope = Scope({**VARS, "each": {"key": "k"}}, "/nonexistent")
    try:
        parse_expression(text, "fuzz.hcl").evaluate(scope)
    except ExprError as e:
        assert e.summary and isinstance(e.source, SourceRange)
    try:
        compile_value(text, "fuzz.yaml").evaluate(scope)
    except ExprError:
        pass
    try:
        parse_type(text)
    except ExprError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8))
def test_functions_never_crash_on_odd_values(value):
    scope = Scope({"v": {"x": value}})
    for name in ["length", "keys", "values", "upper", "join", "flatten", "tostring", "tonumber",
                 "jsonencode", "toset", "distinct", "sort", "merge", "concat", "sum", "max"]:
        try:
            parse_expression(f"{name}(v.x)", "f").evaluate(scope)
        except ExprError:
            pass
    # every such value is plain JSON data: jsonencode never fails on it and is lossless
    encoded = parse_expression("jsonencode(v.x)", "f").evaluate(scope)
    assert json.loads(encoded) == value
    assert parse_expression("jsondecode(jsonencode(v.x))", "f").evaluate(scope) == value


# ------------------------------------------------------------- bare references in YAML/JSON

@pytest.mark.parametrize("text", [
    "${dataset.d1}", "${ var.epochs }", "${dataset.d1.uri[0]}", "${each.value}",
    "${module.m.output}", "${model.m-1.version}", "${a[12].b_c[3]}", "${var}",
])
def test_a_bare_reference_compiles_as_the_hcl_parse_does(text, monkeypatch):
    from mlform.expr import compile as compile_module

    fast = compile_value(text, "f.json", 3, 7)
    monkeypatch.setattr(compile_module, "_bare_reference", lambda *a: None)
    slow = compile_value(text, "f.json", 3, 7)
    assert fast.references == slow.references
    assert fast.static_traversal() == slow.static_traversal()
    assert fast.constant == slow.constant
    for scope in (Scope({"dataset": {"d1": {"uri": ["u"]}}, "var": {"epochs": 3}}),
                  Scope({"dataset": {"d2": {}}, "var": {}}), Scope({})):
        def outcome(expr):
            try:
                return "value", expr.evaluate(scope)
            except ExprError as exc:
                return "error", exc.diagnostic()
        assert outcome(fast) == outcome(slow)


@pytest.mark.parametrize("text", ["${true}", "${a.0}", "${a[b]}", "${a.*}", "${a}x",
                                  "x${a}", "${a + 1}", "${a[\"k\"]}"])
def test_other_templates_take_the_hcl_parse(text, monkeypatch):
    from mlform.expr import compile as compile_module

    taken = []
    original = compile_module._bare_reference
    monkeypatch.setattr(compile_module, "_bare_reference",
                        lambda *a: taken.append(original(*a)) or taken[-1])
    compile_value(text, "f.json")
    assert taken == [None]
