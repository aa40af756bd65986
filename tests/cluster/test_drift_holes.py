"""Out-of-band changes that `diff` once called synced: a second list entry under a key Git declares, our tracking
marks removed or changed, an owner reference Git does not declare. Real API server, real kubectl as alice."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ..conftest import Gitops, GitRepo, Kubectl

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
TRACKING_LABEL = "gitops.kubectl-gitops.io/application"
TRACKING_ANNOTATION = "gitops.kubectl-gitops.io/tracking-id"
REVISION_ANNOTATION = "gitops.kubectl-gitops.io/revision"

MANIFESTS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: prod
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: registry.example/web:1.0
          env:
            - {name: MODE, value: prod}
            - {name: LEVEL, value: info}
          ports:
            - {containerPort: 8080, protocol: TCP}
"""


def escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


class Synced:
    """An Application of MANIFESTS, synced, in a namespace alice may change things in."""

    def __init__(self, gitops: Gitops, kubectl: Kubectl, repo: GitRepo, namespace: str) -> None:
        self.gitops, self.kubectl, self.namespace = gitops, kubectl, namespace
        repo.write("app.yaml", MANIFESTS)
        repo.commit("web and its settings")
        gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
        self.sync()

    def alice(self, *args: str, stdin: str | None = None) -> str:
        return self.kubectl.run("-n", self.namespace, *args, user="alice", stdin=stdin).stderr

    def get(self, resource: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl.run("-n", self.namespace, "get", resource, "-o", "json").stdout)
        return out

    def diff(self, expect: int) -> dict[tuple[str, str], dict[str, Any]]:
        report = json.loads(self.gitops.run("diff", self.namespace, "-o", "json", expect=expect).stdout)
        return {(o["kind"], o["name"]): o for o in report["objects"]}

    def drift(self, kind: str, name: str) -> dict[str, tuple[str, str]]:
        entry = self.diff(1)[(kind, name)]
        assert entry["state"] == "modified", entry
        return {d["path"]: (d["kind"], d.get("manager", "")) for d in entry["drift"]}

    def sync(self) -> None:
        self.gitops.run("sync", self.namespace, user="gitops")

    def assert_synced(self) -> None:
        report = self.diff(0)
        assert {o["state"] for o in report.values()} == {"synced"}, report


@pytest.fixture
def app(gitops_both_ways: Gitops, kubectl: Kubectl, git_repo: MakeRepo, namespace: str) -> Synced:
    """Each test runs twice: trusting the last sync's fingerprints, and with --full (no drift may hide behind one)."""
    synced = Synced(gitops_both_ways, kubectl, git_repo(None), namespace)
    synced.assert_synced()
    return synced


def env_names(deployment: dict[str, Any]) -> list[str]:
    return [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])]


CONTAINER = "/spec/template/spec/containers/0"
GIT_LISTS = {
    "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
}


@pytest.mark.parametrize(
    ("list_path", "entry", "path"),
    [
        pytest.param("env", {"name": "MODE", "value": "evil"}, f"{CONTAINER}/env/2", id="env-name"),
        pytest.param("env", {"name": "MODE", "value": "prod"}, f"{CONTAINER}/env/2", id="env-name-same-value"),
        pytest.param(
            "ports",
            {"containerPort": 8080, "protocol": "TCP", "hostPort": 80, "name": "evil"},
            f"{CONTAINER}/ports/1",
            id="container-port",
        ),
    ],
)
def test_a_second_entry_under_a_key_git_declares_is_drift_and_sync_removes_it(
    app: Synced, list_path: str, entry: dict[str, Any], path: str
) -> None:
    op = [{"op": "add", "path": f"{CONTAINER}/{list_path}/-", "value": entry}]
    warnings = app.alice("patch", "deployment", "web", "--type=json", "-p", json.dumps(op))
    assert "Warning:" in warnings, warnings  # the API server accepts it, with a warning
    assert app.drift("Deployment", "web") == {path: ("added", "kubectl-patch")}
    assert f"added   {path} (by kubectl-patch)" in app.gitops.run("diff", app.namespace, expect=1).stdout

    app.sync()
    app.assert_synced()
    container = app.get("deployment/web")["spec"]["template"]["spec"]["containers"][0]
    assert container[list_path] == GIT_LISTS[list_path]


def test_an_entry_put_before_git_s_one_under_its_key_is_drift(app: Synced) -> None:
    op = [{"op": "add", "path": f"{CONTAINER}/env/0", "value": {"name": "MODE", "value": "evil"}}]
    app.alice("patch", "deployment", "web", "--type=json", "-p", json.dumps(op))
    drift = app.drift("Deployment", "web")
    assert drift, drift
    app.sync()
    app.assert_synced()
    assert env_names(app.get("deployment/web")) == ["MODE", "LEVEL"]
    assert app.get("deployment/web")["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "prod"


LABEL_PATH = f"/metadata/labels/{escaped(TRACKING_LABEL)}"
ANNOTATION_PATH = f"/metadata/annotations/{escaped(TRACKING_ANNOTATION)}"


@pytest.mark.parametrize(
    ("args", "path"),
    [
        # The ConfigMap's only label: the labels map is gone as a whole, one change.
        pytest.param(("label", f"{TRACKING_LABEL}-"), "/metadata/labels", id="label-gone"),
        pytest.param(("label", "--overwrite", f"{TRACKING_LABEL}=other"), LABEL_PATH, id="label-changed"),
        pytest.param(("annotate", f"{TRACKING_ANNOTATION}-"), ANNOTATION_PATH, id="annotation-gone"),
        pytest.param(
            ("annotate", "--overwrite", f"{TRACKING_ANNOTATION}=x/y:/ConfigMap:x/y"),
            ANNOTATION_PATH,
            id="annotation-changed",
        ),
    ],
)
def test_our_tracking_marks_are_declared_and_sync_puts_them_back(app: Synced, args: tuple[str, ...], path: str) -> None:
    verb, *rest = args
    app.alice(verb, "configmap", "settings", *rest)
    # No longer found by the tracking label (or not taken for ours), it is still compared by the name Git declares.
    assert app.drift("ConfigMap", "settings") == {path: ("changed", "")}

    app.sync()
    app.assert_synced()
    metadata = app.get("configmap/settings")["metadata"]
    assert metadata["labels"][TRACKING_LABEL] == app.namespace
    assert metadata["annotations"][TRACKING_ANNOTATION].endswith(f":/ConfigMap:{app.namespace}/settings")


def test_the_revision_mark_stays_operational(app: Synced) -> None:
    app.alice("annotate", "--overwrite", "configmap", "settings", f"{REVISION_ANNOTATION}={'f' * 40}")
    app.assert_synced()


def test_an_owner_reference_git_does_not_declare_is_drift_and_sync_removes_it(app: Synced) -> None:
    app.alice("create", "configmap", "decoy")
    uid = app.get("configmap/decoy")["metadata"]["uid"]
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy", "uid": uid}
    app.alice(
        "patch", "configmap", "settings", "--type=merge", "-p", json.dumps({"metadata": {"ownerReferences": [owner]}})
    )
    drift = app.drift("ConfigMap", "settings")
    assert set(drift.values()) == {("added", "kubectl-patch")}, drift
    assert all(p.startswith("/metadata/ownerReferences") for p in drift), drift

    app.sync()
    app.assert_synced()
    assert "ownerReferences" not in app.get("configmap/settings")["metadata"]
    # With the decoy's deletion the garbage collector no longer takes the managed object along.
    app.alice("delete", "configmap", "decoy", "--wait=true")
    app.get("configmap/settings")
