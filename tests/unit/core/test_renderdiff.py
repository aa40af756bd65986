"""engine.core.renderdiff: two renders compared object by object and field by field."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.normalize import SecretMasker
from engine.core.objects import REVISION_ANNOTATION, ObjectKey
from engine.core.renderdiff import Change, FieldChange, diff_renders, field_changes

MASKER = SecretMasker(b"renderdiff-test-key-0123456789ab")
WEB = ObjectKey("apps", "Deployment", "shop", "web")
DB = ObjectKey("", "Secret", "shop", "db")
OLD = ObjectKey("", "ConfigMap", "shop", "old")


def deployment(image: str, replicas: int = 2, revision: str = "a" * 40) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {REVISION_ANNOTATION: revision}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
    }


def secret(password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "data": {"pw": password},
    }


def test_objects_added_removed_and_changed_field_by_field() -> None:
    before = {WEB: deployment("web:1.0"), OLD: {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old"}}}
    after = {WEB: deployment("web:2.0", replicas=3, revision="b" * 40), DB: secret("aHVudGVy")}
    changes = {c.key: c for c in diff_renders(before, after, MASKER)}
    assert changes[DB].change is Change.ADDED
    assert changes[OLD].change is Change.REMOVED
    assert changes[WEB].change is Change.CHANGED
    # the revision annotation is our bookkeeping, not a change of the object
    assert set(changes[WEB].fields) == {
        FieldChange("/spec/replicas", Change.CHANGED, 2, 3),
        FieldChange("/spec/template/spec/containers/0/image", Change.CHANGED, "web:1.0", "web:2.0"),
    }


def test_an_unchanged_object_is_left_out() -> None:
    assert diff_renders({WEB: deployment("x")}, {WEB: deployment("x", revision="c" * 40)}, MASKER) == []


def test_a_changed_secret_shows_only_markers() -> None:
    (change,) = diff_renders({DB: secret("b2xkLXZhbHVl")}, {DB: secret("bmV3LXZhbHVl")}, MASKER)
    (field,) = change.fields
    assert field.path == "/data/pw"
    assert str(field.before).startswith("<secret:")
    assert str(field.after).startswith("<secret:")
    assert field.before != field.after
    for form in ("b2xkLXZhbHVl", "old-value", "bmV3LXZhbHVl", "new-value"):
        assert form not in repr(change)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=2),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text("xyz", max_size=2), children, max_size=4),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(st.text("pqr", max_size=2), JSON, max_size=4)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.dictionaries(st.text("pqr", max_size=2), JSON, max_size=4),
    st.dictionaries(st.text("pqr", max_size=2), JSON, max_size=4),
)
def test_the_field_changes_replayed_give_the_other_side(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Each change's `before` is what the document held at that pointer when the change came (later changes' pointers
    mean the document as the earlier ones left it); replaying them as add/remove/replace gives `after`."""
    working = copy.deepcopy(before)
    for f in field_changes(before, after):
        if f.change is Change.REMOVED:
            op = {"op": "remove", "path": f.path}
        elif f.change is Change.ADDED:
            op = {"op": "add", "path": f.path, "value": f.after}
        else:
            assert f.before == jsonpatch.JsonPointer(f.path).resolve(working)
            op = {"op": "replace", "path": f.path, "value": f.after}
        working = jsonpatch.apply_patch(working, [op])
    assert working == after
