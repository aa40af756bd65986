"""The Application resource: parsing and validation, its manifest, sync history, and the status a sync leaves."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from engine.apps import sync_status
from engine.core.application import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    KIND,
    ApplicationSpec,
    HelmOptions,
    InvalidApplication,
    application_manifest,
    parse_application,
    validate_name,
)
from engine.core.drift import DEFAULT_IGNORES, IgnoreRule
from engine.core.history import (
    CommitInfo,
    RecordedObject,
    SyncRecord,
    Trigger,
    bounded_errors,
    counts_of,
    result_of,
)
from engine.core.objects import AppRef, DriftMode, ObjectKey
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
        drift_mode=DriftMode.ENFORCE,
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
        drift_mode=DriftMode.WARN,
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
        drift_mode=DriftMode.AUDIT,
        helm=HelmOptions("shop", ("values.yaml",)),
        ignore=(IgnoreRule("", "ConfigMap", ("/data/generated",)), IgnoreRule("*", "*", ("/a", "/b"))),
        prune=True,
        automated=True,
        self_heal=False,
    ),
    ApplicationSpec(ref=AppRef("x", "values-only"), repo_url=REPO, helm=HelmOptions("", ("v.yaml",))),
    ApplicationSpec(ref=AppRef("x", "release-only"), repo_url=REPO, helm=HelmOptions("rel")),
    ApplicationSpec(
        ref=AppRef("x", DriftMode.OFF), repo_url="file:///tmp/repo", drift_mode=DriftMode.OFF, self_heal=True
    ),
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


# --- apps.sync_status ---------------------------------------------------------------------------------------------

COMMIT = CommitInfo("3f2a9c1e" * 5, "Bump web to 1.26", "Dev <dev@example.com>", "2024-05-01T10:00:00+00:00")
WEB = ObjectKey("apps", "Deployment", "shop", "web")
CFG = ObjectKey("", "ConfigMap", "shop", "cfg")
OLD = ObjectKey("", "Service", "shop", "old")
NS = ObjectKey("", "Namespace", "", "shop")
FINISHED = datetime.datetime(2026, 11, 26, 15, 0, 2, tzinfo=datetime.UTC)


def record_of(results: list[SyncResult], user: str = "alice") -> SyncRecord:
    """The record engine.usecases writes for these results (its id given by the store)."""
    objects = tuple(RecordedObject(r.key, r.action, "", r.message) for r in results)
    return SyncRecord(
        application="shop",
        namespace="gitops-system",
        id=4,
        commit=COMMIT,
        trigger=Trigger.MANUAL,
        user=user,
        started=FINISHED - datetime.timedelta(seconds=2),
        finished=FINISHED,
        result=result_of(objects),
        render_digest="",
        objects=objects,
        errors=bounded_errors(f"{r.key}: {r.message}" for r in results if r.action is Action.FAILED),
        counts=counts_of(objects),
        name="shop-4",
    )


def test_a_successful_sync() -> None:
    results = [
        SyncResult(WEB, Action.CONFIGURED),
        SyncResult(CFG, Action.CREATED),
        SyncResult(NS, Action.UNCHANGED),
        SyncResult(OLD, Action.PRUNED),
    ]
    app_obj = {"status": {"resources": [OLD.as_dict(), WEB.as_dict()], "history": [{"id": 3}]}}
    status = sync_status(app_obj, record_of(results), results)
    assert status["sync"] == {"status": "Synced", "revision": COMMIT.sha}
    assert status["lastSync"] == {
        "id": 4,
        "record": "shop-4",
        "revision": COMMIT.sha,
        "subject": "Bump web to 1.26",
        "author": "Dev <dev@example.com>",
        "time": "2026-11-26T15:00:02Z",
        "trigger": "manual",
        "user": "alice",
        "result": "Succeeded",
        "counts": {"created": 1, "configured": 1, "unchanged": 1, "pruned": 1},
    }
    assert status["history"] is None  # the list earlier versions kept in the status goes (a merge patch's null)
    # The inventory is what this sync manages, sorted; the pruned object is gone from it.
    assert status["resources"] == [CFG.as_dict(), NS.as_dict(), WEB.as_dict()]


def test_a_failed_sync_keeps_the_previous_inventory() -> None:
    results = [
        SyncResult(CFG, Action.CREATED),
        SyncResult(WEB, Action.FAILED, "the API server rejects it: spec.replicas: Invalid value: -1"),
    ]
    app_obj = {"status": {"resources": [OLD.as_dict(), WEB.as_dict()]}}
    status = sync_status(app_obj, record_of(results, "bob"), results)
    assert status["sync"] == {"status": "OutOfSync", "revision": COMMIT.sha}
    assert status["lastSync"]["result"] == "Partial"  # one object failed, another was created
    assert status["lastSync"]["counts"] == {"created": 1, "failed": 1}
    assert status["lastSync"]["message"] == (
        "Deployment.apps shop/web: the API server rejects it: spec.replicas: Invalid value: -1"
    )
    assert status["resources"] == [CFG.as_dict(), OLD.as_dict(), WEB.as_dict()]


def test_a_failed_sync_message_names_at_most_five_failures() -> None:
    keys = [ObjectKey("", "ConfigMap", "shop", f"c{n}") for n in range(7)]
    results = [SyncResult(key, Action.FAILED, "no") for key in keys]
    status = sync_status({}, record_of(results, "bob"), results)
    assert status["lastSync"]["result"] == "Failed"
    message = status["lastSync"]["message"]
    assert message.split("; ") == [f"ConfigMap shop/c{n}: no" for n in range(5)]
    assert status["resources"] == []
