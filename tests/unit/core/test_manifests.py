"""Parsing Git's manifest files: documents, List flattening, JSON, YAML's oddities, and every error message."""

from __future__ import annotations

import json
import re

import pytest

from engine.core.errors import ManifestError
from engine.core.manifests import Manifest, check_unique, parse
from engine.core.objects import ObjectKey

CONFIGMAP_A = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
CONFIGMAP_B = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"
DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n"


def names(manifests: list[Manifest]) -> list[str]:
    return [m.obj["metadata"]["name"] for m in manifests]


# --- documents ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CONFIGMAP_A, [("a", 1)]),
        (f"{CONFIGMAP_A}---\n{CONFIGMAP_B}", [("a", 1), ("b", 2)]),
        (f"---\n{CONFIGMAP_A}---\n{CONFIGMAP_B}", [("a", 1), ("b", 2)]),
        (f"{CONFIGMAP_A}---\n---\n{CONFIGMAP_B}", [("a", 1), ("b", 3)]),
        (f"{CONFIGMAP_A}---\n# only a comment\n---\n{CONFIGMAP_B}---\n", [("a", 1), ("b", 3)]),
        (f"{CONFIGMAP_A}---\n\n\n---\n{CONFIGMAP_B}", [("a", 1), ("b", 3)]),
    ],
    ids=["single", "two", "leading-separator", "empty-between", "comment-only", "blank-lines"],
)
def test_documents_keep_their_number_and_empty_ones_are_skipped(text: str, expected: list[tuple[str, int]]) -> None:
    found = parse(text, "apps/cm.yaml")
    assert [(m.obj["metadata"]["name"], m.document) for m in found] == expected
    assert {m.source for m in found} == {"apps/cm.yaml"}


@pytest.mark.parametrize("text", ["", "\n", "---\n", "---\n---\n", "# nothing here\n", "---\n# c\n...\n"])
def test_a_file_without_objects_gives_nothing(text: str) -> None:
    assert parse(text, "empty.yaml") == []


def test_manifest_key_and_where() -> None:
    (manifest,) = parse(f"{CONFIGMAP_A}---\n{DEPLOYMENT}", "dir/f.yaml")[1:]
    assert manifest.key == ObjectKey("apps", "Deployment", "shop", "web")
    assert manifest.where == "dir/f.yaml (document 2)"
    assert manifest.obj == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
    }


# --- List flattening ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["List", "ConfigMapList", "ServiceList"])
def test_list_kinds_are_flattened_in_order(kind: str) -> None:
    text = (
        f"apiVersion: v1\nkind: {kind}\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: one}}\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: two}}\n"
        f"---\n{CONFIGMAP_B}"
    )
    found = parse(text, "list.yaml")
    assert [(m.obj["kind"], m.obj["metadata"]["name"], m.document) for m in found] == [
        ("ConfigMap", "one", 1),
        ("Service", "two", 1),
        ("ConfigMap", "b", 2),
    ]


@pytest.mark.parametrize("items", ["[]", "null", "~"])
def test_an_empty_list_gives_nothing(items: str) -> None:
    assert parse(f"apiVersion: v1\nkind: List\nitems: {items}\n", "list.yaml") == []


def test_a_list_kind_without_items_is_an_object() -> None:
    """A kind that merely ends in `List` (say, an AccessList custom resource) is an object when it has no items."""
    (manifest,) = parse("apiVersion: acme.io/v1\nkind: AccessList\nmetadata: {name: allow}\nspec: {}\n", "x.yaml")
    assert manifest.key == ObjectKey("acme.io", "AccessList", "", "allow")


def test_a_json_list_is_flattened() -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
            ],
        }
    )
    assert names(parse(text, "list.json")) == ["a", "b"]


# --- JSON -------------------------------------------------------------------------------------------------------------


def test_a_json_file_is_one_document() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"date": "2024-01-01"}}
    (manifest,) = parse(json.dumps(obj, indent=2), "pvc/claim.json")
    assert manifest.obj == obj
    assert manifest.document == 1
    assert manifest.where == "pvc/claim.json (document 1)"


def test_json_is_read_as_json_even_where_yaml_would_differ() -> None:
    # PyYAML reads `1e3` as a string (its floats need a dot); a JSON file is read by JSON's rules.
    text = '{"apiVersion": "acme.io/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"scale": 1e3}}'
    assert parse(text, "a.json")[0].obj["spec"] == {"scale": 1000.0}


# --- YAML scalars -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("2024-01-01", "2024-01-01"),
        ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
        ("2001-12-14 21:59:43.10 -5", "2001-12-14 21:59:43.10 -5"),
        ("'2024-01-01'", "2024-01-01"),
        ("42", 42),
        ("0.5", 0.5),
        ("true", True),
        ("null", None),
        ('"007"', "007"),
    ],
)
def test_timestamps_stay_strings_other_scalars_keep_their_type(scalar: str, expected: object) -> None:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  value: {scalar}\n"
    value = parse(text, "a.yaml")[0].obj["data"]["value"]
    assert value == expected
    assert type(value) is type(expected)


def test_a_timestamp_in_a_label_stays_a_string() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    released: 2024-01-01\n"
    assert parse(text, "a.yaml")[0].obj["metadata"]["labels"] == {"released": "2024-01-01"}


# --- errors -------------------------------------------------------------------------------------------------------

YAML_ERRORS = [
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [a\n",
        "f.yaml (document 1): invalid YAML at line 4 column 1: ",
        "expected ',' or ']'",
        id="unclosed-flow",
    ),
    pytest.param(
        f"{CONFIGMAP_A}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n   bad: x\n",
        "f.yaml (document 2): invalid YAML at line 10 column 7: ",
        "mapping values are not allowed",
        id="bad-indent-second-document",
    ),
    pytest.param(
        f"{CONFIGMAP_A}---\n{CONFIGMAP_B}---\n\tapiVersion: v1\n",
        "f.yaml (document 3): invalid YAML at line 11 column 1: ",
        "cannot start any token",
        id="tab-third-document",
    ),
    pytest.param(
        "data: *nowhere\n",
        "f.yaml (document 1): invalid YAML at line 1 column 7: ",
        "undefined alias",
        id="undefined-alias",
    ),
]


@pytest.mark.parametrize(("text", "prefix", "problem"), YAML_ERRORS)
def test_invalid_yaml_names_the_document_line_column_and_problem(text: str, prefix: str, problem: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(text, "f.yaml")
    message = str(caught.value)
    assert message.startswith(prefix)
    assert problem in message[len(prefix) :]


ERRORS = [
    pytest.param(
        "apiVersion: v1\nmetadata: {name: a}\n",
        "f.yaml (document 1): the object has no `kind`",
        id="no-kind",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ''\nmetadata: {name: a}\n",
        "f.yaml (document 1): the object has no `kind`",
        id="empty-kind",
    ),
    pytest.param(
        "apiVersion: v1\nkind: 3\nmetadata: {name: a}\n",
        "f.yaml (document 1): the object has no `kind`",
        id="kind-not-a-string",
    ),
    pytest.param(
        "kind: ConfigMap\nmetadata: {name: a}\n",
        "f.yaml (document 1): the object has no `apiVersion`",
        id="no-apiVersion",
    ),
    pytest.param(
        "metadata: {name: a}\n",
        "f.yaml (document 1): the object has no `apiVersion`",
        id="neither",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\n",
        "f.yaml (document 1): ConfigMap has no `metadata.name`",
        id="no-metadata",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
        "f.yaml (document 1): ConfigMap has no `metadata.name`",
        id="no-name",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ''}\n",
        "f.yaml (document 1): ConfigMap has no `metadata.name`",
        id="empty-name",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 7}\n",
        "f.yaml (document 1): ConfigMap has no `metadata.name`",
        id="name-not-a-string",
    ),
    pytest.param(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: []\n",
        "f.yaml (document 1): ConfigMap has no `metadata.name`",
        id="metadata-not-a-mapping",
    ),
    pytest.param(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: migrate-}\n",
        "f.yaml (document 1): Job has no `metadata.name` (generateName is not supported: Git must name every object)",
        id="generateName",
    ),
    pytest.param(
        "- apiVersion: v1\n- kind: ConfigMap\n",
        "f.yaml (document 1): expected a Kubernetes object (a mapping), found list",
        id="sequence",
    ),
    pytest.param(
        f"{CONFIGMAP_A}---\njust a string\n",
        "f.yaml (document 2): expected a Kubernetes object (a mapping), found str",
        id="scalar-second-document",
    ),
    pytest.param(
        "42\n",
        "f.yaml (document 1): expected a Kubernetes object (a mapping), found int",
        id="number",
    ),
    pytest.param(
        "apiVersion: v1\nkind: List\nitems: {a: 1}\n",
        "f.yaml (document 1): `items` of a List must be a list",
        id="items-not-a-list",
    ),
    pytest.param(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "- {apiVersion: v1, kind: ConfigMap}\n",
        "f.yaml (document 1) item 1: ConfigMap has no `metadata.name`",
        id="list-item-without-name",
    ),
    pytest.param(
        "apiVersion: v1\nkind: List\nitems:\n- not an object\n",
        "f.yaml (document 1) item 0: expected a Kubernetes object (a mapping), found str",
        id="list-item-not-a-mapping",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_error_messages_name_the_file_document_and_problem(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(text, "f.yaml")
    assert str(caught.value) == message


def test_invalid_yaml_keeps_the_library_error_as_cause() -> None:
    with pytest.raises(ManifestError) as caught:
        parse("a: [1\n", "f.yaml")
    assert caught.value.__cause__ is not None
    assert type(caught.value.__cause__).__module__.startswith("yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"apiVersion": "v1",\n "kind": }',
            "f.json: invalid JSON at line 2 column 10: Expecting value",
        ),
        ("", "f.json: invalid JSON at line 1 column 1: Expecting value"),
        ('{"kind": "ConfigMap", "metadata": {"name": "a"}}', "f.json (document 1): the object has no `apiVersion`"),
        ("[1, 2]", "f.json (document 1): expected a Kubernetes object (a mapping), found list"),
    ],
    ids=["syntax", "empty", "no-apiVersion", "array"],
)
def test_json_error_messages(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(text, "f.json")
    assert str(caught.value) == message


# --- duplicates ---------------------------------------------------------------------------------------------------


def test_unique_manifests_pass() -> None:
    found = parse(f"{CONFIGMAP_A}---\n{CONFIGMAP_B}---\n{DEPLOYMENT}", "f.yaml")
    check_unique(found)
    assert len({m.key for m in found}) == 3


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            ("a.yaml", CONFIGMAP_A),
            ("b.yaml", f"{CONFIGMAP_B}---\n{CONFIGMAP_A}"),
            "ConfigMap a is declared twice: in a.yaml (document 1) and in b.yaml (document 2)",
        ),
        (
            ("x/deploy.yaml", DEPLOYMENT),
            ("x/deploy.yaml", f"# again\n{DEPLOYMENT}"),
            "Deployment.apps shop/web is declared twice: "
            "in x/deploy.yaml (document 1) and in x/deploy.yaml (document 1)",
        ),
    ],
    ids=["across-files", "same-place-twice"],
)
def test_duplicates_name_both_places(first: tuple[str, str], second: tuple[str, str], message: str) -> None:
    manifests = parse(first[1], first[0]) + parse(second[1], second[0])
    with pytest.raises(ManifestError, match=re.escape(message)):
        check_unique(manifests)


def test_a_duplicate_within_one_file() -> None:
    with pytest.raises(ManifestError) as caught:
        check_unique(parse(f"{CONFIGMAP_A}---\n{CONFIGMAP_B}---\n{CONFIGMAP_A}", "cm.yaml"))
    assert str(caught.value) == "ConfigMap a is declared twice: in cm.yaml (document 1) and in cm.yaml (document 3)"


@pytest.mark.parametrize(
    ("other", "distinct"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\n", True),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n", True),
        ("apiVersion: acme.io/v1\nkind: ConfigMap\nmetadata: {name: a}\n", True),
        # Another version of the same group and kind is the same object.
        ("apiVersion: v2\nkind: ConfigMap\nmetadata: {name: a}\n", False),
    ],
    ids=["namespace", "kind", "group", "version"],
)
def test_identity_is_group_kind_namespace_name(other: str, distinct: bool) -> None:
    manifests = parse(CONFIGMAP_A, "a.yaml") + parse(other, "b.yaml")
    if distinct:
        check_unique(manifests)
        assert manifests[0].key != manifests[1].key
    else:
        with pytest.raises(ManifestError, match="declared twice"):
            check_unique(manifests)
