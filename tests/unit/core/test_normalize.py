"""What is compared and shown of an object: bookkeeping removed, Secret values replaced by keyed markers."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from engine.core.normalize import LAST_APPLIED, SecretMasker, is_secret, normalize, normalized_view
from engine.core.objects import KubeObject

BOOKKEEPING = {
    "managedFields": [{"manager": "kubectl-gitops", "operation": "Apply", "fieldsV1": {}}],
    "resourceVersion": "42",
    "uid": "8d2b1f00-0000-4000-8000-000000000000",
    "generation": 7,
    "creationTimestamp": "2024-05-01T10:00:00Z",
    "selfLink": "/api/v1/namespaces/shop/configmaps/c",
    "deletionTimestamp": "2024-05-02T10:00:00Z",
    "deletionGracePeriodSeconds": 30,
}


def configmap(**metadata: Any) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop", **metadata},
        "data": {"a": "1"},
    }


def test_normalize_strips_status_and_every_bookkeeping_field() -> None:
    obj = configmap(**copy.deepcopy(BOOKKEEPING), labels={"app": "x"}, finalizers=["keep"])
    obj["status"] = {"phase": "Active"}
    assert normalize(obj) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop", "labels": {"app": "x"}, "finalizers": ["keep"]},
        "data": {"a": "1"},
    }


@pytest.mark.parametrize("field", sorted(BOOKKEEPING))
def test_each_bookkeeping_field_is_stripped(field: str) -> None:
    assert normalize(configmap(**{field: BOOKKEEPING[field]})) == configmap()


def test_normalize_copies() -> None:
    obj = configmap(**copy.deepcopy(BOOKKEEPING), annotations={LAST_APPLIED: "{}", "a": "b"})
    before = copy.deepcopy(obj)
    out = normalize(obj)
    assert obj == before
    out["data"]["a"] = "changed"
    assert obj["data"]["a"] == "1"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({LAST_APPLIED: "{}"}, None),
        ({LAST_APPLIED: "{}", "owner": "alice"}, {"owner": "alice"}),
        ({"owner": "alice"}, {"owner": "alice"}),
        ({}, None),
    ],
    ids=["only-last-applied", "with-others", "without", "empty"],
)
def test_last_applied_annotation_is_dropped(annotations: dict[str, str], expected: dict[str, str] | None) -> None:
    out = normalize(configmap(annotations=annotations))
    assert out["metadata"].get("annotations") == expected
    if expected is None:
        assert "annotations" not in out["metadata"]


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "ConfigMap"},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": None},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": None}},
    ],
    ids=["no-metadata", "null-metadata", "null-annotations"],
)
def test_normalize_tolerates_odd_metadata(obj: KubeObject) -> None:
    assert normalize(obj) == obj


@pytest.mark.parametrize(
    "obj",
    [
        configmap(**BOOKKEEPING, annotations={LAST_APPLIED: "{}", "owner": "alice"}, labels={"a": "b"}),
        configmap(annotations={LAST_APPLIED: "{}"}),
        configmap(annotations={}),
        {**configmap(), "status": {"x": 1}},
        {"apiVersion": "v1", "kind": "ConfigMap"},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": None},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": None}},
    ],
    ids=["bookkeeping", "only-last-applied", "empty-annotations", "status", "no-metadata", "null-meta", "null-ann"],
)
def test_the_view_is_what_normalize_answers_and_leaves_the_object_alone(obj: KubeObject) -> None:
    before = copy.deepcopy(obj)
    assert normalized_view(obj) == normalize(obj)
    assert obj == before


# --- SecretMasker -------------------------------------------------------------------------------------------------

KEY_A = b"a" * 32
KEY_B = b"b" * 32
MARKER = re.compile(r"^<secret:[0-9a-f]{16}>$")


def test_a_marker_has_a_fixed_shape_and_hides_the_value() -> None:
    marker = SecretMasker(KEY_A).marker("aHVudGVyMg==")
    assert MARKER.match(marker)
    assert "aHVudGVyMg" not in marker


@pytest.mark.parametrize(
    ("first", "second", "equal"),
    [
        ((KEY_A, "v1"), (KEY_A, "v1"), True),
        ((KEY_A, "v1"), (KEY_A, "v2"), False),
        ((KEY_A, "v1"), (KEY_B, "v1"), False),
        ((KEY_A, ""), (KEY_A, ""), True),
        ((KEY_A, ""), (KEY_A, " "), False),
    ],
    ids=["same-value", "different-value", "different-key", "empty", "empty-vs-space"],
)
def test_markers_equal_exactly_for_equal_values_under_one_key(
    first: tuple[bytes, str], second: tuple[bytes, str], equal: bool
) -> None:
    assert (SecretMasker(first[0]).marker(first[1]) == SecretMasker(second[0]).marker(second[1])) is equal


def secret(**data: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}, "data": data}


def test_mask_replaces_every_data_and_string_data_value() -> None:
    masker = SecretMasker(KEY_A)
    obj = secret(user="c2hvcA==", password="czNjcjN0")
    obj["stringData"] = {"token": "plain-token"}
    out = masker.mask(obj)
    assert out["data"] == {"user": masker.marker("c2hvcA=="), "password": masker.marker("czNjcjN0")}
    assert out["stringData"] == {"token": masker.marker("plain-token")}
    assert obj["data"]["password"] == "czNjcjN0"  # the input is left alone
    assert obj["stringData"]["token"] == "plain-token"


def test_equal_values_under_different_data_keys_get_equal_markers() -> None:
    out = SecretMasker(KEY_A).mask(secret(a="same", b="same", c="other"))
    assert out["data"]["a"] == out["data"]["b"] != out["data"]["c"]


def test_last_applied_annotation_on_a_secret_is_masked() -> None:
    masker = SecretMasker(KEY_A)
    obj = secret(password="czNjcjN0")
    copied = json.dumps({"apiVersion": "v1", "kind": "Secret", "data": {"password": "czNjcjN0"}})
    obj["metadata"]["annotations"] = {LAST_APPLIED: copied, "owner": "alice"}
    out = masker.mask(obj)
    assert out["metadata"]["annotations"] == {LAST_APPLIED: masker.marker(copied), "owner": "alice"}
    assert "czNjcjN0" not in json.dumps(out)
    assert obj["metadata"]["annotations"][LAST_APPLIED] == copied


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"password": "plain"}},
        {"apiVersion": "acme.io/v1", "kind": "Secret", "metadata": {"name": "c"}, "data": {"password": "plain"}},
    ],
    ids=["configmap", "secret-of-another-group"],
)
def test_other_objects_are_not_masked(obj: KubeObject) -> None:
    assert not is_secret(obj)
    assert SecretMasker(KEY_A).mask(obj) == obj


def test_a_secret_without_data_is_returned_as_is() -> None:
    obj: KubeObject = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque"}
    assert is_secret(obj)
    assert SecretMasker(KEY_A).mask(obj) == obj


@pytest.mark.parametrize(
    ("pointer", "value", "expected"),
    [
        ("/data/password", "czNjcjN0", "marker"),
        ("/stringData/token", "plain", "marker"),
        ("/data", {"a": "x", "b": "y"}, {"a": "marker:x", "b": "marker:y"}),
        ("/metadata/annotations/note", "anything", "marker"),
        ("/metadata/annotations", {"note": "n"}, {"note": "marker:n"}),
        ("", {"data": {}}, "<secret object>"),
        ("/", {"data": {}}, "<secret object>"),
        ("/metadata", {"name": "s"}, "<secret object>"),
        ("/type", "Opaque", "Opaque"),
        ("/metadata/labels/app", "db", "db"),
        ("/immutable", True, True),
    ],
)
def test_mask_value_by_pointer(pointer: str, value: Any, expected: Any) -> None:
    masker = SecretMasker(KEY_A)
    if expected == "marker":
        expected = masker.marker(value)
    elif isinstance(expected, dict):
        expected = {k: masker.marker(v.removeprefix("marker:")) for k, v in expected.items()}
    assert masker.mask_value(secret(), pointer, value) == expected


@pytest.mark.parametrize("pointer", ["/data/password", "", "/metadata/annotations/a"])
def test_mask_value_leaves_other_objects_alone(pointer: str) -> None:
    configmap_obj: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert SecretMasker(KEY_A).mask_value(configmap_obj, pointer, "plain") == "plain"
