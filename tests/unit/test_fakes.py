"""The fake API server answers as the real one does, for what the unit tests ask of it (tests/fakes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.errors import ApiError
from engine.core.objects import KubeObject, ObjectKey

from ..fakes import CONFIGMAPS, CRDS, DEPLOYMENTS, NAMESPACES, WEBHOOK_CONFIGURATIONS, FakeCluster, forbid, namespace
from .stored import k

CM = ObjectKey("", "ConfigMap", "shop", "settings")


def configmap(**data: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": data,
    }


def deployment(*containers: dict[str, Any], replicas: int | None = None) -> KubeObject:
    spec: dict[str, Any] = {"template": {"spec": {"containers": list(containers)}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }


def fields(obj: KubeObject, manager: str) -> dict[str, Any]:
    """What `manager` owns of `obj` ({} when nothing)."""
    entry: dict[str, Any] = next((e for e in obj["metadata"].get("managedFields", []) if e["manager"] == manager), {})
    found: dict[str, Any] = entry.get("fieldsV1", {})
    return found


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster(objects=[namespace("shop")])


def test_a_create_stores_the_object_with_the_servers_metadata(cluster: FakeCluster) -> None:
    applied = cluster.apply(CONFIGMAPS, configmap(a="1"))
    assert applied.created
    metadata = applied.obj["metadata"]
    assert {"uid", "resourceVersion", "creationTimestamp"} <= set(metadata)
    assert fields(applied.obj, "kubectl-gitops") == {"f:data": {"f:a": {}}}  # no identity in the field set
    assert cluster.get(CONFIGMAPS, "shop", "settings") == applied.obj


def test_resource_versions_rise_with_every_change_and_only_then(cluster: FakeCluster) -> None:
    first = cluster.apply(CONFIGMAPS, configmap(a="1")).obj["metadata"]["resourceVersion"]
    again = cluster.apply(CONFIGMAPS, configmap(a="1"))
    assert not again.created
    assert again.obj["metadata"]["resourceVersion"] == first  # a no-op writes nothing
    second = cluster.apply(CONFIGMAPS, configmap(a="2")).obj["metadata"]["resourceVersion"]
    assert int(second) > int(first)


def test_a_dry_run_stores_nothing(cluster: FakeCluster) -> None:
    answered = cluster.apply(CONFIGMAPS, configmap(a="1"), dry_run=True)
    assert answered.created
    assert answered.obj["data"] == {"a": "1"}
    assert "resourceVersion" not in answered.obj["metadata"]
    assert cluster.get(CONFIGMAPS, "shop", "settings") is None
    assert [r.dry_run for r in cluster.made("apply")] == [True]


def test_a_namespaced_object_needs_its_namespace(cluster: FakeCluster) -> None:
    with pytest.raises(ApiError) as raised:
        cluster.apply(CONFIGMAPS, {**configmap(), "metadata": {"name": "x", "namespace": "elsewhere"}}, dry_run=True)
    assert (raised.value.status, str(raised.value)) == (404, 'namespaces "elsewhere" not found')


def test_apply_merges_what_others_set_and_drops_what_it_no_longer_applies(cluster: FakeCluster) -> None:
    cluster.apply(DEPLOYMENTS, deployment({"name": "app", "image": "a:1"}, {"name": "debug", "image": "b"}))
    live = cluster.get(DEPLOYMENTS, "shop", "web")
    assert live is not None
    containers = live["spec"]["template"]["spec"]["containers"]
    containers[0]["env"] = [{"name": "MODE", "value": "hand"}]
    live["spec"]["replicas"] = 5
    cluster.replace(DEPLOYMENTS, live, field_manager="kubectl-edit")
    applied = cluster.apply(DEPLOYMENTS, deployment({"name": "app", "image": "a:2"})).obj
    # The sidecar only we applied is gone; what kubectl-edit set stays, and kubectl-edit still owns it.
    assert applied["spec"]["replicas"] == 5
    assert applied["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "a:2", "env": [{"name": "MODE", "value": "hand"}]}
    ]
    app = k(name="app")
    assert fields(applied, "kubectl-edit") == {
        "f:spec": {
            "f:replicas": {},
            "f:template": {
                "f:spec": {
                    "f:containers": {app: {"f:env": {".": {}, k(name="MODE"): {".": {}, "f:name": {}, "f:value": {}}}}}
                }
            },
        }
    }
    assert fields(applied, "kubectl-gitops") == {
        "f:spec": {"f:template": {"f:spec": {"f:containers": {app: {".": {}, "f:name": {}, "f:image": {}}}}}}
    }


def test_apply_without_force_refuses_a_field_another_manager_owns(cluster: FakeCluster) -> None:
    cluster.add(deployment({"name": "app", "image": "a:1"}, replicas=2), manager="kubectl-edit")
    with pytest.raises(ApiError) as raised:
        cluster.apply(DEPLOYMENTS, deployment({"name": "app", "image": "a:1"}, replicas=3), force=False)
    assert raised.value.status == 409
    assert 'conflict with "kubectl-edit": .spec.replicas' in str(raised.value)
    taken = cluster.apply(DEPLOYMENTS, deployment({"name": "app", "image": "a:1"}, replicas=3)).obj
    assert fields(taken, "kubectl-edit") == {}  # forced: we own all it had set


def test_apply_at_a_resource_version_is_a_precondition(cluster: FakeCluster) -> None:
    version = cluster.apply(CONFIGMAPS, configmap(a="1")).obj["metadata"]["resourceVersion"]
    cluster.apply(CONFIGMAPS, configmap(a="2"))
    stale = configmap(a="3")
    stale["metadata"]["resourceVersion"] = version
    with pytest.raises(ApiError) as raised:
        cluster.apply(CONFIGMAPS, stale)
    assert raised.value.status == 409


def test_a_put_needs_the_object_and_its_current_version(cluster: FakeCluster) -> None:
    with pytest.raises(ApiError) as raised:
        cluster.replace(CONFIGMAPS, configmap(a="1"))
    assert (raised.value.status, str(raised.value)) == (404, 'configmaps "settings" not found')
    live = cluster.apply(CONFIGMAPS, configmap(a="1")).obj
    cluster.replace(CONFIGMAPS, {**live, "data": {"a": "2"}})
    with pytest.raises(ApiError) as raised:
        cluster.replace(CONFIGMAPS, {**live, "data": {"a": "3"}})  # read before the last write
    assert raised.value.status == 409
    assert "the object has been modified" in str(raised.value)
    unconditional = configmap(a="4")  # no resourceVersion: a ConfigMap takes it
    assert cluster.replace(CONFIGMAPS, unconditional)["data"] == {"a": "4"}


def test_a_webhook_registration_is_never_put_without_a_resource_version() -> None:
    """Its update strategy refuses an unconditional update: 422, not 409 (nothing to retry)."""
    registration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "hook"},
        "webhooks": [],
    }
    cluster = FakeCluster(objects=[registration])
    with pytest.raises(ApiError) as raised:
        cluster.replace(WEBHOOK_CONFIGURATIONS, registration)
    assert raised.value.status == 422
    assert "metadata.resourceVersion: Invalid value: 0: must be specified for an update" in str(raised.value)


def test_a_put_keeps_the_servers_fields_and_checks_the_uid(cluster: FakeCluster) -> None:
    live = cluster.apply(CONFIGMAPS, configmap(a="1")).obj
    put = cluster.replace(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": live["metadata"]})
    assert put["metadata"]["uid"] == live["metadata"]["uid"]
    assert "data" not in put  # the whole object: what the body leaves out is gone
    with pytest.raises(ApiError) as raised:
        cluster.replace(CONFIGMAPS, {**put, "metadata": {**put["metadata"], "uid": "another"}})
    assert raised.value.status == 409


def test_a_json_patch_tests_then_changes(cluster: FakeCluster) -> None:
    live = cluster.apply(CONFIGMAPS, configmap(a="1", b="2")).obj
    version = live["metadata"]["resourceVersion"]
    patched = cluster.json_patch(
        CONFIGMAPS,
        CM,
        [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, {"op": "remove", "path": "/data/b"}],
    )
    assert patched["data"] == {"a": "1"}
    with pytest.raises(ApiError) as raised:
        cluster.json_patch(CONFIGMAPS, CM, [{"op": "test", "path": "/metadata/resourceVersion", "value": version}])
    assert raised.value.status == 422


def test_delete_with_a_uid_precondition_and_finalizers(cluster: FakeCluster) -> None:
    live = cluster.apply(CONFIGMAPS, configmap(a="1")).obj
    with pytest.raises(ApiError) as raised:
        cluster.delete(CONFIGMAPS, CM, uid="not-its-uid")
    assert raised.value.status == 409
    assert cluster.delete(CONFIGMAPS, CM, uid=live["metadata"]["uid"])
    assert not cluster.delete(CONFIGMAPS, CM)  # gone: nothing to delete
    kept = configmap()
    kept["metadata"]["finalizers"] = ["example.com/keep"]
    cluster.add(kept)
    assert cluster.delete(CONFIGMAPS, CM)
    found = cluster.get(CONFIGMAPS, "shop", "settings")
    assert found is not None
    assert found["metadata"]["deletionTimestamp"]


def test_a_crd_serves_its_kind_once_discovery_is_read_again(cluster: FakeCluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.acme.io"},
        "spec": {
            "group": "acme.io",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    assert cluster.resource_for("acme.io/v1", "Widget") is None
    cluster.apply(CRDS, crd)
    stored = cluster.get(CRDS, "", "widgets.acme.io")
    assert stored is not None
    assert {"type": "Established", "status": "True"} in stored["status"]["conditions"]
    assert cluster.resource_for("acme.io/v1", "Widget") is None  # the client's discovery is as it read it
    cluster.refresh_discovery()
    widget = cluster.resource_for("acme.io/v1", "Widget")
    assert widget is not None
    assert (widget.plural, widget.namespaced, widget.subresources) == ("widgets", True, frozenset({"status"}))


def test_list_by_label_selector(cluster: FakeCluster) -> None:
    for name, labels in [("a", {"app": "web"}), ("b", {"app": "db"}), ("c", {})]:
        cluster.add(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop", "labels": labels}}
        )

    def names(selector: str) -> list[str]:
        return [o["metadata"]["name"] for o in cluster.list_objects(CONFIGMAPS, label_selector=selector)]

    assert names("app=web") == ["a"]
    assert names("app!=web") == ["b", "c"]
    assert names("app") == ["a", "b"]
    assert names("!app") == ["c"]
    assert names("") == ["a", "b", "c"]


def test_gates_refuse_and_are_logged(cluster: FakeCluster) -> None:
    cluster.gates.append(forbid("get", "namespaces"))
    with pytest.raises(ApiError) as raised:
        cluster.get(NAMESPACES, "", "shop")
    assert raised.value.status == 403
    assert [r.verb for r in cluster.requests] == ["get"]


def test_validators_refuse_what_a_write_would_store(cluster: FakeCluster) -> None:
    cluster.validators.append(lambda o: "data.a: Invalid value" if (o.get("data") or {}).get("a") == "bad" else "")
    with pytest.raises(ApiError) as raised:
        cluster.apply(CONFIGMAPS, configmap(a="bad"), dry_run=True)
    assert (raised.value.status, str(raised.value)) == (422, 'ConfigMap "settings" is invalid: data.a: Invalid value')
