"""The fast paths a big apply takes through the plan's JSON, its audit digest and the
CLI's text, each held equal to the slower definition it replaces.

* `codec._known_and_unknown` is `(known_part(plain(v)), unknown_tree(plain(v)))` in one
  walk, for any value (UNKNOWN, Sensitive, tuples, read-only mappings, nesting);
* the audit digest hashes the same bytes as the sorted plan JSON would give;
* the human plan and the progress lines reach stdout as rendered: no markup parse, so a
  value that looks like rich markup or an emoji code is shown as it is.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from mlform import audit
from mlform.cli import commands
from mlform.expr import UNKNOWN, Sensitive
from mlform.expr.values import known_part, unknown_tree
from mlform.plan import codec
from mlform.plan.model import Action, Change, OutputChange, Plan
from mlform.providers.base import ProgressEvent

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                   st.text(max_size=4), st.just(UNKNOWN),
                   st.builds(Sensitive, st.text(max_size=3)))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(MappingProxyType)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_known_and_unknown_is_known_part_and_unknown_tree_of_the_plain_value(value):
    plain = codec.plain(value)
    assert codec._known_and_unknown(value) == (known_part(plain), unknown_tree(plain))


def _plan() -> Plan:
    after = {"name": "n", "token": "s3cret", "uri": UNKNOWN,
             "nested": {"b": [1, UNKNOWN], "a": ("x", {"z": None})}, "3": "key"}
    changes = (
        Change('dataset.d["a"]', "dataset", "d", "memory", Action.CREATE, None, after,
               index_key="a", after_sensitive=(("token",),)),
        Change("model.m", "model", "m", "memory", Action.UPDATE,
               {"stage": "dev", "secret": "old"}, {"stage": "prod", "secret": "new"},
               before_sensitive=(("secret",),), after_sensitive=(("secret",),),
               replace_paths=(("stage",),)),
        Change("endpoint.e", "endpoint", "e", "memory", Action.DELETE,
                {"url": "u", "list": [UNKNOWN]}, None),
    )
    return Plan(changes=changes, output_changes=(
        OutputChange("url", Action.CREATE, None, UNKNOWN),
        OutputChange("key", Action.UPDATE, "a", "b", sensitive=True)),
        state_lineage="L", state_serial=3, config_digest="c")


def test_plan_document_sorted_is_plan_to_json():
    plan = _plan()
    sorted_doc = codec._sorted_keys(codec.plan_document(plan, include_internal=True))
    assert json.dumps(sorted_doc, default=str) == \
        json.dumps(codec.plan_to_json(plan, include_internal=True), default=str)


def test_the_audit_digest_hashes_the_sorted_plan_json():
    plan = _plan()
    doc = codec.plan_to_json(plan)
    body = {key: doc.get(key) for key in ("mode", "env", "resource_changes",
                                          "resource_drift", "output_changes")}
    body.update(state_lineage="L", state_serial=3, config_digest="c")
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert audit.plan_digest(plan) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert b"s3cret" not in data and b"new" not in data


def test_the_plan_and_progress_reach_stdout_as_rendered(capsys, monkeypatch):
    monkeypatch.setattr(commands.out, "color", lambda: False)
    looks_like_markup = '[bold]x[/bold] :smile: \\[y]'
    plan = Plan(changes=(Change("dataset.d", "dataset", "d", "memory", Action.CREATE, None,
                                {"source": looks_like_markup}),))
    from mlform.views import render_plan
    commands._render_plan(plan, "human")
    commands._progress(ProgressEvent('dataset.d["[red]k"]', "Creating..."))
    shown = capsys.readouterr().out
    assert shown == render_plan(plan) + "\n" + 'dataset.d["[red]k"]: Creating...\n'
    assert json.dumps(looks_like_markup) in shown
