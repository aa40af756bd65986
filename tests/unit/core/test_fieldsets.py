"""Field sets from managedFields: owned paths, lookups and JSON pointers through keyed lists, readable paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.core import fieldsets
from engine.core.fieldsets import MISSING, FieldPath

from ..stored import k

APP = k(name="app")
SIDECAR = k(name="sidecar")
PORT = k(containerPort=80, protocol="TCP")

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "labels": {"app": "web"},
        "annotations": {"example.com/a~b": "1", "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"},
        "finalizers": ["example.com/keep", "example.com/other"],
    },
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "prod"}],
            },
            {"name": "sidecar", "image": "envoy:1", "args": ["--a", "--b"]},
        ],
        "nodeSelector": {},
        "priority": 0,
    },
}

# --- leaves -------------------------------------------------------------------------------------------------------

FIELDS: dict[str, Any] = {
    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    "f:spec": {
        "f:containers": {
            APP: {".": {}, "f:name": {}, "f:image": {}},
            SIDECAR: {".": {}},
        },
        "f:priority": {},
    },
}


def test_leaves_with_containers_yield_owned_maps_and_elements_too() -> None:
    assert list(fieldsets.leaves(FIELDS)) == [
        ("f:metadata", "f:labels"),
        ("f:metadata", "f:labels", "f:app"),
        ("f:spec", "f:containers", APP),
        ("f:spec", "f:containers", APP, "f:name"),
        ("f:spec", "f:containers", APP, "f:image"),
        ("f:spec", "f:containers", SIDECAR),
        ("f:spec", "f:priority"),
    ]


def test_leaves_without_containers_yield_a_container_only_when_nothing_inside_is_listed() -> None:
    assert list(fieldsets.leaves(FIELDS, containers=False)) == [
        ("f:metadata", "f:labels", "f:app"),
        ("f:spec", "f:containers", APP, "f:name"),
        ("f:spec", "f:containers", APP, "f:image"),
        ("f:spec", "f:containers", SIDECAR),
        ("f:spec", "f:priority"),
    ]


@pytest.mark.parametrize("containers", [True, False])
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, []),
        ({".": {}}, []),
        ({"f:data": {}}, [("f:data",)]),
        ({"f:data": {"f:a": {}, "f:b": {}}}, [("f:data", "f:a"), ("f:data", "f:b")]),
        ({"f:spec": {"f:selector": {}}}, [("f:spec", "f:selector")]),
        ({"f:metadata": {"f:finalizers": {'v:"a"': {}}}}, [("f:metadata", "f:finalizers", 'v:"a"')]),
    ],
    ids=["empty", "root-dot", "atomic", "map-fields", "nested-atomic", "set-value"],
)
def test_leaves_of_atomic_fields_do_not_depend_on_containers(
    fields: dict[str, Any], expected: list[FieldPath], containers: bool
) -> None:
    assert list(fieldsets.leaves(fields, containers=containers)) == expected


def test_leaves_take_a_prefix() -> None:
    assert list(fieldsets.leaves({"f:image": {}}, ("f:spec", "f:containers", APP))) == [
        ("f:spec", "f:containers", APP, "f:image")
    ]


def test_manager_entries_read_fieldsv1_and_skip_other_types() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                {"manager": "kubectl-gitops", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": FIELDS},
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsV1": {"f:status": {}},
                },
                {"manager": "future", "operation": "Apply", "fieldsType": "FieldsV2", "fieldsV2": {}},
                {"manager": "broken", "operation": "Update", "fieldsV1": "not a map"},
                "not an entry",
            ]
        }
    }
    entries = fieldsets.manager_entries(obj)
    assert [(e.manager, e.operation, e.subresource) for e in entries] == [
        ("kubectl-gitops", "Apply", ""),
        ("kube-controller-manager", "Update", "status"),
        ("broken", "Update", ""),
    ]
    assert entries[0].fields == FIELDS
    assert entries[2].fields == {}


@pytest.mark.parametrize("obj", [{}, {"metadata": None}, {"metadata": {"managedFields": None}}])
def test_manager_entries_of_an_object_without_them(obj: dict[str, Any]) -> None:
    assert fieldsets.manager_entries(obj) == []


# --- lookup -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), POD),
        (("f:metadata", "f:name"), "web"),
        (("f:spec", "f:containers", APP, "f:image"), "nginx:1.25"),
        (("f:spec", "f:containers", SIDECAR), POD["spec"]["containers"][1]),
        (("f:spec", "f:containers", APP, "f:ports", PORT), {"containerPort": 80, "protocol": "TCP"}),
        (("f:spec", "f:containers", APP, "f:ports", k(containerPort=443, protocol="TCP"), "f:containerPort"), 443),
        (("f:metadata", "f:finalizers", 'v:"example.com/other"'), "example.com/other"),
        (("f:spec", "f:containers", "i:1", "f:args", "i:0"), "--a"),
        (("f:spec", "f:nodeSelector"), {}),
        (("f:spec", "f:priority"), 0),
    ],
    ids=["root", "field", "keyed", "element", "two-key", "two-key-field", "value", "index", "empty-map", "zero"],
)
def test_lookup_finds_values(path: FieldPath, expected: Any) -> None:
    assert fieldsets.lookup(POD, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        ("f:status",),
        ("f:spec", "f:containers", k(name="debug")),
        ("f:spec", "f:containers", k(name="debug"), "f:image"),
        ("f:spec", "f:containers", APP, "f:ports", k(containerPort=80, protocol="UDP")),
        ("f:metadata", "f:finalizers", 'v:"example.com/gone"'),
        ("f:spec", "f:containers", "i:2"),
        ("f:spec", "f:containers", "i:-1"),
        ("f:spec", "f:containers", "i:x"),
        ("f:spec", "f:containers", "k:{not json"),
        ("f:spec", "f:containers", "k:5"),
        ("f:metadata", "f:name", "f:deeper"),
        ("f:metadata", k(name="web")),
    ],
    ids=[
        "absent-field",
        "absent-element",
        "under-absent-element",
        "key-differs-in-one-field",
        "absent-value",
        "index-out-of-range",
        "negative-index",
        "bad-index",
        "bad-key-json",
        "key-not-a-map",
        "field-of-a-string",
        "key-in-a-map",
    ],
)
def test_lookup_of_what_is_not_there_is_missing(path: FieldPath) -> None:
    assert fieldsets.lookup(POD, path) is MISSING


def test_missing_is_not_none_or_falsy_values() -> None:
    assert fieldsets.lookup({"a": None}, ("f:a",)) is None
    assert fieldsets.lookup({"a": False}, ("f:a",)) is False
    assert fieldsets.lookup({}, ("f:a",)) is MISSING


# --- pointer ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("f:metadata", "f:name"), "/metadata/name"),
        (("f:spec", "f:containers", APP, "f:image"), "/spec/containers/0/image"),
        (("f:spec", "f:containers", SIDECAR, "f:image"), "/spec/containers/1/image"),
        (
            ("f:spec", "f:containers", APP, "f:ports", k(containerPort=443, protocol="TCP")),
            "/spec/containers/0/ports/1",
        ),
        (("f:metadata", "f:finalizers", 'v:"example.com/other"'), "/metadata/finalizers/1"),
        (("f:spec", "f:containers", "i:1", "f:args", "i:1"), "/spec/containers/1/args/1"),
        (
            ("f:metadata", "f:annotations", "f:kubectl.kubernetes.io/restartedAt"),
            "/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
        ),
        (("f:metadata", "f:annotations", "f:example.com/a~b"), "/metadata/annotations/example.com~1a~0b"),
    ],
    ids=["field", "keyed", "second-element", "two-key", "value", "index", "slash", "tilde-and-slash"],
)
def test_pointer_resolves_selectors_to_indices_and_escapes(path: FieldPath, expected: str) -> None:
    assert fieldsets.pointer(POD, path) == expected


@pytest.mark.parametrize(
    ("key", "token"),
    [("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1"), ("/~", "~1~0"), ("~1", "~01"), ("plain", "plain")],
)
def test_pointer_escapes_tilde_before_slash(key: str, token: str) -> None:
    assert fieldsets.pointer({"data": {key: "v"}}, ("f:data", f"f:{key}")) == f"/data/{token}"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("f:spec", "f:hostname"), "/spec/hostname"),
        (("f:spec", "f:containers", APP, "f:command"), "/spec/containers/0/command"),
        (("f:metadata", "f:annotations", "f:new/key"), "/metadata/annotations/new~1key"),
    ],
)
def test_pointer_to_a_missing_last_field(path: FieldPath, expected: str) -> None:
    assert fieldsets.lookup(POD, path) is MISSING
    assert fieldsets.pointer(POD, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        ("f:spec", "f:containers", k(name="debug")),
        ("f:spec", "f:containers", k(name="debug"), "f:image"),
        ("f:metadata", "f:finalizers", 'v:"example.com/gone"'),
        ("f:spec", "f:containers", "i:5"),
        ("f:spec", "f:volumes", k(name="data")),
        ("f:status", "f:phase"),
        ("f:spec", "f:missing", "f:deeper"),
    ],
    ids=["element", "under-element", "value", "index", "list-absent", "parent-absent", "field-under-absent-field"],
)
def test_pointer_is_none_when_something_on_the_way_is_missing(path: FieldPath) -> None:
    assert fieldsets.pointer(POD, path) is None


# --- display ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), ""),
        (("f:spec",), "spec"),
        (("f:spec", "f:replicas"), "spec.replicas"),
        (("f:spec", "f:containers", APP, "f:image"), "spec.containers[name=app].image"),
        (
            ("f:spec", "f:containers", APP, "f:ports", PORT),
            "spec.containers[name=app].ports[containerPort=80,protocol=TCP]",
        ),
        (("f:metadata", "f:finalizers", 'v:"a"'), 'metadata.finalizers[="a"]'),
        (("f:spec", "f:args", "i:3"), "spec.args[3]"),
        (("f:spec", "f:x", "k:{oops"), "spec.x[{oops]"),
        (("f:spec", "f:x", "k:[1]"), "spec.x[[1]]"),
        (("f:metadata", "f:annotations", "f:a/b"), "metadata.annotations.a/b"),
    ],
    ids=["empty", "one", "two", "keyed", "two-key", "value", "index", "bad-json", "key-not-a-map", "slash"],
)
def test_display(path: FieldPath, expected: str) -> None:
    assert fieldsets.display(path) == expected


# --- classification -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), False),
        (("f:spec",), True),
        (("f:spec", "f:replicas"), True),
        (("f:data", "f:key"), True),
        (("f:rules",), True),
        (("f:type",), True),
        (("f:metadata", "f:labels", "f:app"), False),
        (("f:metadata",), False),
        (("f:status", "f:replicas"), False),
        (("f:apiVersion",), False),
        (("f:kind",), False),
        (("f:spec", "f:template", "f:metadata", "f:labels"), True),
    ],
)
def test_is_content(path: FieldPath, expected: bool) -> None:
    assert fieldsets.is_content(path) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("f:metadata", "f:labels"), True),
        (("f:metadata", "f:labels", "f:app"), True),
        (("f:metadata", "f:annotations", "f:a/b"), True),
        (("f:spec", "f:template", "f:metadata", "f:labels", "f:app"), True),
        (("f:spec", "f:template", "f:metadata", "f:annotations", "f:x"), True),
        (("f:spec", "f:jobTemplate", "f:spec", "f:template", "f:metadata", "f:annotations", "f:x"), True),
        (("f:metadata",), False),
        (("f:metadata", "f:name"), False),
        (("f:metadata", "f:finalizers"), False),
        (("f:spec", "f:labels"), False),
        (("f:spec", "f:selector", "f:matchLabels", "f:app"), False),
        (("f:spec", "f:template", "f:metadata"), False),
        (("f:data", "f:labels"), False),
        ((), False),
    ],
)
def test_is_metadata_label_or_annotation(path: FieldPath, expected: bool) -> None:
    assert fieldsets.is_metadata_label_or_annotation(path) is expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"f:data": {"f:a": {}}}, {"f:data": {"f:a": {}}}),
        ({"f:stringData": {"f:a": {}}}, {"f:data": {"f:a": {}}}),
        (
            {"f:data": {"f:a": {}}, "f:stringData": {"f:b": {}}, "f:type": {}},
            {"f:data": {"f:a": {}, "f:b": {}}, "f:type": {}},
        ),
        ({"f:data": {"f:a": {}}, "f:stringData": {"f:a": {}}}, {"f:data": {"f:a": {}}}),
        ({"f:metadata": {"f:name": {}}}, {"f:metadata": {"f:name": {}}}),
    ],
    ids=["data-only", "stringData-only", "both", "same-key-in-both", "neither"],
)
def test_secret_declared_maps_string_data_to_data(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    before = json.dumps(fields, sort_keys=True)
    assert fieldsets.secret_declared(fields) == expected
    assert json.dumps(fields, sort_keys=True) == before  # the entry itself is left alone


DUPLICATED = {
    "spec": {
        "env": [{"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}, {"name": "A"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "UDP"}],
        "tags": ["x", "y", "x"],
        "one": [{"name": "A"}],
    }
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("f:spec", "f:env", k(name="A")), [2, 3]),
        (("f:spec", "f:env", k(name="B")), []),
        (("f:spec", "f:env", k(name="C")), []),
        (("f:spec", "f:ports", k(containerPort=80, protocol="TCP")), []),
        (("f:spec", "f:ports", k(containerPort=80)), [1]),  # a key names every item that has its fields
        (("f:spec", "f:tags", 'v:"x"'), [2]),
        (("f:spec", "f:one", k(name="A")), []),
        (("f:spec", "f:env", "i:0"), []),  # an index names one item
        (("f:spec", "f:env"), []),
        (("f:spec", "f:nothing", k(name="A")), []),
        (("f:spec", "f:env", "k:{not json"), []),
        ((), []),
    ],
)
def test_duplicates_are_the_items_after_the_first_under_one_key(path: FieldPath, expected: list[int]) -> None:
    assert fieldsets.duplicates(DUPLICATED, path) == expected


@pytest.mark.parametrize(
    ("segment", "expected"),
    [(k(name="a"), True), ('v:"x"', True), ("i:0", False), ("f:name", False), (".", False)],
)
def test_is_element(segment: str, expected: bool) -> None:
    assert fieldsets.is_element(segment) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("f:metadata", "f:ownerReferences"), True),
        (("f:metadata", "f:ownerReferences", k(uid="u")), True),
        (("f:metadata", "f:finalizers"), False),
        (("f:spec", "f:ownerReferences"), False),
        (("f:metadata",), False),
    ],
)
def test_is_owner_reference(path: FieldPath, expected: bool) -> None:
    assert fieldsets.is_owner_reference(path) is expected
