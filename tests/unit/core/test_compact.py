"""engine.core.compact: what is kept compactly equals what it replaces, and equal declared sets are one object."""

from __future__ import annotations

import json
from typing import Any

from engine.core.admission import GitObject
from engine.core.compact import LONG, DeclaredSets, interned
from engine.core.objects import AppRef, DriftMode, ObjectKey
from engine.core.paths import declared_paths


def test_interned_is_equal_and_shares_short_strings() -> None:
    one = json.loads('{"spec": {"dnsPolicy": "ClusterFirst", "list": [{"name": "app"}], "n": 1, "b": null}}')
    two = json.loads('{"spec": {"dnsPolicy": "ClusterFirst", "list": [{"name": "app"}], "n": 1, "b": null}}')
    assert one["spec"]["dnsPolicy"] is not two["spec"]["dnsPolicy"]
    a, b = interned(one), interned(two)
    assert a == one
    assert b == two
    assert a["spec"]["dnsPolicy"] is b["spec"]["dnsPolicy"]
    assert next(iter(a["spec"]["list"][0])) is next(iter(b["spec"]["list"][0]))


def test_long_strings_are_left_alone() -> None:
    text = "x" * (LONG + 1)
    assert interned({"data": text})["data"] is text


def test_equal_declared_sets_are_one_object_and_others_are_not() -> None:
    sets = DeclaredSets()
    first = sets.shared({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {}}})
    again = sets.shared({"f:metadata": {"f:labels": {}}, "f:data": {"f:k": {}}})
    other = sets.shared({"f:data": {"f:other": {}}})
    assert first is again
    assert other is not first
    assert other == {"f:data": {"f:other": {}}}
    assert len(sets) == 2


def test_a_shared_set_s_paths_are_computed_once_for_every_object_that_shares_it() -> None:
    sets = DeclaredSets()
    declared: dict[str, Any] = {"f:data": {"f:k": {}}}
    objects = [
        GitObject(ObjectKey("", "ConfigMap", "ns", name), AppRef("a", "b"), DriftMode.ENFORCE, "0" * 40, {}, d)
        for name, d in (("one", sets.shared(declared)), ("two", sets.shared(declared)))
    ]
    assert objects[0].declared_paths is objects[1].declared_paths
    assert objects[0].declared_paths == declared_paths(declared)
