"""engine.core.fingerprint: what moves a fingerprint (so that no drift hides behind one) and what does not (so that a
controller writing a Deployment's status does not send every diff back to the API server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from engine.core.drift import DriftPolicy, IgnoreRule
from engine.core.fingerprint import LENGTH, fingerprint, from_blob, kept_fingerprint, to_blob
from engine.core.objects import REVISION_ANNOTATION, AppRef, ObjectKey

SECRET = b"k" * 32
APP = AppRef("gitops-system", "web")
POLICY = DriftPolicy()
DEPLOYMENT = ObjectKey("apps", "Deployment", "team", "web")
CONFIGMAP = ObjectKey("", "ConfigMap", "team", "settings")


def desired(kind: str = "Deployment") -> dict[str, Any]:
    meta = {"name": "web", "namespace": "team", "annotations": {REVISION_ANNOTATION: "a" * 40}}
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"mode": "prod"}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": 1}}


def live(kind: str = "Deployment") -> dict[str, Any]:
    obj = desired(kind)
    obj["metadata"] = {
        **obj["metadata"],
        "uid": "u-1",
        "resourceVersion": "100",
        "generation": 1,
        "managedFields": [
            {"manager": "kubectl-gitops", "operation": "Apply", "time": "t1", "fieldsV1": {"f:spec": {}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "t1"},
        ],
    }
    return obj


def fp(key: ObjectKey, want: dict[str, Any], have: dict[str, Any], policy: DriftPolicy = POLICY) -> str:
    return fingerprint(SECRET, APP, key, want, have, policy)


def test_a_deployment_s_status_written_by_its_controller_keeps_the_fingerprint() -> None:
    before = fp(DEPLOYMENT, desired(), live())
    later = live()
    later["metadata"]["resourceVersion"] = "250"
    later["metadata"]["managedFields"][1]["time"] = "t9"
    later["metadata"]["managedFields"][0]["time"] = "t9"
    later["status"] = {"readyReplicas": 1}
    assert fp(DEPLOYMENT, desired(), later) == before


def test_a_configmap_is_bound_to_its_resource_version() -> None:
    before = fp(CONFIGMAP, desired("ConfigMap"), live("ConfigMap"))
    later = live("ConfigMap")
    later["metadata"]["resourceVersion"] = "101"
    assert fp(CONFIGMAP, desired("ConfigMap"), later) != before


def test_a_new_commit_that_leaves_the_object_as_it_was_keeps_the_fingerprint() -> None:
    moved = desired()
    moved["metadata"]["annotations"] = {REVISION_ANNOTATION: "b" * 40}
    assert fp(DEPLOYMENT, moved, live()) == fp(DEPLOYMENT, desired(), live())


def _set(obj: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        obj = obj[int(p)] if p.isdigit() else obj.setdefault(p, {})
    obj[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(
    ("side", "path", "value"),
    [
        pytest.param("live", "metadata.uid", "u-2", id="recreated-new-uid"),
        pytest.param("live", "metadata.generation", 2, id="spec-changed"),
        pytest.param("live", "metadata.labels", {"team": "x"}, id="label-added"),
        pytest.param("live", "metadata.annotations", {}, id="annotation-gone"),
        pytest.param("live", "metadata.ownerReferences", [{"uid": "x"}], id="owner-added"),
        pytest.param("live", "metadata.finalizers", ["x/y"], id="finalizer-added"),
        pytest.param("live", "metadata.deletionTimestamp", "now", id="being-deleted"),
        # Same values, but another manager now owns a field: "added" drift without a new generation.
        pytest.param("live", "metadata.managedFields.0.manager", "alice", id="same-value-other-manager"),
        pytest.param("live", "metadata.managedFields.0.fieldsV1", {"f:spec": {"f:x": {}}}, id="fields-owned-moved"),
        pytest.param("desired", "spec.replicas", 2, id="git-changed"),
        pytest.param("desired", "metadata.labels", {"team": "x"}, id="git-label"),
    ],
)
def test_every_change_that_can_be_drift_moves_a_deployment_s_fingerprint(side: str, path: str, value: Any) -> None:
    want, have = desired(), live()
    before = fp(DEPLOYMENT, want, have)
    _set(want if side == "desired" else have, path, value)
    assert fp(DEPLOYMENT, want, have) != before


def test_the_fingerprint_is_bound_to_the_application_the_object_and_the_policy() -> None:
    before = fp(DEPLOYMENT, desired(), live())
    assert fingerprint(SECRET, AppRef("gitops-system", "other"), DEPLOYMENT, desired(), live(), POLICY) != before
    other = ObjectKey("apps", "Deployment", "team", "web2")
    assert fp(other, desired(), live()) != before
    assert fp(DEPLOYMENT, desired(), live(), DriftPolicy(autoscaled=True)) != before
    ignoring = DriftPolicy(ignore=(*POLICY.ignore, IgnoreRule("apps", "Deployment", ("/spec/replicas",))))
    assert fp(DEPLOYMENT, desired(), live(), ignoring) != before


def test_without_the_key_a_fingerprint_cannot_be_made() -> None:
    good = fp(DEPLOYMENT, desired(), live())
    forged = fingerprint(b"\0" * 32, APP, DEPLOYMENT, desired(), live(), POLICY)
    assert forged != good
    assert not kept_fingerprint(SECRET, frozenset({forged}), APP, DEPLOYMENT, desired(), live(), POLICY)
    assert kept_fingerprint(SECRET, frozenset({good}), APP, DEPLOYMENT, desired(), live(), POLICY)
    # no key: none trusted
    assert not kept_fingerprint(None, frozenset({good}), APP, DEPLOYMENT, desired(), live(), POLICY)
    assert not kept_fingerprint(SECRET, frozenset({good}), APP, DEPLOYMENT, desired(), None, POLICY)


def test_the_kept_fingerprint_is_the_one_found_or_nothing() -> None:
    good = fp(DEPLOYMENT, desired(), live())
    assert kept_fingerprint(SECRET, frozenset({good}), APP, DEPLOYMENT, desired(), live(), POLICY) == good
    changed = {**live(), "metadata": {**live()["metadata"], "generation": 2}}
    assert kept_fingerprint(SECRET, frozenset({good}), APP, DEPLOYMENT, desired(), changed, POLICY) == ""
    assert kept_fingerprint(None, frozenset({good}), APP, DEPLOYMENT, desired(), live(), POLICY) == ""
    assert kept_fingerprint(SECRET, frozenset(), APP, DEPLOYMENT, desired(), live(), POLICY) == ""


def test_a_secret_value_changed_in_git_moves_the_fingerprint() -> None:
    key = ObjectKey("", "Secret", "team", "creds")
    want = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"pw": "YQ=="}}
    have = {**copy.deepcopy(want), "metadata": {"name": "creds", "uid": "u", "resourceVersion": "5"}}
    before = fp(key, want, have)
    want["data"] = {"pw": "Yg=="}
    assert fp(key, want, have) != before


def test_kept_fingerprints_round_trip_as_sixteen_bytes_each() -> None:
    kept = {fp(DEPLOYMENT, desired(), live()), fp(CONFIGMAP, desired("ConfigMap"), live("ConfigMap"))}
    blob = to_blob([*kept, "not-a-fingerprint"])
    assert len(blob) == 2 * LENGTH // 2
    assert from_blob(blob) == kept
    assert from_blob(blob + b"\0\1") == kept  # a damaged tail is left out
