"""The pure diff: every action decided from values alone, no provider."""

import pytest

from mlform.expr import UNKNOWN
from mlform.plan.diff import DiffInput, apply_ignore_changes, changed_paths, diff
from mlform.plan.model import Action

PRIOR = {"replicas": 1, "settings": {"region": "eu", "size": "s"}, "url": "http://x"}


def run(planned, **kw):
    base = dict(prior=PRIOR, prior_tainted=False, planned=planned,
                replace_paths=(("settings", "region"),), computed=("url",))
    base.update(kw)
    return diff(DiffInput(**base))


def test_no_prior_is_create():
    assert run(PRIOR, prior=None).action is Action.CREATE


def test_equal_is_noop():
    r = run(dict(PRIOR))
    assert r.action is Action.NOOP and r.changed_paths == ()


def test_changed_attribute_is_update_with_path():
    r = run({**PRIOR, "replicas": 2})
    assert r.action is Action.UPDATE
    assert r.changed_paths == (("replicas",),)


def test_nested_change_names_the_leaf():
    r = run({**PRIOR, "settings": {"region": "eu", "size": "m"}})
    assert r.action is Action.UPDATE and r.changed_paths == (("settings", "size"),)


def test_replace_path_forces_replacement():
    r = run({**PRIOR, "settings": {"region": "us", "size": "s"}})
    assert r.action is Action.DELETE_CREATE
    assert r.replace_paths == (("settings", "region"),)
    assert r.action_reason == "replace_because_cannot_update"


def test_create_before_destroy_replacement():
    r = run({**PRIOR, "settings": {"region": "us", "size": "s"}}, create_before_destroy=True)
    assert r.action is Action.CREATE_DELETE


def test_unknown_differs_from_any_prior_value():
    r = run({**PRIOR, "url": UNKNOWN})
    assert r.action is Action.UPDATE and r.changed_paths == (("url",),)


def test_tainted_is_replaced_even_without_changes():
    r = run(dict(PRIOR), prior_tainted=True)
    assert r.action is Action.DELETE_CREATE and r.action_reason == "replace_because_tainted"


@pytest.mark.parametrize("reason", ["replace_by_request", "replace_by_triggers"])
def test_forced_replacement(reason):
    assert run(dict(PRIOR), force_replace=reason).action_reason == reason


def test_ignore_changes_keeps_prior_value():
    r = run({**PRIOR, "replicas": 9}, ignore_changes=(("replicas",),))
    assert r.action is Action.NOOP and r.after["replicas"] == 1


def test_ignore_all_keeps_everything_but_computed():
    out = apply_ignore_changes(PRIOR, {"replicas": 3, "settings": {}, "url": "new"}, "all", ("url",))
    assert out == {"replicas": 1, "settings": PRIOR["settings"], "url": "new"}


def test_changed_paths_of_lists_and_added_keys():
    assert changed_paths({"a": [1, 2]}, {"a": [1, 3], "b": 1}) == (("a", 1), ("b",))
