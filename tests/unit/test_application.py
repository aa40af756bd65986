"""The Application resource: parsing and validation, its manifest, sync history, and the status a sync leaves."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine.adapters.source import Commit
from engine.apps import sync_status
from engine.core.application import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    HISTORY_LIMIT,
    KIND,
    ApplicationSpec,
    HelmOptions,
    InvalidApplication,
    application_manifest,
    parse_application,
    validate_name,
    with_history,
)
from engine.core.drift import DEFAULT_IGNORES, IgnoreRule
from engine.core.objects import AppRef, ObjectKey
from engine.sync import Action, SyncResult

REPO = "https://git.example.com/shop.git"


def app(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "shop", **metadata},
        "spec": {"source": {"repoURL": REPO}} if spec is None else spec,
    }


# --- parse_application --------------------------------------------------------------------------------------------


def test_defaults() -> None:
    assert parse_application(app()) == ApplicationSpec(
        ref=AppRef(DEFAULT_NAMESPACE, "shop"),
        repo_url=REPO,
        revision="",
        path=".",
        destination_namespace="default",
        drift_mode="enforce",
        helm=HelmOptions(),
        ignore=(),
        prune=False,
        automated=False,
        self_heal=False,
    )


def test_every_field() -> None:
    obj = app(
        {
            "source": {
                "repoURL": REPO,
                "targetRevision": "v1.2.0",
                "path": "deploy/prod",
                "helm": {"releaseName": "shop", "valueFiles": ["values.yaml", "values-prod.yaml"]},
            },
            "destination": {"namespace": "shop-prod"},
            "driftMode": "warn",
            "ignoreDifferences": [
                {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
                {"jsonPointers": ["/metadata/annotations/x", "/data"]},
            ],
            "syncPolicy": {"prune": True, "automated": True, "selfHeal": True},
        },
        namespace="team-a",
    )
    assert parse_application(obj) == ApplicationSpec(
        ref=AppRef("team-a", "shop"),
        repo_url=REPO,
        revision="v1.2.0",
        path="deploy/prod",
        destination_namespace="shop-prod",
        drift_mode="warn",
        helm=HelmOptions("shop", ("values.yaml", "values-prod.yaml")),
        ignore=(
            IgnoreRule("apps", "Deployment", ("/spec/replicas",)),
            IgnoreRule("*", "*", ("/metadata/annotations/x", "/data")),
        ),
        prune=True,
        automated=True,
        self_heal=True,
    )


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit", "off"])
def test_every_drift_mode(mode: str) -> None:
    assert parse_application(app({"source": {"repoURL": REPO}, "driftMode": mode})).drift_mode == mode


@pytest.mark.parametrize(
    ("source", "field", "expected"),
    [
        ({"path": ""}, "path", "."),
        ({"path": None}, "path", "."),
        ({"targetRevision": None}, "revision", ""),
        ({"helm": None}, "helm", HelmOptions()),
        ({"helm": {"valueFiles": []}}, "helm", HelmOptions()),
    ],
)
def test_empty_fields_take_defaults(source: dict[str, Any], field: str, expected: Any) -> None:
    spec = parse_application(app({"source": {"repoURL": REPO, **source}}))
    assert getattr(spec, field) == expected


def test_empty_sections_take_defaults() -> None:
    spec = parse_application(
        app(
            {
                "source": {"repoURL": REPO},
                "destination": None,
                "driftMode": None,
                "ignoreDifferences": None,
                "syncPolicy": None,
            }
        )
    )
    assert (spec.destination_namespace, spec.drift_mode, spec.ignore, spec.prune) == ("default", "enforce", (), False)


def test_policy_puts_the_default_ignores_first() -> None:
    rule = IgnoreRule("apps", "Deployment", ("/spec/replicas",))
    spec = ApplicationSpec(ref=AppRef("a", "b"), repo_url=REPO, ignore=(rule,))
    defaults = tuple(IgnoreRule(g, k, p) for (g, k), p in DEFAULT_IGNORES.items())
    assert spec.policy().ignore == (*defaults, rule)
    assert spec.policy().autoscaled is False
    assert spec.policy(autoscaled=True).autoscaled is True


INVALID = [
    pytest.param(app({}), "Application gitops-system/shop: spec.source.repoURL is required", id="no-source"),
    pytest.param(
        {"metadata": {"name": "shop", "namespace": "team-a"}},
        "Application team-a/shop: spec.source.repoURL is required",
        id="no-spec",
    ),
    pytest.param(
        app({"source": {"repoURL": ""}}),
        "Application gitops-system/shop: spec.source.repoURL is required",
        id="empty-repo",
    ),
    pytest.param(app({"source": {"repoURL": 42}}), "spec.source.repoURL must be a string", id="repo-not-a-string"),
    pytest.param(
        app({"source": {"repoURL": REPO, "targetRevision": 1.0}}),
        "spec.source.targetRevision must be a string",
        id="revision-not-a-string",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO, "path": ["a"]}}), "spec.source.path must be a string", id="path-not-a-string"
    ),
    pytest.param(
        app({"source": {"repoURL": REPO, "helm": {"releaseName": 3}}}),
        "spec.source.helm.releaseName must be a string",
        id="release-not-a-string",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "destination": {"namespace": 5}}),
        "spec.destination.namespace must be a string",
        id="destination-not-a-string",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "driftMode": "block"}, namespace="team-a"),
        "Application team-a/shop: spec.driftMode 'block' is not one of enforce, warn, audit, off",
        id="unknown-mode",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "driftMode": "Enforce"}),
        "Application gitops-system/shop: spec.driftMode 'Enforce' is not one of enforce, warn, audit, off",
        id="mode-is-case-sensitive",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "driftMode": True}), "spec.driftMode must be a string", id="mode-not-a-string"
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "ignoreDifferences": [{"jsonPointers": ["/a"]}, {"jsonPointers": ["a"]}]}),
        "Application gitops-system/shop: spec.ignoreDifferences[1].jsonPointers must be JSON pointers ('/a/b')",
        id="pointer-without-slash",
    ),
    pytest.param(
        app({"source": {"repoURL": REPO}, "ignoreDifferences": [{"jsonPointers": [7]}]}),
        "Application gitops-system/shop: spec.ignoreDifferences[0].jsonPointers must be JSON pointers ('/a/b')",
        id="pointer-not-a-string",
    ),
]


@pytest.mark.parametrize(("obj", "message"), INVALID)
def test_validation_errors_name_the_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidApplication) as caught:
        parse_application(obj)
    assert message in str(caught.value)


# --- application_manifest -----------------------------------------------------------------------------------------

SPECS = [
    ApplicationSpec(ref=AppRef(DEFAULT_NAMESPACE, "minimal"), repo_url=REPO),
    ApplicationSpec(
        ref=AppRef("team-a", "full"),
        repo_url="/srv/git/shop",
        revision="3f2a9c1",
        path="charts/shop",
        destination_namespace="shop",
        drift_mode="audit",
        helm=HelmOptions("shop", ("values.yaml",)),
        ignore=(IgnoreRule("", "ConfigMap", ("/data/generated",)), IgnoreRule("*", "*", ("/a", "/b"))),
        prune=True,
        automated=True,
        self_heal=False,
    ),
    ApplicationSpec(ref=AppRef("x", "values-only"), repo_url=REPO, helm=HelmOptions("", ("v.yaml",))),
    ApplicationSpec(ref=AppRef("x", "release-only"), repo_url=REPO, helm=HelmOptions("rel")),
    ApplicationSpec(ref=AppRef("x", "off"), repo_url="file:///tmp/repo", drift_mode="off", self_heal=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=[s.ref.name for s in SPECS])
def test_application_manifest_round_trips(spec: ApplicationSpec) -> None:
    manifest = application_manifest(spec)
    assert manifest["apiVersion"] == API_VERSION
    assert manifest["kind"] == KIND
    assert manifest["metadata"] == {"name": spec.ref.name, "namespace": spec.ref.namespace}
    assert parse_application(manifest) == spec


def test_application_manifest_leaves_out_what_is_not_set() -> None:
    spec = application_manifest(SPECS[0])["spec"]
    assert spec == {
        "source": {"repoURL": REPO, "path": "."},
        "destination": {"namespace": "default"},
        "driftMode": "enforce",
        "syncPolicy": {"prune": False, "automated": False, "selfHeal": False},
    }


# --- validate_name ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "shop", "shop-prod", "0", "9lives", "a-b-c", "a" * 63, "a1-" + "b" * 59 + "2"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Shop", "-shop", "shop-", "shop_prod", "shop.prod", "a" * 64, "shöp", "shop prod", "shop\n", "\nshop"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidApplication) as caught:
        validate_name(name)
    assert str(caught.value).startswith(f"Application name {name!r} is not valid: ")
    assert "at most 63 characters" in str(caught.value)


def test_validate_name_says_what_it_checked() -> None:
    with pytest.raises(InvalidApplication, match=r"^destination namespace 'Prod' is not valid"):
        validate_name("Prod", "destination namespace")


# --- with_history -------------------------------------------------------------------------------------------------


def test_history_starts_at_one() -> None:
    assert with_history({}, {"revision": "abc"}) == [{"id": 1, "revision": "abc"}]
    assert with_history({"history": None}, {"revision": "abc"}) == [{"id": 1, "revision": "abc"}]


def test_history_appends_with_the_next_id() -> None:
    status = {"history": [{"id": 1, "revision": "a"}, {"id": 4, "revision": "b"}, {"id": 2, "revision": "c"}]}
    out = with_history(status, {"revision": "d"})
    assert [h["id"] for h in out] == [1, 4, 2, 5]
    assert out[-1] == {"id": 5, "revision": "d"}
    assert len(status["history"]) == 3  # the status itself is left alone


@pytest.mark.parametrize("syncs", [1, HISTORY_LIMIT - 1, HISTORY_LIMIT, HISTORY_LIMIT + 1, 3 * HISTORY_LIMIT])
def test_history_is_bounded_and_ids_keep_counting(syncs: int) -> None:
    status: dict[str, Any] = {}
    for n in range(1, syncs + 1):
        status = {"history": with_history(status, {"revision": f"r{n}"})}
    history = status["history"]
    assert len(history) == min(syncs, HISTORY_LIMIT)
    ids = [h["id"] for h in history]
    assert ids == list(range(syncs - len(history) + 1, syncs + 1))
    assert history[-1]["revision"] == f"r{syncs}"


def test_an_entry_cannot_override_the_id() -> None:
    out = with_history({"history": [{"id": 7}]}, {"revision": "x", "result": "Succeeded"})
    assert out[-1]["id"] == 8


# --- apps.sync_status ---------------------------------------------------------------------------------------------

COMMIT = Commit("3f2a9c1e" * 5, "Bump web to 1.26", "Dev <dev@example.com>", "2024-05-01T10:00:00+00:00")
WEB = ObjectKey("apps", "Deployment", "shop", "web")
CFG = ObjectKey("", "ConfigMap", "shop", "cfg")
OLD = ObjectKey("", "Service", "shop", "old")
NS = ObjectKey("", "Namespace", "", "shop")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_a_successful_sync() -> None:
    results = [
        SyncResult(WEB, Action.CONFIGURED),
        SyncResult(CFG, Action.CREATED),
        SyncResult(NS, Action.UNCHANGED),
        SyncResult(OLD, Action.PRUNED),
    ]
    app_obj = {"status": {"resources": [OLD.as_dict(), WEB.as_dict()], "history": [{"id": 3}]}}
    status = sync_status(app_obj, COMMIT, "alice", results)
    assert status["sync"] == {"status": "Synced", "revision": COMMIT.sha}
    last = status["lastSync"]
    assert ISO_UTC.match(last.pop("time"))
    assert last == {
        "revision": COMMIT.sha,
        "subject": "Bump web to 1.26",
        "author": "Dev <dev@example.com>",
        "date": "2024-05-01T10:00:00+00:00",
        "user": "alice",
        "result": "Succeeded",
        "counts": {"created": 1, "configured": 1, "unchanged": 1, "pruned": 1},
    }
    assert [h["id"] for h in status["history"]] == [3, 4]
    assert status["history"][-1]["result"] == "Succeeded"
    # The inventory is what this sync manages, sorted; the pruned object is gone from it.
    assert status["resources"] == [CFG.as_dict(), NS.as_dict(), WEB.as_dict()]


def test_a_failed_sync_keeps_the_previous_inventory() -> None:
    results = [
        SyncResult(CFG, Action.CREATED),
        SyncResult(WEB, Action.FAILED, "the API server rejects it: spec.replicas: Invalid value: -1"),
    ]
    app_obj = {"status": {"resources": [OLD.as_dict(), WEB.as_dict()]}}
    status = sync_status(app_obj, COMMIT, "bob", results)
    assert status["sync"] == {"status": "OutOfSync", "revision": COMMIT.sha}
    assert status["lastSync"]["result"] == "Failed"
    assert status["lastSync"]["counts"] == {"created": 1, "failed": 1}
    assert status["lastSync"]["message"] == (
        "Deployment.apps shop/web: the API server rejects it: spec.replicas: Invalid value: -1"
    )
    assert status["history"] == [{**status["lastSync"], "id": 1}]
    assert status["resources"] == [CFG.as_dict(), OLD.as_dict(), WEB.as_dict()]


def test_a_failed_sync_message_names_at_most_five_failures() -> None:
    keys = [ObjectKey("", "ConfigMap", "shop", f"c{n}") for n in range(7)]
    status = sync_status({}, COMMIT, "bob", [SyncResult(key, Action.FAILED, "no") for key in keys])
    message = status["lastSync"]["message"]
    assert message.split("; ") == [f"ConfigMap shop/c{n}: no" for n in range(5)]
    assert status["resources"] == []


def test_sync_status_history_is_bounded() -> None:
    app_obj = {"status": {"history": [{"id": n} for n in range(1, HISTORY_LIMIT + 1)]}}
    history = sync_status(app_obj, COMMIT, "alice", [])["history"]
    assert len(history) == HISTORY_LIMIT
    assert history[0]["id"] == 2
    assert history[-1]["id"] == HISTORY_LIMIT + 1
    assert history[-1]["counts"] == {}
