"""The webhook's registration against the real API server: what it stores, and which requests it sends where.

Most tests register the pure configuration (engine.core.webhookconfig) for a small recording webhook of their own (an
https server on 127.0.0.1 that keeps every AdmissionReview and allows it), each entry at its own path, limited to the
test's namespace; the last ones run the real gitops-webhook and `kubectl gitops install`."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.objects import TRACKING_LABEL
from engine.core.resources import ResourceInfo
from engine.core.webhookconfig import (
    EVICTION_ENTRY,
    MACHINERY,
    MACHINERY_CONDITION,
    OBJECTS_ENTRY,
    SCALE_ENTRY,
    ManagedResource,
    managed_resources,
    registered_resources,
    webhook_configuration,
)
from webhook import tls

from ..conftest import Gitops, GitRepo, Kubectl
from .test_webhook import WebhookProcess, app, denied, webhook  # noqa: F401 (app and webhook: fixtures)

pytestmark = pytest.mark.cluster

PATHS = {OBJECTS_ENTRY: "/objects", SCALE_ENTRY: "/scale", EVICTION_ENTRY: "/evictions"}
OLD_MACHINERY = (  # the condition before: every kube-system ServiceAccount skipped the webhook by its name
    "!(request.userInfo.username == 'system:kube-controller-manager'"
    " || request.userInfo.username.startsWith('system:serviceaccount:kube-system:')"
    " || request.userInfo.username.startsWith('system:node:'))"
)


@dataclass
class Recorder:
    """A validating webhook that allows everything and keeps (entry path, AdmissionRequest) of each review."""

    url: str
    ca: bytes
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, request: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append((path, request))

    def requests(self, namespace: str, name: str, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for p, r in self.seen
                if r.get("namespace") == namespace and r.get("name") == name and path in (None, p)
            ]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    files, _ = tls.ensure(tmp_path_factory.mktemp("recorder"), ["127.0.0.1"])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.add(urlsplit(self.path).path, review["request"])
            answer = {"uid": review["request"]["uid"], "allowed": True}
            body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    hook = Recorder(f"https://127.0.0.1:{server.server_address[1]}", files.ca.read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def discovery(kubectl: Kubectl) -> KubeClient:
    return KubeClient(KubeTarget(kubeconfig=str(kubectl.cluster.kubeconfig("admin"))))


def served(discovery: KubeClient, api_version: str, kind: str) -> ResourceInfo:
    info = discovery.resource_for(api_version, kind)
    assert info is not None, f"the cluster does not serve {kind} {api_version}"
    return info


def for_the_test(config: dict[str, Any], recorder: Recorder, namespace: str) -> dict[str, Any]:
    """The pure registration, made this test's: its own name, each entry at its own path of the recorder, only the
    test's namespace."""
    config["metadata"]["name"] = f"{namespace}.registration.kubectl-gitops.io"
    for hook in config["webhooks"]:
        hook["clientConfig"]["url"] = recorder.url + PATHS[hook["name"]]
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return config


CONFIGMAPS = ManagedResource("", "v1", "configmaps")


def labelled(kind: str, api_version: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": {TRACKING_LABEL: "t"}}, **spec}
    )


@pytest.fixture
def register(kubectl: Kubectl, recorder: Recorder, namespace: str) -> Iterator[Callable[..., dict[str, Any]]]:
    """Factory: registers the pure configuration for `resources` (and configmaps, for the probe), waits until the API
    server calls it, and returns the registration as the API server stored it; deleted after the test."""
    names: list[str] = []
    kubectl.run("-n", namespace, "create", "-f", "-", stdin=labelled("ConfigMap", "v1", "probe", {"data": {}}))

    def make(resources: set[ManagedResource], *, edit: Callable[[dict[str, Any]], None] | None = None) -> Any:
        config = for_the_test(
            webhook_configuration(ca_bundle=recorder.ca, resources=resources | {CONFIGMAPS}, url=recorder.url),
            recorder,
            namespace,
        )
        if edit is not None:
            edit(config)
        names.append(config["metadata"]["name"])
        stored = json.loads(kubectl.run("create", "-f", "-", "-o", "json", stdin=json.dumps(config)).stdout)
        deadline = time.monotonic() + 30
        for n in range(10_000):  # until the API server's informer has it
            kubectl.run("-n", namespace, "annotate", "configmap", "probe", f"probe={n}", "--overwrite")
            if recorder.requests(namespace, "probe", "/objects"):
                break
            assert time.monotonic() < deadline, "the API server never called the registered webhook"
            time.sleep(0.2)
        return {"produced": config, "stored": stored}

    yield make
    for name in names:
        kubectl.run("delete", "validatingwebhookconfiguration", name, check=False)


def test_the_stored_registration_is_the_one_the_pure_code_produced(
    register: Callable[..., dict[str, Any]], discovery: KubeClient
) -> None:
    resources = managed_resources(
        [
            served(discovery, "apps/v1", "Deployment"),
            served(discovery, "v1", "Pod"),
            served(discovery, "autoscaling/v2", "HorizontalPodAutoscaler"),
            served(discovery, "rbac.authorization.k8s.io/v1", "Role"),
            served(discovery, "v1", "Service"),
        ]
    )
    got = register(resources)
    produced, stored = got["produced"], got["stored"]
    assert registered_resources(stored) == resources | {CONFIGMAPS}
    assert [hook["name"] for hook in stored["webhooks"]] == [OBJECTS_ENTRY, SCALE_ENTRY, EVICTION_ENTRY]
    for want, have in zip(produced["webhooks"], stored["webhooks"], strict=True):
        assert {k: have.get(k) for k in want} == want  # the API server only adds defaults (an empty objectSelector)
        assert set(have) - set(want) <= {"objectSelector"}
        assert have.get("objectSelector", {}) == want.get("objectSelector", {})


HPA = {
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
            }
        ],
    }
}


def every_version(config: dict[str, Any]) -> None:
    """As an older version registered it: `*` versions."""
    for hook in config["webhooks"]:
        for rule in hook["rules"]:
            rule["apiVersions"] = ["*"]


@pytest.mark.parametrize(("edit", "arrives_as"), [(None, "v2"), (every_version, "v1")], ids=["exact", "older-star"])
def test_a_change_through_another_version_reaches_the_webhook_in_the_version_git_uses(
    register: Callable[..., dict[str, Any]],
    kubectl: Kubectl,
    recorder: Recorder,
    namespace: str,
    discovery: KubeClient,
    edit: Callable[[dict[str, Any]], None] | None,
    arrives_as: str,
) -> None:
    hpa = served(discovery, "autoscaling/v2", "HorizontalPodAutoscaler")
    register(managed_resources([hpa]), edit=edit)
    kubectl.run("-n", namespace, "create", "-f", "-", stdin=labelled(hpa.kind, "autoscaling/v2", "web", HPA))
    patch = '{"spec": {"maxReplicas": 5}}'
    kubectl.run("-n", namespace, "patch", "horizontalpodautoscalers.v1.autoscaling", "web", "-p", patch, user="alice")
    [update] = [r for r in recorder.requests(namespace, "web", "/objects") if r["operation"] == "UPDATE"]
    assert update["requestKind"] == {"group": "autoscaling", "version": "v1", "kind": "HorizontalPodAutoscaler"}
    assert update["kind"] == {"group": "autoscaling", "version": arrives_as, "kind": "HorizontalPodAutoscaler"}
    assert update["object"]["apiVersion"] == f"autoscaling/{arrives_as}"
    if arrives_as == "v2":  # what the webhook compares with Git's object: the same version, Git's fields as they are
        assert update["object"]["spec"]["metrics"] == HPA["spec"]["metrics"]
        assert update["oldObject"]["spec"]["maxReplicas"] == 3
        assert update["object"]["spec"]["maxReplicas"] == 5


POD = {
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "registry.invalid/app:1",
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}},
            }
        ]
    }
}


@pytest.fixture
def managed_pod(
    register: Callable[..., dict[str, Any]], kubectl: Kubectl, namespace: str, discovery: KubeClient
) -> dict[str, Any]:
    """Pods registered as discovery serves them, and the labelled Pod `app` (no node will run it: the object is what
    counts), created once the namespace's default ServiceAccount exists (the ServiceAccount admission needs it)."""
    register(managed_resources([served(discovery, "v1", "Pod")]))
    deadline = time.monotonic() + 30
    while kubectl.run("-n", namespace, "get", "serviceaccount", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.2)
    out = kubectl.run("-n", namespace, "create", "-f", "-", "-o", "json", stdin=labelled("Pod", "v1", "app", POD))
    created: dict[str, Any] = json.loads(out.stdout)
    return created


def test_an_eviction_of_a_managed_pod_reaches_the_webhook(
    managed_pod: dict[str, Any], kubectl: Kubectl, recorder: Recorder, namespace: str
) -> None:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "app", "namespace": namespace}}
    path = f"/api/v1/namespaces/{namespace}/pods/app/eviction"
    kubectl.run("create", "--raw", path, "-f", "-", stdin=json.dumps(eviction), user="alice")
    [seen] = recorder.requests(namespace, "app", "/evictions")
    assert (seen["operation"], seen["subResource"]) == ("CREATE", "eviction")
    assert seen["kind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    assert seen["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert "labels" not in seen["object"]["metadata"]  # why the entry has no objectSelector


def test_subresources_that_change_a_pods_spec_reach_the_webhook_with_the_pod(
    managed_pod: dict[str, Any], kubectl: Kubectl, recorder: Recorder, namespace: str
) -> None:
    created = managed_pod
    debug = {"name": "debugger", "image": "registry.invalid/debug:1", "targetContainerName": "app"}
    created["spec"]["ephemeralContainers"] = [debug]
    path = f"/api/v1/namespaces/{namespace}/pods/app/ephemeralcontainers"
    kubectl.run("replace", "--raw", path, "-f", "-", stdin=json.dumps(created))
    cpu = {"requests": {"cpu": "200m"}, "limits": {"cpu": "200m"}}
    resize = json.dumps({"spec": {"containers": [{"name": "app", "resources": cpu}]}})
    kubectl.run("-n", namespace, "patch", "pod", "app", "--subresource", "resize", "-p", resize)
    seen = {r["subResource"]: r for r in recorder.requests(namespace, "app", "/objects") if r.get("subResource")}
    assert set(seen) == {"ephemeralcontainers", "resize"}
    assert seen["ephemeralcontainers"]["object"]["spec"]["ephemeralContainers"][0]["name"] == "debugger"
    assert seen["resize"]["object"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "200m"
    for request in seen.values():
        assert request["object"]["metadata"]["labels"][TRACKING_LABEL] == "t"  # the objectSelector matches it


def old_condition(config: dict[str, Any]) -> None:
    for hook in config["webhooks"]:
        hook["matchConditions"] = [{"name": MACHINERY_CONDITION, "expression": OLD_MACHINERY}]


@pytest.mark.parametrize(
    ("edit", "service_accounts_reach_it"), [(None, True), (old_condition, False)], ids=["narrow", "older-broad"]
)
def test_only_identities_edit_cannot_take_on_skip_the_webhook(
    register: Callable[..., dict[str, Any]],
    kubectl: Kubectl,
    recorder: Recorder,
    namespace: str,
    edit: Callable[[dict[str, Any]], None] | None,
    service_accounts_reach_it: bool,
) -> None:
    register(set(), edit=edit)
    stored = json.loads(
        kubectl.run(
            "get", "validatingwebhookconfiguration", f"{namespace}.registration.kubectl-gitops.io", "-o", "json"
        ).stdout
    )
    assert stored["webhooks"][0]["matchConditions"][0]["expression"] == (OLD_MACHINERY if edit else MACHINERY)

    def change(name: str, user: str, *identity: str) -> list[dict[str, Any]]:
        kubectl.run("-n", namespace, "create", "-f", "-", stdin=labelled("ConfigMap", "v1", name, {"data": {}}))
        kubectl.run("-n", namespace, "label", "configmap", name, "x=y", *identity, user=user)
        return [r for r in recorder.requests(namespace, name, "/objects") if r["operation"] == "UPDATE"]

    # `edit` may impersonate any ServiceAccount it covers: an editor of kube-system may take on its controllers'.
    # (alice is an editor of the test's namespace only: she is given that one impersonation for this check.)
    gc = "system:serviceaccount:kube-system:generic-garbage-collector"
    grant = f"{namespace}-impersonates-gc"
    kubectl.run(
        "-n",
        "kube-system",
        "create",
        "role",
        grant,
        "--verb=impersonate",
        "--resource=serviceaccounts",
        "--resource-name=generic-garbage-collector",
    )
    kubectl.run("-n", "kube-system", "create", "rolebinding", grant, f"--role={grant}", "--user=alice")
    try:
        impersonated = change("gc", "alice", f"--as={gc}")
    finally:
        kubectl.run("-n", "kube-system", "delete", "rolebinding,role", grant)
    assert bool(impersonated) is service_accounts_reach_it
    if impersonated:
        assert impersonated[0]["userInfo"]["username"] == gc
    # Users only an administrator can take on skip it (as system:masters, so that they may write at all); the
    # scheduler (which deletes Pods it preempts) only under the narrow condition.
    assert change("kcm", "admin", "--as=system:kube-controller-manager", "--as-group=system:masters") == []
    assert change("node", "admin", "--as=system:node:worker-1", "--as-group=system:masters") == []
    scheduler = change("sched", "admin", "--as=system:kube-scheduler", "--as-group=system:masters")
    assert bool(scheduler) is not service_accounts_reach_it
    assert change("person", "alice") != []


def test_discovery_names_the_subresources_that_write_the_object_itself(discovery: KubeClient) -> None:
    """Which subresources of the built-in kinds take the whole object and change it, status aside (what the objects
    entry registers with a resource Git manages; listed in the README)."""
    discovery.refresh_discovery()
    found = {
        (info.group, info.plural): info.object_subresources - {"status"}
        for info in discovery.preferred_resources()
        if info.object_subresources - {"status"}
    }
    assert found == {
        ("", "pods"): {"ephemeralcontainers", "resize"},
        ("", "namespaces"): {"finalize"},
        ("certificates.k8s.io", "certificatesigningrequests"): {"approval"},
    }
    pods = served(discovery, "v1", "Pod")
    assert {"eviction", "ephemeralcontainers", "resize", "status", "binding"} <= pods.subresources
    assert "eviction" not in pods.object_subresources  # its body is an Eviction: an entry of its own


# --- the real gitops-webhook and `kubectl gitops install`: exactly the resources Applications manage ---------------
REGISTRATION = "gitops-drift.kubectl-gitops.io"


def registration(kubectl: Kubectl) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        kubectl.run("get", "validatingwebhookconfiguration", REGISTRATION, "-o", "json").stdout
    )
    return found


Named = set[tuple[str, str, str]]


def registered(kubectl: Kubectl) -> tuple[Named, Named]:
    """(group, version, resource) of the objects entry and of the scale entry, as the API server stores them."""
    entries = {w["name"].split(".")[0]: w for w in registration(kubectl)["webhooks"]}
    named = {
        name: {
            (g, v, r)
            for rule in entry.get("rules") or []
            for g in rule["apiGroups"]
            for v in rule["apiVersions"]
            for r in rule["resources"]
        }
        for name, entry in entries.items()
    }
    return named["objects"], named["scale"]


def managed(kubectl: Kubectl) -> tuple[Named, Named]:
    """What every Application's status says it manages, as (group, preferred version, plural), and those of them
    with a scale subresource: from the API server's own discovery documents."""
    apps = json.loads(kubectl.run("get", "applications", "-A", "-o", "json").stdout)["items"]
    kinds = {(r["group"], r["kind"]) for a in apps for r in (a.get("status") or {}).get("resources") or []}
    groups = {g["name"]: g for g in json.loads(kubectl.run("get", "--raw", "/apis").stdout)["groups"]}
    objects, scale = set(), set()
    for group, kind in kinds:
        group_version = groups[group]["preferredVersion"]["groupVersion"] if group else "v1"
        served = json.loads(kubectl.run("get", "--raw", f"/apis/{group_version}" if group else "/api/v1").stdout)
        names = {r["name"] for r in served["resources"]}
        plural = next(r["name"] for r in served["resources"] if r["kind"] == kind and "/" not in r["name"])
        version = group_version.rpartition("/")[2]
        objects.add((group, version, plural))
        if f"{plural}/scale" in names:
            scale.add((group, version, f"{plural}/scale"))
    return objects, scale


def test_the_registration_lists_exactly_the_resources_applications_manage(
    app: Callable[..., GitRepo],  # noqa: F811 (the fixture)
    kubectl: Kubectl,
) -> None:
    app("enforce")
    objects, scale = registered(kubectl)
    assert {("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps")} <= objects
    assert ("", "v1", "secrets") in objects
    assert ("apps", "v1", "deployments/scale") in scale
    assert not any("*" in g or "*" in v or "*" in r for g, v, r in objects | scale)
    assert (objects, scale) == managed(kubectl)
    for rule in registration(kubectl)["webhooks"][0]["rules"]:
        assert (len(rule["apiGroups"]), len(rule["apiVersions"])) == (1, 1)  # one rule per API group and version
        assert rule["resources"] == sorted(rule["resources"])


SERVICE_ACCOUNT = (
    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: frontend}\nautomountServiceAccountToken: false\n"
)
ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: frontend}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
"""


def test_a_kind_added_in_git_is_covered_by_the_sync_and_kept_by_the_webhook(
    app: Callable[..., GitRepo],  # noqa: F811 (the fixture)
    gitops: Gitops,
    kubectl: Kubectl,
    namespace: str,
    webhook: WebhookProcess,  # noqa: F811 (the fixture)
) -> None:
    repo = app("enforce")
    repo.write("frontend-account.yaml", SERVICE_ACCOUNT + "---\n" + ROLE)
    repo.commit("the frontend's own ServiceAccount and Role")
    synced = gitops.run("sync", namespace, "-v", user="gitops")
    # The sync made sure the registration covers them before it applied them (the webhook may have been quicker, if
    # a refresh of its own saw the commit first): no window in which they are unguarded.
    assert "webhook registration gitops-drift.kubectl-gitops.io" in synced.stderr
    objects, _ = registered(kubectl)
    assert {("", "v1", "serviceaccounts"), ("rbac.authorization.k8s.io", "v1", "roles")} <= objects
    patch = kubectl.run(
        "-n",
        namespace,
        "patch",
        "serviceaccount",
        "frontend",
        "-p",
        '{"automountServiceAccountToken": true}',
        user="alice",
        check=False,
    )
    assert denied(patch), patch.stderr

    # The webhook (as its least-privileged ServiceAccount) puts back a managed resource someone took out.
    live = registration(kubectl)
    for rule in live["webhooks"][0]["rules"]:
        rule["resources"] = [r for r in rule["resources"] if r != "serviceaccounts"]
    live["webhooks"][0]["rules"] = [rule for rule in live["webhooks"][0]["rules"] if rule["resources"]]
    replaced = json.loads(kubectl.run("replace", "-f", "-", "-o", "json", stdin=json.dumps(live)).stdout)
    # (read from the replace's own answer: a GET after it may already see the webhook's repair)
    assert all("serviceaccounts" not in rule["resources"] for rule in replaced["webhooks"][0].get("rules") or [])
    deadline = time.monotonic() + 30
    while ("", "v1", "serviceaccounts") not in registered(kubectl)[0]:
        assert time.monotonic() < deadline, webhook.log.read_text()[-3000:]
        time.sleep(0.5)
    assert "now also covers serviceaccounts v1" in webhook.log.read_text()


def test_install_again_keeps_what_the_registration_covers_and_makes_an_older_star_exact(
    gitops: Gitops,
    kubectl: Kubectl,
    webhook: WebhookProcess,  # noqa: F811 (the fixture)
) -> None:
    live = registration(kubectl)
    extra = {"apiGroups": ["example.com"], "apiVersions": ["*"], "resources": ["gizmos"], "operations": ["CREATE"]}
    live["webhooks"][0]["rules"].append(extra)
    for hook in live["webhooks"]:  # as an older version wrote it: apps in every version, the broad condition
        hook["matchConditions"] = [{"name": MACHINERY_CONDITION, "expression": OLD_MACHINERY}]
        for rule in hook.get("rules") or []:
            if rule["apiGroups"] == ["apps"]:
                rule["apiVersions"] = ["*"]
    kubectl.run("replace", "-f", "-", stdin=json.dumps(live))
    before = registered(kubectl)
    assert ("apps", "*", "deployments") in before[0]
    try:
        gitops.run("install", "--webhook-url", f"{webhook.url}/validate", "--ca-file", str(webhook.cert_dir / "ca.crt"))
        after = registered(kubectl)

        def exact(named: Named) -> Named:
            return {(g, "v1" if (g, v) == ("apps", "*") else v, r) for g, v, r in named}

        assert after == (exact(before[0]), exact(before[1]))  # gizmos (not served) kept as it was
        assert ("example.com", "*", "gizmos") in after[0]
        hooks = registration(kubectl)["webhooks"]
        assert [h["name"] for h in hooks] == [OBJECTS_ENTRY, SCALE_ENTRY, EVICTION_ENTRY]
        assert {c["expression"] for h in hooks for c in h["matchConditions"]} == {MACHINERY}
    finally:
        live = registration(kubectl)
        for rule in live["webhooks"][0]["rules"]:
            rule["resources"] = [r for r in rule["resources"] if r != "gizmos"]
        live["webhooks"][0]["rules"] = [rule for rule in live["webhooks"][0]["rules"] if rule["resources"]]
        kubectl.run("replace", "-f", "-", stdin=json.dumps(live))


def test_dry_run_install_prints_the_registration(gitops: Gitops, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = gitops.run(
        "install", "--dry-run", "-o", "json", "--webhook-url", "https://127.0.0.1:1/validate", "--ca-file", str(ca)
    )
    [config] = [o for o in json.loads(out.stdout)["items"] if o["kind"] == "ValidatingWebhookConfiguration"]
    assert [h["name"] for h in config["webhooks"]] == [OBJECTS_ENTRY, SCALE_ENTRY, EVICTION_ENTRY]
    assert {h["matchPolicy"] for h in config["webhooks"]} == {"Equivalent"}
