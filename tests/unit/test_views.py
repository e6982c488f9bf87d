"""Renderers: exact text for small plans, JSON round-trip, no secret leaks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

import mlform.views as views
from mlform.diagnostics import SourceRange, error, warning
from mlform.expr.values import UNKNOWN
from mlform.plan.model import Action, Change, OutputChange, Plan
from mlform.views import (
    ApplySummary, plan_from_json, plan_to_json, render_apply_summary, render_diagnostics,
    render_drift, render_drift_junit, render_plan, render_plan_markdown,
)
from mlform.plan.codec import sensitive_paths, sensitive_tree

SECRET = "hunter2-SECRET-value"


def change(name: str, action: Action, before=None, after=None, **kw) -> Change:
    return Change(f"memory_object.{name}", "memory_object", name, "memory", action,
                  before, after, **kw)


def every_action_plan() -> Plan:
    return Plan(
        changes=(
            change("a", Action.CREATE, None, {"name": "a", "id": UNKNOWN, "size": 1}),
            change("b", Action.UPDATE, {"name": "b", "size": 1, "x": 1},
                   {"name": "b", "size": 2, "x": 1}),
            change("c", Action.DELETE_CREATE, {"zone": "a", "id": "i1"},
                   {"zone": "b", "id": UNKNOWN}, replace_paths=(("zone",),)),
            change("d", Action.CREATE_DELETE, {"zone": "a"}, {"zone": "b"},
                   replace_paths=(("zone",),)),
            change("e", Action.DELETE, {"name": "e"}, None),
            Change("data.memory_lookup.f", "memory_lookup", "f", "memory", Action.READ,
                   None, {"value": UNKNOWN}),
            change("g", Action.NOOP, {"name": "g"}, {"name": "g"}),
        ),
        output_changes=(OutputChange("endpoint", Action.CREATE, None, UNKNOWN),),
    )


def secret_plan() -> Plan:
    """A secret at sensitive paths on every side and in every section."""
    return Plan(
        changes=(
            change("a", Action.CREATE, None,
                   {"name": "a", "password": SECRET, "env": [{"k": SECRET}, {"k": "ok"}]},
                   after_sensitive=(("env", 0, "k"), ("password",))),
            change("b", Action.UPDATE, {"token": SECRET, "size": 1},
                   {"token": SECRET + "2", "size": 2},
                   before_sensitive=(("token",),), after_sensitive=(("token",),)),
            change("c", Action.DELETE_CREATE, {"creds": {"key": SECRET}}, {"creds": {"key": SECRET}},
                   before_sensitive=(("creds",),), after_sensitive=(("creds",),),
                   replace_paths=(("creds", "key"),)),
            change("d", Action.DELETE, {"password": SECRET}, None,
                   before_sensitive=(("password",),)),
        ),
        drift=(change("b", Action.UPDATE, {"token": "x", "size": 1},
                      {"token": SECRET, "size": 1},
                      before_sensitive=(("token",),), after_sensitive=(("token",),)),),
        output_changes=(OutputChange("pw", Action.UPDATE, SECRET, SECRET + "3", True),),
        refreshed={"memory_object.b": {"kind": "memory_object"}},
    )


# ---------------------------------------------------------------------------
# human


def test_create_exact() -> None:
    plan = Plan(changes=(change("a", Action.CREATE, None,
                                {"name": "a", "id": UNKNOWN, "tags": {"team": "ml"},
                                 "gone": None}, reasons=("new in configuration",)),))
    assert render_plan(plan, color=False) == """\
Resource actions are indicated with the following symbols:
  + create

mlform will perform the following actions:

  # memory_object.a will be created
  # (new in configuration)
  + memory_object "a" {
      + id   = (known after apply)
      + name = "a"
      + tags = {
          + team = "ml"
        }
    }

Plan: 1 to add, 0 to change, 0 to destroy.
"""


def test_update_and_replace_exact() -> None:
    plan = Plan(changes=(
        change("b", Action.UPDATE, {"name": "b", "size": 1, "x": 1, "y": [1]},
               {"name": "b", "size": 2, "x": 1, "y": [1]}),
        change("c", Action.DELETE_CREATE, {"zone": "a", "id": "i1", "n": 1},
               {"zone": "b", "id": UNKNOWN, "n": 1}, replace_paths=(("zone",),),
               reasons=("zone cannot be updated in place",)),
    ))
    assert render_plan(plan, color=False) == """\
Resource actions are indicated with the following symbols:
  ~ update in-place
-/+ destroy and then create replacement

mlform will perform the following actions:

  # memory_object.b will be updated in-place
  ~ memory_object "b" {
      ~ size = 1 -> 2
        # (3 unchanged attributes hidden)
    }

  # memory_object.c must be replaced
  # (zone cannot be updated in place)
-/+ memory_object "c" {
      ~ id   = "i1" -> (known after apply)
      ~ zone = "a" -> "b" # forces replacement
        # (1 unchanged attribute hidden)
    }

Plan: 1 to add, 1 to change, 1 to destroy.
"""


def test_delete_and_outputs_exact() -> None:
    plan = Plan(changes=(change("e", Action.DELETE, {"name": "e", "n": None}, None),),
                output_changes=(OutputChange("url", Action.UPDATE, "a", "b"),
                                OutputChange("pw", Action.CREATE, None, "s", True),
                                OutputChange("same", Action.NOOP, 1, 1)))
    assert render_plan(plan, color=False) == """\
Resource actions are indicated with the following symbols:
  - destroy

mlform will perform the following actions:

  # memory_object.e will be destroyed
  - memory_object "e" {
      - name = "e" -> null
    }

Plan: 0 to add, 0 to change, 1 to destroy.

Changes to Outputs:
  ~ url = "a" -> "b"
  + pw  = (sensitive value)
"""


def test_every_action_has_headline_and_symbol() -> None:
    text = render_plan(every_action_plan(), color=False)
    for headline in ("memory_object.a will be created", "memory_object.b will be updated in-place",
                     "memory_object.c must be replaced", "memory_object.d must be replaced",
                     "memory_object.e will be destroyed",
                     "data.memory_lookup.f will be read during apply"):
        assert f"  # {headline}\n" in text
    for symbol_line in ('  + memory_object "a" {', '  ~ memory_object "b" {',
                        '-/+ memory_object "c" {', '+/- memory_object "d" {',
                        '  - memory_object "e" {', ' <= memory_lookup "f" {'):
        assert symbol_line in text
    assert "memory_object.g" not in text        # no-op is not shown
    assert "Plan: 3 to add, 1 to change, 3 to destroy." in text
    assert "  + endpoint = (known after apply)" in text


def test_no_changes_messages() -> None:
    assert render_plan(Plan(changes=()), color=False) == (
        "No changes. Your infrastructure matches the configuration.\n")
    assert render_plan(Plan(changes=(), mode="refresh-only"), color=False) == (
        "No changes. Your infrastructure still matches the configuration.\n")
    assert render_plan(Plan(changes=(), mode="destroy"), color=False) == (
        "No changes. No objects need to be destroyed.\n")


def test_drift_exact_and_refresh_only_note() -> None:
    drifted = change("b", Action.UPDATE, {"size": 1, "k": 2}, {"size": 5, "k": 2})
    plan = Plan(changes=(), drift=(drifted,), mode="refresh-only")
    expected_drift = """\
Note: Objects have changed outside of mlform

mlform detected the following changes made outside of mlform since the last "mlform apply":

  # memory_object.b has changed
  ~ memory_object "b" {
      ~ size = 1 -> 5
        # (1 unchanged attribute hidden)
    }
"""
    assert render_drift(plan) == expected_drift
    text = render_plan(plan, color=False)
    assert text.startswith(expected_drift)
    assert "This is a refresh-only plan" in text
    assert "Plan:" not in text
    assert render_drift(Plan(changes=())) == (
        "No changes. Your infrastructure still matches the configuration.\n")


def test_color_adds_ansi_only_when_asked() -> None:
    plan = every_action_plan()
    assert "\x1b[" not in render_plan(plan, color=False)
    colored = render_plan(plan, color=True)
    assert "\x1b[" in colored
    assert "memory_object.a will be created" in colored


def test_diagnostics_exact() -> None:
    diags = [
        error("Unknown attribute", "memory_object has no attribute \"sise\".\nCheck the schema.",
              source=SourceRange("main.hcl", 3, 5), hint='did you mean "size"?'),
        warning("Deprecated kind", address="memory_object.a"),
    ]
    assert render_diagnostics(diags, color=False) == """\
error: Unknown attribute
  at main.hcl:3:5
  memory_object has no attribute "sise".
  Check the schema.
  hint: did you mean "size"?

warning: Deprecated kind
  with memory_object.a
"""


def test_apply_summary() -> None:
    ok = ApplySummary(added=1, outputs={"url": ("http://x", False), "pw": (SECRET, True)})
    assert render_apply_summary(ok) == """\
Apply complete! Resources: 1 added, 0 changed, 0 destroyed.

Outputs:

pw  = (sensitive value)
url = "http://x"
"""
    failed = ApplySummary(added=1, failed=[("memory_object.b", "quota exceeded"),
                                           ("memory_object.b", "quota exceeded")])
    assert render_apply_summary(failed) == """\
Apply failed! Resources: 1 added, 0 changed, 0 destroyed.

error: memory_object.b: quota exceeded
"""


# ---------------------------------------------------------------------------
# secrets


def all_renderings(plan: Plan) -> dict[str, str]:
    return {
        "human": render_plan(plan, color=False),
        "human-color": render_plan(plan, color=True),
        "drift": render_drift(plan),
        "markdown": render_plan_markdown(plan),
        "junit": render_drift_junit(plan),
        "json": json.dumps(plan_to_json(plan)),
        "planfile": json.dumps(plan_to_json(plan, include_internal=True)),
    }


def test_secret_never_rendered() -> None:
    plan = secret_plan()
    for name, text in all_renderings(plan).items():
        assert SECRET not in text, name
    human = render_plan(plan, color=False)
    assert '+ password = (sensitive value)' in human
    assert '+ env      = [{"k": (sensitive value)}, {"k": "ok"}]' in human
    assert "~ token = (sensitive value) -> (sensitive value)" in human
    assert "~ pw = (sensitive value) -> (sensitive value)" in human


def test_unchanged_secret_is_hidden_changed_secret_is_shown_redacted() -> None:
    same = change("s", Action.UPDATE, {"t": SECRET, "n": 1}, {"t": SECRET, "n": 2},
                  before_sensitive=(("t",),), after_sensitive=(("t",),))
    text = render_plan(Plan(changes=(same,)), color=False)
    assert "(1 unchanged attribute hidden)" in text and "sensitive" not in text


def test_json_nulls_sensitive_values_and_marks_them() -> None:
    doc = plan_to_json(secret_plan())
    a = doc["resource_changes"][0]["change"]
    assert a["after"]["password"] is None
    assert a["after"]["env"] == [{"k": None}, {"k": "ok"}]
    assert a["after_sensitive"] == {"env": [{"k": True}], "password": True}
    assert a["before_sensitive"] is False
    assert doc["output_changes"]["pw"]["after"] is None
    assert doc["output_changes"]["pw"]["after_sensitive"] is True


# ---------------------------------------------------------------------------
# JSON


def test_json_terraform_shape() -> None:
    doc = plan_to_json(every_action_plan())
    assert doc["format_version"] == "1.0"
    assert [rc["change"]["actions"] for rc in doc["resource_changes"]] == [
        ["create"], ["update"], ["delete", "create"], ["create", "delete"], ["delete"],
        ["read"], ["no-op"]]
    first = doc["resource_changes"][0]
    assert first["type"] == first["kind"] == "memory_object"
    assert first["provider_name"] == "memory"
    assert "module_address" not in first and "index" not in first
    assert "action_reason" not in first
    assert first["change"]["after"] == {"name": "a", "id": None, "size": 1}
    assert first["change"]["after_unknown"] == {"id": True}
    assert doc["resource_changes"][2]["change"]["replace_paths"] == [["zone"]]
    assert doc["summary"] == {"add": 3, "change": 1, "destroy": 3}
    assert doc["output_changes"]["endpoint"]["after_unknown"] is True
    for internal in ("variables", "config_digest", "state_serial", "refreshed"):
        assert internal not in doc
    assert "dependencies" not in first


def test_json_is_deterministic() -> None:
    one = json.dumps(plan_to_json(every_action_plan(), include_internal=True))
    two = json.dumps(plan_to_json(every_action_plan(), include_internal=True))
    assert one == two
    assert render_plan_markdown(every_action_plan()) == render_plan_markdown(every_action_plan())


def full_plan() -> Plan:
    return Plan(
        changes=(
            Change("module.m.memory_object.a[\"x\"]", "memory_object", "a", "memory",
                   Action.CREATE, None,
                   {"name": "a", "id": UNKNOWN, "nested": {"k": [1, UNKNOWN]}},
                   module="module.m", index_key="x", action_reason="new",
                   reasons=("new in configuration",), dependencies=("memory_object.b",),
                   changed_paths=(("name",), ("nested", "k", 1))),
            change("b", Action.DELETE_CREATE, {"zone": "a"}, {"zone": "b"},
                   replace_paths=(("zone",),), prior_id="i-1", index_key=0),
            change("c", Action.DELETE, {"name": "c"}, None, prior_id="i-2"),
        ),
        drift=(change("b", Action.UPDATE, {"zone": "a", "n": 1}, {"zone": "a", "n": 2}),),
        output_changes=(OutputChange("a", Action.UPDATE, [1], [1, 2]),
                        OutputChange("b", Action.CREATE, None, UNKNOWN)),
        diagnostics=(warning("w", "d", source=SourceRange("main.hcl", 1, 2), hint="h",
                             address="memory_object.b"), error("e")),
        mode="normal", env="prod", targets=("memory_object.a",), replace=("memory_object.b",),
        state_lineage="lin-1", state_serial=7, config_digest="sha256:abc",
        variables={"n": 3, "names": ["a", "b"]}, sensitive_variables={"pw": "salted:xyz"},
        refreshed={"memory_object.b": {"kind": "memory_object", "attributes": {"zone": "a"}}},
    )


def test_json_round_trip() -> None:
    plan = full_plan()
    doc = plan_to_json(plan, include_internal=True)
    assert plan_from_json(json.loads(json.dumps(doc))) == plan
    assert doc["resource_changes"][0]["dependencies"] == ["memory_object.b"]
    assert doc["resource_changes"][0]["module_address"] == "module.m"
    assert doc["resource_changes"][1]["index"] == 0


def test_json_round_trip_without_internal_keeps_public_parts() -> None:
    plan = full_plan()
    back = plan_from_json(plan_to_json(plan))
    assert back.changes[0].after == plan.changes[0].after
    assert back.changes[0].dependencies == ()
    assert back.state_serial == 0 and back.variables == {}


def test_json_round_trip_sensitive_keeps_paths_drops_values() -> None:
    plan = secret_plan()
    back = plan_from_json(plan_to_json(plan, include_internal=True))
    a = back.changes[0]
    assert a.after_sensitive == (("env", 0, "k"), ("password",))
    assert a.after["password"] is None and a.after["name"] == "a"
    assert back.output_changes[0].sensitive and back.output_changes[0].after is None


@pytest.mark.parametrize("paths, tree", [
    ((), False),
    (((),), True),
    ((("a",),), {"a": True}),
    ((("a", 1), ("b", "c")), {"a": [False, True], "b": {"c": True}}),
])
def test_sensitive_tree(paths, tree) -> None:
    assert sensitive_tree(paths) == tree
    assert sensitive_paths(tree) == paths


# ---------------------------------------------------------------------------
# markdown


def test_markdown() -> None:
    md = render_plan_markdown(every_action_plan())
    assert md.startswith("### mlform plan (env `default`): 3 to add, 1 to change, 3 to destroy\n")
    assert "| Action | Resource | Reason |" in md
    assert "| replace | `memory_object.c` | forces replacement: zone |" in md
    assert "| destroy | `memory_object.e` |  |" in md
    assert "<details><summary>memory_object.a (create)</summary>" in md
    assert "```diff\n+   memory_object \"a\" {\n+       id   = (known after apply)\n" in md
    assert "~       size = 1 -> 2" in md
    assert "memory_object.g" not in md


def test_markdown_no_changes_drift_and_diagnostics() -> None:
    plan = Plan(changes=(), drift=(change("b", Action.UPDATE, {"n": 1}, {"n": 2}),),
                diagnostics=(warning("Deprecated", "use y"),))
    md = render_plan_markdown(plan)
    assert "No changes. Your infrastructure matches the configuration." in md
    assert "#### Objects changed outside of mlform" in md
    assert "<details><summary>memory_object.b (drifted)</summary>" in md
    assert "- **warning**: Deprecated" in md


def test_markdown_fence_outgrows_backticks_in_values() -> None:
    plan = Plan(changes=(change("a", Action.CREATE, None, {"doc": "```x```"}),))
    assert "````diff" in render_plan_markdown(plan)


# ---------------------------------------------------------------------------
# JUnit


def test_junit_counts_failures() -> None:
    plan = Plan(
        changes=(),
        drift=(change("b", Action.UPDATE, {"n": 1, "m": 1, "k": 0}, {"n": 2, "m": 3, "k": 0}),
               change("c", Action.DELETE, {"n": 1}, None)),
        refreshed={"memory_object.a": {"kind": "memory_object"},
                   "memory_object.b": {"kind": "memory_object"},
                   "module.x.memory_bucket.d": {}},
    )
    root = ET.fromstring(render_drift_junit(plan))
    assert root.tag == "testsuite" and root.get("name") == "mlform drift"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "memory_object.a", "memory_object.b", "memory_object.c", "module.x.memory_bucket.d"]
    assert cases[3].get("classname") == "memory_bucket"
    failures = root.findall("testcase/failure")
    assert len(failures) == 2 == int(root.get("failures"))
    assert failures[0].get("message") == "drifted: m, n"
    assert "~ n = 1 -> 2" in failures[0].text


# ---------------------------------------------------------------------------
# API


def test_public_names() -> None:
    assert sorted(views.__all__) == [
        "ApplySummary", "plan_from_json", "plan_to_json", "render_apply_summary",
        "render_diagnostics", "render_drift", "render_drift_junit", "render_plan",
        "render_plan_markdown"]
    for name in views.__all__:
        assert getattr(views, name)
