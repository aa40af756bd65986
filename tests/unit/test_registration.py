"""Keeping the webhook's registration covering what Applications manage, against a fake API server."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import pytest

from engine.compare import DesiredObject
from engine.core.errors import ApiError, GitOpsError
from engine.core.manifests import Manifest
from engine.core.objects import KubeObject
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

DEPLOYMENTS = ManagedResource("apps", "v1", "deployments", frozenset({"scale"}))
CONFIGMAPS = ManagedResource("", "v1", "configmaps")
ROLES = ManagedResource("rbac.authorization.k8s.io", "v1", "roles")
PODS = ManagedResource("", "v1", "pods", frozenset({"eviction", "ephemeralcontainers", "resize"}))


class FakeRegistrations:
    """The API server's validatingwebhookconfigurations: GET by name, PUT guarded by the resourceVersion."""

    def __init__(self, live: KubeObject | None = None, *, forbidden: bool = False) -> None:
        self.live = live
        self.forbidden = forbidden
        self.version = 1
        self.gets = 0
        self.puts: list[KubeObject] = []
        self.sneak_in: list[ManagedResource] = []  # another writer adds these between our GET and our PUT, once each

    def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
        assert (info, namespace, name) == (REGISTRATION, "", NAME)
        self.gets += 1
        if self.forbidden:
            raise ApiError("validatingwebhookconfigurations is forbidden: User cannot get", 403, "Forbidden")
        if self.live is None:
            return None
        out: KubeObject = json.loads(json.dumps(self.live))
        out["metadata"]["resourceVersion"] = str(self.version)
        if self.sneak_in:
            self._change(self.sneak_in.pop(0))
        return out

    def _change(self, resource: ManagedResource) -> None:
        assert self.live is not None
        now = registered_resources(self.live) | {resource}
        self.live = webhook_configuration(ca_bundle=b"ca", url="https://hook/validate", resources=now)
        self.version += 1

    def replace(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False) -> KubeObject:
        assert info == REGISTRATION
        self.puts.append(obj)
        if obj["metadata"].get("resourceVersion") != str(self.version):
            raise ApiError("the object has been modified", 409, "Conflict")
        self.live = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
        self.version += 1
        return obj


def installed(*resources: ManagedResource) -> KubeObject:
    return webhook_configuration(ca_bundle=b"ca", url="https://hook/validate", resources=resources)


def test_nothing_to_cover_asks_nothing() -> None:
    store = FakeRegistrations(installed())
    assert cover(store, set()).coverage is Coverage.COVERED
    assert store.gets == 0


def test_a_covering_registration_is_only_read() -> None:
    store = FakeRegistrations(installed(CONFIGMAPS, DEPLOYMENTS, ROLES))
    assert cover(store, {CONFIGMAPS, DEPLOYMENTS}).coverage is Coverage.COVERED
    assert (store.gets, store.puts) == (1, [])


def test_what_is_missing_is_added_with_the_resource_version_read() -> None:
    store = FakeRegistrations(installed(CONFIGMAPS))
    outcome = cover(store, {CONFIGMAPS, DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.EXTENDED, {DEPLOYMENTS})
    assert store.puts[0]["metadata"]["resourceVersion"] == "1"
    assert store.live is not None
    assert registered_resources(store.live) == {CONFIGMAPS, DEPLOYMENTS}
    assert "deployments.apps v1 (and its scale)" in str(outcome)


def test_add_only_a_resource_nobody_manages_any_more_stays() -> None:
    store = FakeRegistrations(installed(CONFIGMAPS, ROLES))
    cover(store, {DEPLOYMENTS})
    assert store.live is not None
    assert registered_resources(store.live) == {CONFIGMAPS, ROLES, DEPLOYMENTS}


def test_a_conflict_is_read_again_and_keeps_what_the_other_writer_added() -> None:
    store = FakeRegistrations(installed(CONFIGMAPS))
    store.sneak_in = [ROLES]
    assert cover(store, {DEPLOYMENTS}).coverage is Coverage.EXTENDED
    assert [p["metadata"]["resourceVersion"] for p in store.puts] == ["1", "2"]
    assert store.live is not None
    assert registered_resources(store.live) == {CONFIGMAPS, ROLES, DEPLOYMENTS}


def test_endless_conflicts_end_in_an_error() -> None:
    store = FakeRegistrations(installed(CONFIGMAPS))
    store.sneak_in = [ManagedResource("", "v1", f"r{i}") for i in range(CONFLICT_ATTEMPTS)]
    with pytest.raises(GitOpsError, match="changed under every one of 5 updates"):
        cover(store, {DEPLOYMENTS})


def test_no_registration_yet_is_no_error() -> None:
    store = FakeRegistrations(None)
    outcome = cover(store, {DEPLOYMENTS})
    assert outcome.coverage is Coverage.NOT_INSTALLED
    assert "kubectl gitops install" in str(outcome)


def test_without_rbac_it_says_so_and_goes_on() -> None:
    outcome = cover(FakeRegistrations(installed(), forbidden=True), {DEPLOYMENTS})
    assert outcome.coverage is Coverage.FORBIDDEN
    assert "forbidden" in str(outcome)


def test_a_registration_without_its_scale_entry_gets_what_it_can_hold_and_says_what_not() -> None:
    live = installed(CONFIGMAPS)
    live["webhooks"] = [w for w in live["webhooks"] if w["name"] != SCALE_ENTRY]
    store = FakeRegistrations(live)
    outcome = cover(store, {DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.INCOMPLETE, {DEPLOYMENTS})
    assert "install" in str(outcome)
    assert store.live is not None
    assert ManagedResource("apps", "v1", "deployments") in registered_resources(store.live)  # its objects at least
    assert cover(store, {DEPLOYMENTS}).coverage is Coverage.INCOMPLETE
    assert len(store.puts) == 1  # nothing more to add: only read


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
    store = FakeRegistrations(older(CONFIGMAPS))
    outcome = cover(store, {CONFIGMAPS})
    assert (outcome.coverage, outcome.added) == (Coverage.EXTENDED, set())
    assert "controllers" in str(outcome)
    assert store.live is not None
    assert {c["expression"] for w in store.live["webhooks"] for c in w["matchConditions"]} == {MACHINERY}
    assert cover(store, {CONFIGMAPS}).coverage is Coverage.COVERED


def test_an_older_registration_managing_pods_says_their_evictions_need_an_install() -> None:
    store = FakeRegistrations(older(CONFIGMAPS))
    outcome = cover(store, {PODS, DEPLOYMENTS})
    assert (outcome.coverage, outcome.added) == (Coverage.INCOMPLETE, {PODS})
    assert "pods v1 (and its ephemeralcontainers, eviction, resize)" in str(outcome)
    assert store.live is not None
    assert missing_resources(store.live, {DEPLOYMENTS, CONFIGMAPS}) == set()  # the rest was added all the same


def test_other_api_errors_propagate() -> None:
    class Broken(FakeRegistrations):
        def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
            raise ApiError("etcdserver: request timed out", 500)

    with pytest.raises(ApiError, match="timed out"):
        cover(Broken(), {DEPLOYMENTS})


# --- what a fresh registration starts with: the Applications' status ----------------------------------------------
DEPLOYMENT_INFO = ResourceInfo("apps", "v1", "Deployment", "deployments", True, frozenset({"scale"}))


class Discovery:
    served: ClassVar[dict[tuple[str, str], ResourceInfo]] = {
        ("apps", "Deployment"): DEPLOYMENT_INFO,
        ("", "ConfigMap"): ResourceInfo("", "v1", "ConfigMap", "configmaps", True),
    }

    def preferred(self, group: str, kind: str) -> ResourceInfo | None:
        return self.served.get((group, kind))

    def preferred_resource(self, group: str, plural: str) -> ResourceInfo | None:
        return next((i for i in self.served.values() if (i.group, i.plural) == (group, plural)), None)


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
    assert inventory_resources(Discovery(), apps) == {DEPLOYMENTS, CONFIGMAPS}
    assert inventory_resources(Discovery(), []) == set()


def test_install_makes_an_older_registrations_every_version_the_preferred_one() -> None:
    hpa_v1 = ManagedResource("autoscaling", "v1", "horizontalpodautoscalers")
    kept = {
        ManagedResource("apps", "*", "deployments", frozenset({"scale"})),
        ManagedResource("", "*", "configmaps"),
        ManagedResource("acme.io", "*", "gizmos"),  # not served (yet): kept as it is (add-only)
        hpa_v1,  # exact already: kept as it is
    }
    assert exact_versions(Discovery(), kept) == {
        DEPLOYMENTS,
        CONFIGMAPS,
        ManagedResource("acme.io", "*", "gizmos"),
        hpa_v1,
    }


# --- the webhook's keeper -------------------------------------------------------------------------------------------
def test_the_keeper_extends_the_registration_with_what_the_index_holds(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeRegistrations(installed(CONFIGMAPS))
    keeper = RegistrationKeeper(store, lambda: {CONFIGMAPS, DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        first, second = keeper.ensure(), keeper.ensure()
    assert first is not None
    assert second is not None
    assert (first.coverage, second.coverage) == (Coverage.EXTENDED, Coverage.COVERED)
    assert [r.getMessage() for r in caplog.records] == [str(first)]


@pytest.mark.parametrize(
    ("store", "level"),
    [(FakeRegistrations(None), logging.INFO), (FakeRegistrations(installed(), forbidden=True), logging.WARNING)],
    ids=["not-installed", "forbidden"],
)
def test_the_keeper_says_once_what_keeps_it_from_its_work(
    store: FakeRegistrations, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = RegistrationKeeper(store, lambda: {DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        for _ in range(3):
            keeper.ensure()
    assert [r.levelno for r in caplog.records] == [level]
    assert store.gets == 3  # it keeps looking: an install later is picked up


def test_the_keeper_survives_an_api_error_and_says_it_once(caplog: pytest.LogCaptureFixture) -> None:
    class Down(FakeRegistrations):
        def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
            raise GitOpsError("the API server at https://k did not answer")

    keeper = RegistrationKeeper(Down(), lambda: {DEPLOYMENTS})
    with caplog.at_level(logging.INFO, logger="webhook.registration"):
        assert keeper.ensure() is None
        assert keeper.ensure() is None
    assert [r.getMessage() for r in caplog.records] == [
        "cannot keep the webhook registration current: the API server at https://k did not answer"
    ]


def test_a_source_without_a_cluster_has_no_registration_to_keep() -> None:
    assert RegistrationKeeper.of(object()).ensure() is None


# --- the sync's guard: best-effort, quiet unless -v --------------------------------------------------------------
def guard_output(store: FakeRegistrations, verbose: bool, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    guard = registration_guard(store, verbose)  # type: ignore[arg-type]
    guard([DesiredObject(Manifest("a.yaml", 1, {}), {}, DEPLOYMENT_INFO)])
    out = capsys.readouterr()
    return out.out, out.err


@pytest.mark.parametrize("store", [FakeRegistrations(None), FakeRegistrations(installed(), forbidden=True)])
def test_a_sync_without_registration_or_rbac_goes_on_silently(
    store: FakeRegistrations, capsys: pytest.CaptureFixture[str]
) -> None:
    assert guard_output(store, False, capsys) == ("", "")
    assert "webhook registration" in guard_output(store, True, capsys)[1]


def test_a_sync_says_when_it_extended_the_registration(capsys: pytest.CaptureFixture[str]) -> None:
    store = FakeRegistrations(installed(CONFIGMAPS))
    assert "now also covers deployments.apps" in guard_output(store, False, capsys)[1]
    assert store.live is not None
    assert DEPLOYMENTS in registered_resources(store.live)
    assert guard_output(store, False, capsys) == ("", "")  # covered now: nothing to say


def test_a_sync_is_not_stopped_by_an_unreachable_registration(capsys: pytest.CaptureFixture[str]) -> None:
    class Down(FakeRegistrations):
        def get(self, info: ResourceInfo, namespace: str, name: str) -> KubeObject | None:
            raise ApiError("etcdserver: request timed out", 500)

    assert guard_output(Down(), False, capsys) == ("", "")
    assert "not checked: etcdserver: request timed out" in guard_output(Down(), True, capsys)[1]
