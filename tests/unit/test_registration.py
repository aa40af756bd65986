"""Keeping the webhook's registration covering what Applications manage, against the fake API server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from engine.compare import DesiredObject
from engine.core.errors import ApiError, ClusterUnreachable, GitOpsError
from engine.core.manifests import Manifest
from engine.core.objects import KubeObject, ObjectKey
from engine.core.resources import ResourceInfo
from engine.core.webhookconfig import (
    EVICTION_ENTRY,
    MACHINERY,
    MACHINERY_CONDITION,
    NAME,
    SCALE_ENTRY,
    ManagedResource,
    missing_resources,
    registered_resources,
    webhook_configuration,
)
from engine.registration import CONFLICT_ATTEMPTS, REGISTRATION, Coverage, cover, exact_versions, inventory_resources
from plugin.sync import registration_guard
from webhook.registration import RegistrationKeeper

from ..fakes import FakeCluster, Request, forbid

DEPLOYMENTS = ManagedResource("apps", "v1", "deployments", frozenset({"scale"}))
CONFIGMAPS = ManagedResource("", "v1", "configmaps")
ROLES = ManagedResource("rbac.authorization.k8s.io", "v1", "roles")
PODS = ManagedResource("", "v1", "pods", frozenset({"eviction", "ephemeralcontainers", "resize"}))
KEY = ObjectKey(REGISTRATION.group, REGISTRATION.kind, "", NAME)
RBAC_NAME = "validatingwebhookconfigurations.admissionregistration.k8s.io"


def installed(*resources: ManagedResource) -> KubeObject:
    return webhook_configuration(ca_bundle=b"ca", url="https://hook/validate", resources=resources)


def store(live: KubeObject | None = None) -> FakeCluster:
    """The API server, with the registration `kubectl gitops install` made (or none)."""
    return FakeCluster(objects=[live] if live is not None else [])


def live_of(cluster: FakeCluster) -> KubeObject:
    found = cluster.stored(KEY)
    assert found is not None
    return found


def puts(cluster: FakeCluster) -> list[KubeObject]:
    return [r.body for r in cluster.made("replace")]


def another_install(cluster: FakeCluster, *resources: ManagedResource) -> Callable[[Request], None]:
    """Another writer that, right after each GET of the registration, installs it with one more resource (one each
    time, while they last), at the version it reads, as `kubectl gitops install` does."""
    pending = list(resources)

    def install(request: Request) -> None:
        if request.verb == "get" and request.key == KEY and pending:
            now = registered_resources(live_of(cluster)) | {pending.pop(0)}
            config = webhook_configuration(ca_bundle=b"ca", url="https://hook/validate", resources=now)
            config["metadata"]["resourceVersion"] = live_of(cluster)["metadata"]["resourceVersion"]
            cluster.apply(REGISTRATION, config, field_manager="kubectl-gitops-install")

    return install


def failing(error: Exception) -> Callable[[Request], None]:
    def gate(request: Request) -> None:
        if request.verb == "get":
            raise error

    return gate


def test_nothing_to_cover_asks_nothing() -> None:
    cluster = store(installed())
    assert cover(cluster, set()).coverage is Coverage.COVERED
    assert cluster.requests == []


def test_a_covering_registration_is_only_read() -> None:
    cluster = store(installed(CONFIGMAPS, DEPLOYMENTS, ROLES))
    assert cover(cluster, {CONFIGMAPS, DEPLOYMENTS}).coverage is Coverage.COVERED
    assert [r.verb for r in cluster.requests] == ["get"]


def test_what_is_missing_is_added_with_the_resource_version_read() -> None:
    cluster = store(installed(CONFIGMAPS))
    version = live_of(cluster)["metadata"]["resourceVersion"]
    outcome = cover(cluster, {CONFIGMAPS, DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.EXTENDED, frozenset({DEPLOYMENTS}))
    assert [p["metadata"]["resourceVersion"] for p in puts(cluster)] == [version]
    assert registered_resources(live_of(cluster)) == {CONFIGMAPS, DEPLOYMENTS}
    assert int(live_of(cluster)["metadata"]["resourceVersion"]) > int(version)
    assert "deployments.apps v1 (and its scale)" in str(outcome)


def test_add_only_a_resource_nobody_manages_any_more_stays() -> None:
    cluster = store(installed(CONFIGMAPS, ROLES))
    cover(cluster, {DEPLOYMENTS})
    assert registered_resources(live_of(cluster)) == {CONFIGMAPS, ROLES, DEPLOYMENTS}


def test_a_conflict_is_read_again_and_keeps_what_the_other_writer_added() -> None:
    cluster = store(installed(CONFIGMAPS))
    first = live_of(cluster)["metadata"]["resourceVersion"]
    cluster.after.append(another_install(cluster, ROLES))
    assert cover(cluster, {DEPLOYMENTS}).coverage is Coverage.EXTENDED
    versions = [p["metadata"]["resourceVersion"] for p in puts(cluster)]
    assert versions[0] == first  # refused: the other writer had installed it since
    assert len(versions) == 2
    assert int(versions[1]) > int(first)
    assert registered_resources(live_of(cluster)) == {CONFIGMAPS, ROLES, DEPLOYMENTS}


def test_endless_conflicts_end_in_an_error() -> None:
    cluster = store(installed(CONFIGMAPS))
    cluster.after.append(
        another_install(cluster, *(ManagedResource("", "v1", f"r{i}") for i in range(CONFLICT_ATTEMPTS)))
    )
    with pytest.raises(GitOpsError, match="changed under every one of 5 updates"):
        cover(cluster, {DEPLOYMENTS})
    assert len(puts(cluster)) == CONFLICT_ATTEMPTS


def test_another_replica_adding_the_same_first_leaves_nothing_to_do() -> None:
    cluster = store(installed(CONFIGMAPS))
    cluster.after.append(another_install(cluster, DEPLOYMENTS))
    assert cover(cluster, {DEPLOYMENTS}).coverage is Coverage.COVERED
    assert len(puts(cluster)) == 1  # refused (the other write came first); read again, it covers them already


def test_a_registration_deleted_between_the_get_and_the_put_is_not_installed() -> None:
    cluster = store(installed(CONFIGMAPS))

    def uninstall(request: Request) -> None:
        if request.verb == "get":
            cluster.delete(REGISTRATION, KEY)

    cluster.after.append(uninstall)
    assert cover(cluster, {DEPLOYMENTS}).coverage is Coverage.NOT_INSTALLED  # the PUT's 404
    assert cluster.stored(KEY) is None  # and nothing made up in its place


def test_no_registration_yet_is_no_error() -> None:
    outcome = cover(store(None), {DEPLOYMENTS})
    assert outcome.coverage is Coverage.NOT_INSTALLED
    assert "kubectl gitops install" in str(outcome)


@pytest.mark.parametrize("verb", ["get", "replace"])
def test_without_rbac_it_says_so_and_goes_on(verb: str) -> None:
    cluster = store(installed())
    cluster.gates.append(forbid(verb, RBAC_NAME))
    outcome = cover(cluster, {DEPLOYMENTS})
    assert outcome.coverage is Coverage.FORBIDDEN
    assert "forbidden" in str(outcome)


def test_a_registration_without_its_scale_entry_gets_what_it_can_hold_and_says_what_not() -> None:
    live = installed(CONFIGMAPS)
    live["webhooks"] = [w for w in live["webhooks"] if w["name"] != SCALE_ENTRY]
    cluster = store(live)
    outcome = cover(cluster, {DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.INCOMPLETE, frozenset({DEPLOYMENTS}))
    assert "install" in str(outcome)
    assert ManagedResource("apps", "v1", "deployments") in registered_resources(live_of(cluster))  # its objects
    assert cover(cluster, {DEPLOYMENTS}).coverage is Coverage.INCOMPLETE
    assert len(puts(cluster)) == 1  # nothing more to add: only read


def older(*resources: ManagedResource) -> KubeObject:
    """A registration as the version before wrote it: two entries, and a condition that let every kube-system
    ServiceAccount skip the webhook by its name."""
    live = installed(*resources)
    live["webhooks"] = [w for w in live["webhooks"] if w["name"] != EVICTION_ENTRY]
    for hook in live["webhooks"]:
        hook["matchConditions"] = [
            {"name": MACHINERY_CONDITION, "expression": "!(request.userInfo.username.startsWith('system:'))"}
        ]
    return live


def test_an_older_registration_gets_the_narrow_condition_even_when_it_covers_everything() -> None:
    cluster = store(older(CONFIGMAPS))
    outcome = cover(cluster, {CONFIGMAPS})
    assert (outcome.coverage, outcome.added) == (Coverage.EXTENDED, frozenset())
    assert "controllers" in str(outcome)
    assert {c["expression"] for w in live_of(cluster)["webhooks"] for c in w["matchConditions"]} == {MACHINERY}
    assert cover(cluster, {CONFIGMAPS}).coverage is Coverage.COVERED


def test_an_older_registration_managing_pods_says_their_evictions_need_an_install() -> None:
    cluster = store(older(CONFIGMAPS))
    outcome = cover(cluster, {PODS, DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.INCOMPLETE, frozenset({PODS}))
    assert "pods v1 (and its ephemeralcontainers, eviction, resize)" in str(outcome)
    assert missing_resources(live_of(cluster), {DEPLOYMENTS, CONFIGMAPS}) == set()  # the rest was added all the same


def test_other_api_errors_propagate() -> None:
    cluster = store(installed())
    cluster.gates.append(failing(ApiError("etcdserver: request timed out", 500)))
    with pytest.raises(ApiError, match="timed out"):
        cover(cluster, {DEPLOYMENTS})


# --- what a fresh registration starts with: the Applications' status ----------------------------------------------
DEPLOYMENT_INFO = ResourceInfo("apps", "v1", "Deployment", "deployments", True, frozenset({"scale"}))


def discovery() -> FakeCluster:
    """An API server that serves Deployments and ConfigMaps (and nothing else)."""
    return FakeCluster([DEPLOYMENT_INFO, ResourceInfo("", "v1", "ConfigMap", "configmaps", True)])


def application(*resources: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "a"}, "status": {"resources": list(resources)}}


def test_inventory_resources_from_the_applications_status() -> None:
    apps = [
        application(
            {"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "web"},
            {"group": "", "kind": "ConfigMap", "namespace": "shop", "name": "a"},
            {"group": "", "kind": "ConfigMap", "namespace": "shop", "name": "b"},
        ),
        application({"group": "acme.io", "kind": "Gone", "namespace": "shop", "name": "g"}),  # no longer served
        {"metadata": {"name": "never-synced"}},
    ]
    assert inventory_resources(discovery(), apps) == {DEPLOYMENTS, CONFIGMAPS}
    assert inventory_resources(discovery(), []) == set()


def test_install_makes_an_older_registrations_every_version_the_preferred_one() -> None:
    hpa_v1 = ManagedResource("autoscaling", "v1", "horizontalpodautoscalers")
    kept = {
        ManagedResource("apps", "*", "deployments", frozenset({"scale"})),
        ManagedResource("", "*", "configmaps"),
        ManagedResource("acme.io", "*", "gizmos"),  # not served (yet): kept as it is (add-only)
        hpa_v1,  # exact already: kept as it is
    }
    assert exact_versions(discovery(), kept) == {
        DEPLOYMENTS,
        CONFIGMAPS,
        ManagedResource("acme.io", "*", "gizmos"),
        hpa_v1,
    }


# --- the webhook's keeper -------------------------------------------------------------------------------------------
def test_the_keeper_extends_the_registration_with_what_the_index_holds(caplog: pytest.LogCaptureFixture) -> None:
    keeper = RegistrationKeeper(store(installed(CONFIGMAPS)), lambda: {CONFIGMAPS, DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        first, second = keeper.ensure(), keeper.ensure()
    assert first is not None
    assert second is not None
    assert (first.coverage, second.coverage) == (Coverage.EXTENDED, Coverage.COVERED)
    assert [r.getMessage() for r in caplog.records] == [str(first)]


def unreadable() -> FakeCluster:
    """A registration this client has no RBAC to read."""
    cluster = store(installed())
    cluster.gates.append(forbid("get", RBAC_NAME))
    return cluster


@pytest.mark.parametrize(
    ("cluster", "level"),
    [(store(None), logging.INFO), (unreadable(), logging.WARNING)],
    ids=["not-installed", "forbidden"],
)
def test_the_keeper_says_once_what_keeps_it_from_its_work(
    cluster: FakeCluster, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = RegistrationKeeper(cluster, lambda: {DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        for _ in range(3):
            keeper.ensure()
    assert [r.levelno for r in caplog.records] == [level]
    assert len(cluster.made("get")) == 3  # it keeps looking: an install later is picked up


def test_the_keeper_survives_an_api_error_and_says_it_once(caplog: pytest.LogCaptureFixture) -> None:
    down = store(installed())
    down.gates.append(failing(ClusterUnreachable("the API server at https://k did not answer")))
    keeper = RegistrationKeeper(down, lambda: {DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        assert keeper.ensure() is None
        assert keeper.ensure() is None
    assert [r.getMessage() for r in caplog.records] == [
        "cannot keep the webhook registration current: the API server at https://k did not answer"
    ]


def test_a_webhook_without_a_cluster_keeps_no_registration() -> None:
    assert RegistrationKeeper(None, set).ensure() is None


# --- the sync's guard: best-effort, quiet unless -v --------------------------------------------------------------
def guard_output(cluster: FakeCluster, verbose: bool, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    guard = registration_guard(cluster, verbose)
    guard([DesiredObject(Manifest("a.yaml", 1, {}), {}, DEPLOYMENT_INFO)])
    out = capsys.readouterr()
    return out.out, out.err


@pytest.mark.parametrize("cluster", [store(None), unreadable()], ids=["not-installed", "forbidden"])
def test_a_sync_without_registration_or_rbac_goes_on_silently(
    cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert guard_output(cluster, False, capsys) == ("", "")
    assert "webhook registration" in guard_output(cluster, True, capsys)[1]


def test_a_sync_says_when_it_extended_the_registration(capsys: pytest.CaptureFixture[str]) -> None:
    cluster = store(installed(CONFIGMAPS))
    assert "now also covers deployments.apps" in guard_output(cluster, False, capsys)[1]
    assert DEPLOYMENTS in registered_resources(live_of(cluster))
    assert guard_output(cluster, False, capsys) == ("", "")  # covered now: nothing to say


def test_a_sync_is_not_stopped_by_an_unreachable_registration(capsys: pytest.CaptureFixture[str]) -> None:
    down = store(installed())
    down.gates.append(failing(ApiError("etcdserver: request timed out", 500)))
    assert guard_output(down, False, capsys) == ("", "")
    assert "not checked: etcdserver: request timed out" in guard_output(down, True, capsys)[1]
