"""How diffs look in a terminal or a pipe: summary lines, unified YAML diffs, file names, plain text when piped."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.drift import DriftItem, DriftKind, ObjectDiff, ObjectState
from engine.core.objects import ObjectKey
from plugin.render import file_name, print_text_diff, summary_lines, to_yaml, unified

WEB = ObjectKey("apps", "Deployment", "shop", "web")
CFG = ObjectKey("", "ConfigMap", "shop", "cfg")
NS = ObjectKey("", "Namespace", "", "shop")


def deployment(replicas: int, image: str = "nginx:1.25") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


MODIFIED = ObjectDiff(
    WEB,
    ObjectState.MODIFIED,
    items=[
        DriftItem("/spec/replicas", DriftKind.CHANGED, desired=2, live=5),
        DriftItem(
            "/spec/template/spec/containers/0/env/0",
            DriftKind.ADDED,
            live={"name": "DEBUG", "value": "1"},
            manager="kubectl-set",
        ),
    ],
    live=deployment(5),
    target=deployment(2),
)
SYNCED = ObjectDiff(CFG, ObjectState.SYNCED, live={"data": {"a": "1"}}, target={"data": {"a": "1"}})
MISSING = ObjectDiff(CFG, ObjectState.MISSING, target={"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}})
EXTRA = ObjectDiff(NS, ObjectState.EXTRA, live={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})


# --- file_name ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (WEB, "apps.Deployment.shop.web"),
        (CFG, "v1.ConfigMap.shop.cfg"),
        (NS, "v1.Namespace.shop"),
        (
            ObjectKey("rbac.authorization.k8s.io", "ClusterRole", "", "view"),
            "rbac.authorization.k8s.io.ClusterRole.view",
        ),
        (ObjectKey("acme.io", "Widget", "team-a", "w.1"), "acme.io.Widget.team-a.w.1"),
    ],
)
def test_file_name(key: ObjectKey, name: str) -> None:
    assert file_name(key) == name


# --- summary_lines ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "line"),
    [
        (
            DriftItem("/spec/replicas", DriftKind.CHANGED, desired=2, live=5),
            "#   changed /spec/replicas: git 2, live 5",
        ),
        (
            DriftItem("/spec/template/spec/containers/0/image", DriftKind.CHANGED, desired="nginx:1.25", live="x:1"),
            "#   changed /spec/template/spec/containers/0/image: git nginx:1.25, live x:1",
        ),
        (
            DriftItem("/metadata/labels/app", DriftKind.CHANGED, desired="web", live=None),
            "#   changed /metadata/labels/app: git web, live (absent)",
        ),
        (
            DriftItem("/spec/paused", DriftKind.CHANGED, desired=None, live=True),
            "#   changed /spec/paused: git (absent), live true",
        ),
        (
            DriftItem("/spec/selector", DriftKind.CHANGED, desired={"matchLabels": {"b": "2", "a": "1"}}, live=None),
            '#   changed /spec/selector: git {"matchLabels": {"a": "1", "b": "2"}}, live (absent)',
        ),
        (
            DriftItem("/spec/x/0/env/1", DriftKind.ADDED, live={"value": "1", "name": "DEBUG"}, manager="kubectl-set"),
            '#   added   /spec/x/0/env/1 (by kubectl-set): {"name": "DEBUG", "value": "1"}',
        ),
        (
            DriftItem("/spec/replicas", DriftKind.ADDED, live=3, manager="a scale (manager not recorded)"),
            "#   added   /spec/replicas (by a scale (manager not recorded)): 3",
        ),
        (
            DriftItem("/data/password", DriftKind.CHANGED, desired="<secret:0123456789abcdef>", live="<secret:aa>"),
            "#   changed /data/password: git <secret:0123456789abcdef>, live <secret:aa>",
        ),
        (
            DriftItem("/data/empty", DriftKind.CHANGED, desired="", live=[]),
            "#   changed /data/empty: git , live []",
        ),
    ],
    ids=["numbers", "strings", "gone", "added-value", "map", "added", "unknown-scaler", "secret", "empty"],
)
def test_summary_line(item: DriftItem, line: str) -> None:
    assert summary_lines(ObjectDiff(WEB, ObjectState.MODIFIED, items=[item])) == [line]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a" * 80, "a" * 80),
        ("a" * 81, "a" * 77 + "..."),
        ("b" * 500, "b" * 77 + "..."),
        (list(range(40)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21..."),
    ],
    ids=["at-limit", "one-over", "long", "long-list"],
)
def test_long_values_are_cut_to_80_characters(value: Any, shown: str) -> None:
    (line,) = summary_lines(
        ObjectDiff(WEB, ObjectState.MODIFIED, items=[DriftItem("/p", DriftKind.ADDED, live=value, manager="m")])
    )
    assert line == f"#   added   /p (by m): {shown}"
    assert len(line.removeprefix("#   added   /p (by m): ")) <= 80


def test_summary_lines_keep_item_order() -> None:
    assert summary_lines(MODIFIED) == [
        "#   changed /spec/replicas: git 2, live 5",
        '#   added   /spec/template/spec/containers/0/env/0 (by kubectl-set): {"name": "DEBUG", "value": "1"}',
    ]
    assert summary_lines(SYNCED) == []


# --- unified ------------------------------------------------------------------------------------------------------


def test_unified_diff_of_a_modified_object() -> None:
    lines = unified(MODIFIED)
    assert lines[:2] == ["--- live/apps.Deployment.shop.web", "+++ git/apps.Deployment.shop.web"]
    assert lines[2].startswith("@@")
    assert [line for line in lines[3:] if line[:1] in "+-"] == ["-  replicas: 5", "+  replicas: 2"]


def test_unified_diff_of_a_missing_object_adds_everything() -> None:
    lines = unified(MISSING)
    assert lines[:2] == ["--- live/v1.ConfigMap.shop.cfg", "+++ git/v1.ConfigMap.shop.cfg"]
    assert lines[3:] == ["+" + line for line in to_yaml(MISSING.target).splitlines()]
    assert "+kind: ConfigMap" in lines


def test_unified_diff_of_an_extra_object_removes_everything() -> None:
    lines = unified(EXTRA)
    assert lines[:2] == ["--- live/v1.Namespace.shop", "+++ git/v1.Namespace.shop"]
    assert lines[3:] == ["-apiVersion: v1", "-kind: Namespace", "-metadata:", "-  name: shop"]


def test_unified_diff_of_equal_objects_is_empty() -> None:
    assert unified(SYNCED) == []


def test_to_yaml_sorts_keys_and_keeps_unicode() -> None:
    assert to_yaml({"b": 1, "a": {"d": "é", "c": [1]}}) == "a:\n  c:\n  - 1\n  d: é\nb: 1\n"
    assert to_yaml(None) == ""


# --- print_text_diff ----------------------------------------------------------------------------------------------


def test_print_text_diff_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    print_text_diff([SYNCED, MODIFIED, EXTRA])
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "=== Deployment.apps shop/web (modified)"
    assert lines[1:3] == summary_lines(MODIFIED)
    assert lines[3 : 3 + len(unified(MODIFIED))] == unified(MODIFIED)
    assert "=== Namespace shop (extra)" in lines
    assert lines[-len(unified(EXTRA)) :] == unified(EXTRA)
    assert "ConfigMap" not in out  # synced objects are not shown
    assert out.endswith("\n")


def test_print_text_diff_of_nothing_drifted_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    print_text_diff([SYNCED])
    print_text_diff([])
    assert capsys.readouterr().out == ""


def test_print_text_diff_of_a_missing_object(capsys: pytest.CaptureFixture[str]) -> None:
    print_text_diff([MISSING])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "=== ConfigMap shop/cfg (missing)"
    assert lines[1:] == unified(MISSING)
