"""The fake API server of the unit tests (tests/fakes.py) against the real one: each answer the unit tests rest on,
asked of both, must be the same."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.errors import ApiError
from engine.core.objects import KubeObject, ObjectKey
from engine.core.resources import ResourceInfo

from ..conftest import Kubectl
from ..fakes import CONFIGMAPS, DEPLOYMENTS, WEBHOOK_CONFIGURATIONS, FakeCluster
from ..fakes import namespace as ns_object

pytestmark = pytest.mark.cluster

Server = FakeCluster | KubeClient


@pytest.fixture(scope="module")
def real(kubectl: Kubectl) -> KubeClient:
    return KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("admin"))))


@pytest.fixture(params=["fake", "real"])
def server(request: pytest.FixtureRequest, real: KubeClient, namespace: str) -> Server:
    return FakeCluster(objects=[ns_object(namespace)]) if request.param == "fake" else real


def put_as(server: Server, info: ResourceInfo, obj: KubeObject, manager: str) -> KubeObject:
    """A PUT by another client (its own field manager)."""
    if isinstance(server, FakeCluster):
        return server.replace(info, obj, field_manager=manager)
    path = info.path(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
    found: KubeObject = server.request("PUT", path, body=obj, params={"fieldManager": manager})
    return found


def create_as(server: Server, info: ResourceInfo, obj: KubeObject, manager: str) -> KubeObject:
    if isinstance(server, FakeCluster):
        return server.create(info, obj, field_manager=manager)
    path = info.path(obj["metadata"].get("namespace", ""))
    found: KubeObject = server.request("POST", path, body=obj, params={"fieldManager": manager})
    return found


def configmap(ns: str, **data: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}, "data": data}


def owned(obj: KubeObject, manager: str) -> dict[str, Any]:
    entries = [e for e in obj["metadata"].get("managedFields", []) if e["manager"] == manager]
    return entries[0]["fieldsV1"] if entries else {}


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value.status, str(raised.value)


def test_a_create_and_its_field_set(server: Server, namespace: str) -> None:
    applied = server.apply(CONFIGMAPS, configmap(namespace, a="1"))
    assert applied.created
    assert {"uid", "resourceVersion", "creationTimestamp"} <= set(applied.obj["metadata"])
    assert owned(applied.obj, "kubectl-gitops") == {"f:data": {"f:a": {}}}


def test_resource_versions_rise_only_with_a_change(server: Server, namespace: str) -> None:
    first = server.apply(CONFIGMAPS, configmap(namespace, a="1")).obj["metadata"]["resourceVersion"]
    again = server.apply(CONFIGMAPS, configmap(namespace, a="1"))
    assert (again.created, again.obj["metadata"]["resourceVersion"]) == (False, first)
    second = server.apply(CONFIGMAPS, configmap(namespace, a="2")).obj["metadata"]["resourceVersion"]
    assert int(second) > int(first)


def test_a_dry_run_create(server: Server, namespace: str) -> None:
    answered = server.apply(CONFIGMAPS, configmap(namespace, a="1"), dry_run=True)
    assert answered.created
    assert answered.obj["data"] == {"a": "1"}
    assert "resourceVersion" not in answered.obj["metadata"]
    assert server.get(CONFIGMAPS, namespace, "settings") is None


def test_no_namespace(server: Server, namespace: str) -> None:
    missing = f"{namespace}-not-there"
    status, message = refusal(lambda: server.apply(CONFIGMAPS, configmap(missing), dry_run=True))
    assert (status, message) == (404, f'namespaces "{missing}" not found')


def test_apply_merges_and_drops_what_it_no_longer_applies(server: Server, namespace: str) -> None:
    web: KubeObject = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "debug", "image": "b"}]},
            },
        },
    }
    live = server.apply(DEPLOYMENTS, web).obj
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "hand"}]
    live["spec"]["replicas"] = 5
    put_as(server, DEPLOYMENTS, live, "kubectl-edit")
    again = copy.deepcopy(web)
    again["spec"]["template"]["spec"]["containers"] = [{"name": "app", "image": "a:2"}]
    applied = server.apply(DEPLOYMENTS, again).obj
    (container,) = applied["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"], container["env"]) == (
        "app",
        "a:2",
        [{"name": "MODE", "value": "hand"}],
    )
    assert applied["spec"]["replicas"] == 5
    edit = owned(applied, "kubectl-edit")
    assert "f:replicas" in edit["f:spec"]
    app = 'k:{"name":"app"}'
    assert edit["f:spec"]["f:template"]["f:spec"]["f:containers"][app]["f:env"] == {
        ".": {},
        'k:{"name":"MODE"}': {".": {}, "f:name": {}, "f:value": {}},
    }
    ours = owned(applied, "kubectl-gitops")["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert list(ours) == [app]


def test_puts(server: Server, namespace: str) -> None:
    assert refusal(lambda: server.replace(CONFIGMAPS, configmap(namespace, a="1"))) == (
        404,
        'configmaps "settings" not found',
    )
    live = server.apply(CONFIGMAPS, configmap(namespace, a="1")).obj
    server.replace(CONFIGMAPS, {**live, "data": {"a": "2"}})
    status, message = refusal(lambda: server.replace(CONFIGMAPS, {**live, "data": {"a": "3"}}))
    assert status == 409
    assert "the object has been modified" in message
    assert server.replace(CONFIGMAPS, configmap(namespace, a="4"))["data"] == {"a": "4"}  # unconditional
    current = server.get(CONFIGMAPS, namespace, "settings")
    assert current is not None
    other = {**current, "metadata": {**current["metadata"], "uid": "00000000-0000-4000-8000-0000000000ff"}}
    assert refusal(lambda: server.replace(CONFIGMAPS, other))[0] == 409


def test_a_webhook_registration_needs_a_resource_version(server: Server, namespace: str) -> None:
    registration: KubeObject = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"fake-contract-{namespace}"},
        "webhooks": [],
    }
    name = registration["metadata"]["name"]
    create_as(server, WEBHOOK_CONFIGURATIONS, registration, "kubectl-create")
    try:
        status, message = refusal(lambda: server.replace(WEBHOOK_CONFIGURATIONS, registration))
        assert status == 422
        assert message.startswith(f'validatingwebhookconfigurations.admissionregistration.k8s.io "{name}" is invalid')
        assert "metadata.resourceVersion: Invalid value: 0: must be specified for an update" in message
    finally:
        key = ObjectKey(WEBHOOK_CONFIGURATIONS.group, WEBHOOK_CONFIGURATIONS.kind, "", registration["metadata"]["name"])
        server.delete(WEBHOOK_CONFIGURATIONS, key)


def test_a_failed_json_patch_test(server: Server, namespace: str) -> None:
    live = server.apply(CONFIGMAPS, configmap(namespace, a="1", b="2")).obj
    key = ObjectKey("", "ConfigMap", namespace, "settings")
    version = live["metadata"]["resourceVersion"]
    test = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
    assert server.json_patch(CONFIGMAPS, key, [test, {"op": "remove", "path": "/data/b"}])["data"] == {"a": "1"}
    assert refusal(lambda: server.json_patch(CONFIGMAPS, key, [test]))[0] == 422


def test_deletes(server: Server, namespace: str) -> None:
    live = server.apply(CONFIGMAPS, configmap(namespace, a="1")).obj
    key = ObjectKey("", "ConfigMap", namespace, "settings")
    assert refusal(lambda: server.delete(CONFIGMAPS, key, uid="00000000-0000-4000-8000-0000000000ff"))[0] == 409
    assert server.delete(CONFIGMAPS, key, uid=live["metadata"]["uid"])
    assert not server.delete(CONFIGMAPS, key)
    kept = configmap(namespace)
    kept["metadata"]["finalizers"] = ["example.com/keep"]
    create_as(server, CONFIGMAPS, kept, "kubectl-create")
    assert server.delete(CONFIGMAPS, key)
    found = server.get(CONFIGMAPS, namespace, "settings")
    assert found is not None
    assert found["metadata"]["deletionTimestamp"]
    server.json_patch(CONFIGMAPS, key, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert server.get(CONFIGMAPS, namespace, "settings") is None


def test_label_selectors(server: Server, namespace: str) -> None:
    for name, labels in [("a", {"app": "web"}), ("b", {"app": "db"}), ("c", {})]:
        obj: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
        if labels:
            obj["metadata"]["labels"] = labels
        create_as(server, CONFIGMAPS, obj, "kubectl-create")

    def names(selector: str) -> list[str]:
        found = server.list_objects(CONFIGMAPS, namespace=namespace, label_selector=selector)
        return sorted(o["metadata"]["name"] for o in found if o["metadata"]["name"] in ("a", "b", "c"))

    assert names("app=web") == ["a"]
    assert names("app!=web") == ["b", "c"]
    assert names("app") == ["a", "b"]
    assert names("!app") == ["c"]
