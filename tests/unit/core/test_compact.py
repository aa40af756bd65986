"""engine.core.compact: what is kept compactly equals what it replaces, and equal declared sets are one object."""

from __future__ import annotations

import json

from engine.core.compact import LONG, DeclaredSets, interned


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
