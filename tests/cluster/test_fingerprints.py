"""The fingerprints a sync leaves (engine.core.fingerprint) against the real API server: they save the dry-runs and
applies of what provably has not changed, and no edit an `edit`-role user can make hides behind one. The drift suites
(test_drift_holes, test_diff_sync) run both ways besides; these are the attacks aimed at the fingerprint itself."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.fingerprintkey import FINGERPRINT_SECRET, KEPT_FIELD, KEPT_PREFIX, read_kept
from engine.adapters.kube import KubeClient, KubeTarget
from engine.core.fingerprint import LENGTH, fingerprint, live_token, to_blob
from engine.core.objects import FIELD_MANAGER, AppRef, KubeObject, ObjectKey
from engine.core.resources import Applied, ResourceInfo
from engine.sync import Action
from engine.usecases import compare_application, load_application, sync_loaded

from ..conftest import Gitops, GitRepo, Kubectl
from .test_drift_holes import MANIFESTS

pytestmark = pytest.mark.cluster

MakeRepo = Callable[[str | None], GitRepo]
SECRET_MANIFEST = """\
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: from-git
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080}
"""


class CountingClient(KubeClient):
    """The real API client, counting the applies of the Application's objects it sends (dry-run or not)."""

    def __init__(self, target: KubeTarget) -> None:
        super().__init__(target)
        self.dry_runs = 0
        self.applies = 0
        self.sent: list[tuple[str, str]] = []  # (method, path) of every request

    def exchange(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        self.sent.append((method, path))
        return super().exchange(method, path, **kwargs)

    def apply(self, info: ResourceInfo, obj: KubeObject, *, dry_run: bool = False, **kwargs: Any) -> Applied:
        if obj["metadata"].get("namespace") != "gitops-system":  # the Application's objects, not its fingerprints
            if dry_run:
                self.dry_runs += 1
            else:
                self.applies += 1
        return super().apply(info, obj, dry_run=dry_run, **kwargs)


class App:
    """An Application of a ConfigMap, a Deployment, a Secret and a Service, synced by gitops, in a namespace alice
    edits."""

    def __init__(self, gitops: Gitops, kubectl: Kubectl, repo: GitRepo, namespace: str, cache: Path) -> None:
        self.gitops, self.kubectl, self.repo, self.namespace = gitops, kubectl, repo, namespace
        self.ref = AppRef("gitops-system", namespace)
        self.cache = cache
        repo.write("app.yaml", MANIFESTS + SECRET_MANIFEST)
        repo.commit("web, its settings, its credentials and its service")
        gitops.run("create", namespace, "--repo", str(repo.path), "--dest-namespace", namespace)
        gitops.run("sync", namespace, user="gitops")

    def client(self, user: str = "gitops") -> CountingClient:
        return CountingClient(KubeTarget(kubeconfig=str(self.kubectl.cluster.kubeconfig(user))))

    def alice(self, *args: str, stdin: str | None = None) -> str:
        return self.kubectl.run("-n", self.namespace, *args, user="alice", stdin=stdin).stdout

    def get(self, resource: str, namespace: str = "") -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self.kubectl.run("-n", namespace or self.namespace, "get", resource, "-o", "json").stdout
        )
        return out

    def diff(self, expect: int, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
        report = json.loads(self.gitops.run("diff", self.namespace, "-o", "json", *args, expect=expect).stdout)
        return {(o["kind"], o["name"]): o for o in report["objects"]}

    def kept(self) -> frozenset[str]:
        """The fingerprints the last sync kept (the Secret beside the Application)."""
        return read_kept(self.client(), self.ref)

    def write_kept(self, fingerprints: set[str]) -> None:
        """As someone who may write Secrets where the Applications live, but cannot read the key (here: the admin)."""
        blob = base64.b64encode(to_blob(fingerprints)).decode()
        patch = json.dumps({"data": {KEPT_FIELD: blob}})
        name = KEPT_PREFIX + self.namespace
        self.kubectl.run("-n", "gitops-system", "patch", "secret", name, "--type=merge", "-p", patch)


@pytest.fixture
def app(
    gitops: Gitops,
    kubectl: Kubectl,
    git_repo: MakeRepo,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> App:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the in-process Git cache of these tests
    return App(gitops, kubectl, git_repo(None), namespace, tmp_path)


def test_a_sync_leaves_a_fingerprint_per_object_and_a_diff_after_it_sends_no_dry_run(app: App) -> None:
    kept = app.kept()
    assert len(kept) == 4
    assert all(len(f) == LENGTH for f in kept), kept
    status = app.get(f"application/{app.namespace}", "gitops-system")["status"]
    assert all("fingerprint" not in e for e in status["resources"])  # the inventory is as it was

    client = app.client()
    _, comparison = compare_application(client, app.ref)
    assert not comparison.drifted
    assert client.dry_runs == 0

    full = app.client()
    _, comparison = compare_application(full, app.ref, shortcut=False)
    assert not comparison.drifted
    assert full.dry_runs == 4


def test_a_sync_with_nothing_to_do_applies_nothing_and_a_new_commit_applies_again(app: App) -> None:
    client = app.client()
    report = sync_loaded(client, load_application(client, app.ref))
    assert {r.action for r in report.results} == {Action.UNCHANGED}
    assert client.applies == 0
    assert all(r.fingerprint for r in report.results)

    # Besides the LISTs, what every sync writes and reads once: its record (the records listed once, for its id and
    # for retention both), the status, the fingerprints; the sync lock taken and given back.
    records = [(m, p) for m, p in client.sent if p.endswith("/syncrecords")]
    assert records == [("GET", records[0][1]), ("POST", records[0][1])], client.sent
    assert sum(1 for m, p in client.sent if m == "PATCH") == 2, client.sent  # the status, the fingerprints

    full = app.client()
    sync_loaded(full, load_application(full, app.ref), shortcut=False)
    assert full.applies == 4

    # A commit that changes one object: diff dry-runs only that one, and the sync applies every object, so that each
    # carries the new commit's revision mark (which the webhook reads).
    app.repo.write("app.yaml", (MANIFESTS + SECRET_MANIFEST).replace("mode: prod", "mode: staging"))
    head = app.repo.commit("staging settings")
    moved = app.client()
    _, comparison = compare_application(moved, app.ref)
    assert [str(d.key) for d in comparison.diffs if d.drifted] == [f"ConfigMap {app.namespace}/settings"]
    assert moved.dry_runs == 1
    sync_loaded(moved, load_application(moved, app.ref))
    assert moved.applies == 4
    assert app.get("deployment/web")["metadata"]["annotations"]["gitops.kubectl-gitops.io/revision"] == head
    app.diff(0)


def test_a_deployment_recreated_under_our_field_manager_with_another_image_is_drift(app: App) -> None:
    """Delete and create again, by server-side apply under our own field manager's name, with the same marks and
    another image: the generation (1), the metadata and the managedFields come out as the sync left them; only the
    uid tells the new object from the old one."""
    before = app.get("deployment/web")
    app.alice("delete", "deployment", "web", "--wait=true")
    copy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {k: before["metadata"][k] for k in ("name", "labels", "annotations")},
        "spec": json.loads(json.dumps(before["spec"])),
    }
    copy["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/evil:1.0"
    app.alice("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=json.dumps(copy))
    after = app.get("deployment/web")
    key = ObjectKey("apps", "Deployment", app.namespace, "web")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert live_token(key, after) == live_token(key, before)  # all that tells them apart is the uid

    drift = app.diff(1)[("Deployment", "web")]
    assert {d["path"] for d in drift["drift"]} == {"/spec/template/spec/containers/0/image"}
    assert app.diff(1, "--full")[("Deployment", "web")]["drift"] == drift["drift"]


def test_the_same_value_applied_by_another_manager_keeps_the_generation_and_is_drift(app: App) -> None:
    """alice takes a field Git leaves to the server (revisionHistoryLimit, 10 by default) at the value it has: the
    spec, so the generation, stays; she now owns a field Git does not declare, which is drift."""
    before = app.get("deployment/web")
    mine = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    mine["spec"] = {"revisionHistoryLimit": before["spec"]["revisionHistoryLimit"]}
    app.alice("apply", "--server-side", "--field-manager=alice-tool", "-f", "-", stdin=json.dumps(mine))
    after = app.get("deployment/web")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]

    for args in ((), ("--full",)):
        drift = app.diff(1, *args)[("Deployment", "web")]["drift"]
        assert [(d["path"], d["kind"], d.get("manager")) for d in drift] == [
            ("/spec/revisionHistoryLimit", "added", "alice-tool")
        ], args


def test_a_forged_fingerprint_does_not_hide_drift(app: App) -> None:
    """Someone who may write the kept fingerprints, but cannot read the key, drifts a ConfigMap and adds the
    fingerprint of its new state, made under a key of their own: no match. (A fingerprint moved from another object,
    or from before the drift, is among those kept already: each binds its own object and state.)"""
    app.alice("patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "evil"}}')
    live = app.get("configmap/settings")
    client = app.client()
    loaded = load_application(client, app.ref)
    desired = {str(d.key): d.obj for d in loaded.desired.objects}
    key = ObjectKey("", "ConfigMap", app.namespace, "settings")
    guessed = fingerprint(b"\0" * 32, app.ref, key, desired[str(key)], live, loaded.spec.policy())
    app.write_kept({*app.kept(), guessed})
    assert guessed in app.kept()
    drift = app.diff(1)[("ConfigMap", "settings")]["drift"]
    assert [(d["path"], d["kind"]) for d in drift] == [("/data/mode", "changed")]


def test_alice_can_neither_read_the_key_nor_write_the_fingerprints(app: App) -> None:
    """The fingerprints are only as good as their key and where they are kept: an `edit`-role user of the
    Application's namespace reaches neither (both sit in gitops-system, next to the Applications)."""
    app.get(f"secret/{FINGERPRINT_SECRET}", "gitops-system")  # made by the first sync
    for verb, resource in (
        ("get", f"secret/{FINGERPRINT_SECRET}"),
        ("patch", f"secret/{KEPT_PREFIX}{app.namespace}"),
        ("patch", "applications.gitops.kubectl-gitops.io --subresource=status"),
    ):
        args = ["-n", "gitops-system", "auth", "can-i", verb, *resource.split()]
        assert app.kubectl.run(*args, user="alice", check=False).stdout.strip() == "no", (verb, resource)


def test_without_the_key_every_object_is_compared(app: App) -> None:
    """A user who may read the Application but not the key gets the full compare, and the same answer."""
    app.alice("patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "evil"}}')
    app.kubectl.run("-n", "gitops-system", "delete", "secret", FINGERPRINT_SECRET)
    client = app.client()
    _, comparison = compare_application(client, app.ref)
    assert client.dry_runs == 4
    assert [str(d.key) for d in comparison.diffs if d.drifted] == [f"ConfigMap {app.namespace}/settings"]
