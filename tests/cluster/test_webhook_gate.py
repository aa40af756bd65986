"""The gate holds: in every order of operations, and against every way around it an `edit` user has, alice's drift
is denied (or, before Git's state is loaded, refused as unjudged), never allowed. A control plane of its own, so
that it starts without the CRDs and no other module's Applications are in the way."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from localcluster.cluster import LocalCluster

from ..conftest import REPO_ROOT, Gitops, GitRepo, Kubectl
from .test_webhook import BREAK_GLASS, WebhookProcess, _free_port, records

pytestmark = pytest.mark.cluster

TRACKING_LABEL = "gitops.kubectl-gitops.io/application"
REVISION_ANNOTATION = "gitops.kubectl-gitops.io/revision"


@dataclass
class Gate:
    kubectl: Kubectl
    gitops: Gitops
    webhook: WebhookProcess
    work: Path

    def editor_namespace(self, name: str) -> None:
        """alice and oncall (group developers) get the built-in `edit` role in `name`, as a namespace editor would."""
        self.kubectl.run("create", "namespace", name, check=False)
        self.kubectl.run(
            "-n",
            name,
            "create",
            "rolebinding",
            "developers-edit",
            "--clusterrole=edit",
            "--group=developers",
            check=False,
        )

    def repo(self, name: str, source: str = "examples/guestbook") -> GitRepo:
        path = self.work / name
        shutil.copytree(REPO_ROOT / source, path)
        repo = GitRepo(path)
        repo.git("init", "-q", "-b", "main")
        repo.commit(f"add {source}")
        return repo

    def synced(self, name: str, files: dict[str, str]) -> str:
        """An enforce-mode Application `name` of `files` in namespace ns-NAME, where alice is an editor; synced and
        loaded by the webhook. Returns the namespace."""
        path = self.work / name
        path.mkdir()
        for file, text in files.items():
            (path / file).write_text(text)
        repo = GitRepo(path)
        repo.git("init", "-q", "-b", "main")
        repo.commit(f"add {name}")
        if self.webhook.proc is None:
            self.webhook.start()
        namespace = f"ns-{name}"
        self.editor_namespace(namespace)
        wait_for(
            lambda: self.kubectl.run("-n", namespace, "get", "serviceaccount", "default", check=False).returncode == 0,
            "the default ServiceAccount",
        )
        self.gitops.run("create", name, "--repo", str(path), "--dest-namespace", namespace, "--mode", "enforce")
        self.gitops.run("sync", name, user="gitops")
        self.webhook.wait_loaded(name)
        return namespace

    def alice_patch(self, namespace: str, message: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
        patch = json.dumps({"data": {"message": message}})
        return self.kubectl.run(
            "-n", namespace, "patch", "configmap", "guestbook-settings", "-p", patch, user=user, check=False
        )

    def message(self, namespace: str) -> str:
        return self.kubectl.run(
            "-n", namespace, "get", "configmap", "guestbook-settings", "-o", "jsonpath={.data.message}"
        ).stdout

    def records(self, namespace: str) -> list[dict[str, Any]]:
        return records(self.kubectl, namespace)


@contextlib.contextmanager
def private_control_plane(work: Path) -> Iterator[tuple[Kubectl, Gitops, WebhookProcess]]:
    """A control plane of its own in `work`, without the CRDs, and a webhook process for it (not started)."""
    cluster = LocalCluster(work / "state")
    cluster.up()
    state = cluster.load_state()
    assert state is not None
    kubectl = Kubectl(Path(state.bin_dir) / "kubectl", cluster)
    hook = WebhookProcess(
        work / "certs", _free_port(), cluster.kubeconfig("gitops"), work / "webhook.log", cluster.webhook_client_ca
    )
    try:
        yield kubectl, Gitops(kubectl, work / "cache"), hook
    finally:
        hook.stop()
        cluster.down()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    work = tmp_path_factory.mktemp("gate")
    with private_control_plane(work) as (kubectl, gitops, hook):
        yield Gate(kubectl, gitops, hook, work)


def refused(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "denied the request" in proc.stderr and "kubectl-gitops:" in proc.stderr


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_order_of_operations_fails_closed(gate: Gate) -> None:
    """The webhook before the CRDs, the first sync into a namespace that does not exist, a restart, Git gone at
    start and back, a render that fails and is fixed, a mode changed, an Application deleted: at every moment after
    the registration alice's change is refused, until the mode or the Application says otherwise."""
    kubectl, gitops, hook = gate.kubectl, gate.gitops, gate.webhook
    # 1. The webhook first: no CRDs yet (its namespace exists, as it does for a Deployment in it: the replicas share
    # their certificate through a Secret there). It is not ready, and says why.
    kubectl.run("create", "namespace", "gitops-system")
    hook.start()
    status = hook.get("/readyz")
    assert status["ready"] is False
    assert status["listed"] is False
    # 2. Then the CRDs and the registration, as the README says.
    gitops.run("install", "--webhook-url", f"{hook.url}/validate", "--ca-file", str(hook.cert_dir / "ca.crt"))
    repo = gate.repo("gb")
    # 3. An Application whose destination namespace does not exist yet: its first sync passes in enforce mode.
    gitops.run("create", "gb", "--repo", str(repo.path), "--dest-namespace", "ns-gb", "--mode", "enforce")
    gitops.run("sync", "gb", user="gitops")
    gate.editor_namespace("ns-gb")
    hook.wait_loaded("gb")
    wait_for(lambda: hook.get("/readyz")["ready"], "the webhook to be ready")
    assert refused(gate.alice_patch("ns-gb", "by alice 1"))
    # 4. A restart: from its first answer on, alice is refused (unjudged while it loads, drift after).
    hook.stop()
    hook.start()
    for i in range(5):
        assert refused(gate.alice_patch("ns-gb", f"after restart {i}"))
    # 5. Git unreachable at start: not ready, and alice's change cannot be judged, so it is refused.
    hook.stop()
    away = repo.path.with_name("gb-away")
    repo.path.rename(away)
    hook.start()
    proc = gate.alice_patch("ns-gb", "while Git is away")
    assert refused(proc)
    assert "cannot be judged" in proc.stderr
    assert hook.get("/readyz")["ready"] is False
    away.rename(repo.path)  # Git comes back
    wait_for(lambda: hook.get("/readyz")["ready"], "Git's state to load once Git is back")
    proc = gate.alice_patch("ns-gb", "with Git back")
    assert refused(proc)
    assert "away from Git" in proc.stderr
    # 6. A render that fails (broken YAML at the head), seen by a webhook that starts then: unjudged, refused.
    repo.write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [oops\n")
    repo.commit("a broken manifest")
    hook.stop()
    hook.start()
    proc = gate.alice_patch("ns-gb", "while the render fails")
    assert refused(proc)
    assert "cannot be judged" in proc.stderr
    (repo.path / "broken.yaml").unlink()
    repo.commit("fixed")
    wait_for(lambda: hook.get("/readyz")["ready"], "the fixed render to load", timeout=90)
    proc = gate.alice_patch("ns-gb", "after the fix")
    assert refused(proc)
    assert "away from Git" in proc.stderr
    assert gate.message("ns-gb") == "Hello from Git!"  # nothing got through
    decisions = {r["decision"] for r in gate.records("ns-gb")}
    assert decisions == {"denied"}
    # 7. The mode changes to warn: allowed with a warning, and recorded.
    kubectl.run(
        "-n", "gitops-system", "patch", "application", "gb", "--type=merge", "-p", '{"spec":{"driftMode":"warn"}}'
    )
    wait_for(lambda: gate.alice_patch("ns-gb", "in warn mode").returncode == 0, "warn mode to apply")
    assert gate.records("ns-gb")[-1]["decision"] == "warned"
    # 8. The Application deleted: its objects are no longer Git's business.
    gitops.run("delete", "gb")
    wait_for(lambda: "warning" not in gate.alice_patch("ns-gb", "unmanaged").stderr.lower(), "the deletion to apply")


@pytest.fixture(scope="module")
def enforced(gate: Gate) -> tuple[str, GitRepo]:
    """The guestbook in enforce mode, synced, with the webhook running and registered."""
    if gate.webhook.proc is None:
        gate.webhook.start()
        gate.gitops.run(
            "install",
            "--webhook-url",
            f"{gate.webhook.url}/validate",
            "--ca-file",
            str(gate.webhook.cert_dir / "ca.crt"),
        )
    repo = gate.repo("holes")
    gate.gitops.run("create", "holes", "--repo", str(repo.path), "--dest-namespace", "ns-holes", "--mode", "enforce")
    gate.gitops.run("sync", "holes", user="gitops")
    gate.editor_namespace("ns-holes")
    gate.webhook.wait_loaded("holes")
    return "ns-holes", repo


def as_alice(gate: Gate, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return gate.kubectl.run("-n", namespace, *args, user="alice", check=False)


def test_taking_our_label_off_is_refused(gate: Gate, enforced: tuple[str, GitRepo]) -> None:
    ns, _ = enforced
    for args in (
        ("label", "configmap", "guestbook-settings", f"{TRACKING_LABEL}-"),
        ("label", "configmap", "guestbook-settings", f"{TRACKING_LABEL}=other", "--overwrite"),
        ("annotate", "configmap", "guestbook-settings", "gitops.kubectl-gitops.io/tracking-id-"),
    ):
        proc = as_alice(gate, ns, *args)
        assert refused(proc), proc.stderr
    assert refused(as_alice(gate, ns, "label", "deployment", "frontend", f"{TRACKING_LABEL}-"))


def test_an_owner_git_does_not_declare_is_refused(gate: Gate, enforced: tuple[str, GitRepo]) -> None:
    """Garbage collection as a weapon: an owner reference to a decoy, then the decoy deleted."""
    ns, _ = enforced
    as_alice(gate, ns, "create", "configmap", "decoy")
    uid = gate.kubectl.run("-n", ns, "get", "configmap", "decoy", "-o", "jsonpath={.metadata.uid}").stdout
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "decoy", "uid": uid}
    patch = json.dumps({"metadata": {"ownerReferences": [owner]}})
    proc = as_alice(gate, ns, "patch", "configmap", "guestbook-settings", "--type=merge", "-p", patch)
    assert refused(proc), proc.stderr
    assert "/metadata/ownerReferences" in proc.stderr


def test_a_duplicate_env_name_is_refused(gate: Gate, enforced: tuple[str, GitRepo]) -> None:
    ns, _ = enforced
    patch = json.dumps(
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/env/-",
                "value": {"name": "REDIS_HOST", "value": "evil"},
            }
        ]
    )
    proc = as_alice(gate, ns, "patch", "deployment", "frontend", "--type=json", "-p", patch)
    assert refused(proc), proc.stderr


def test_an_unmerged_commit_named_by_the_revision_annotation_counts_for_nothing(
    gate: Gate, enforced: tuple[str, GitRepo]
) -> None:
    ns, repo = enforced
    repo.git("checkout", "-q", "-b", "mallory")
    settings = repo.path / "settings.yaml"
    settings.write_text(settings.read_text().replace("Hello from Git!", "Hello from a branch"))
    branch = repo.commit("not merged")
    repo.git("checkout", "-q", "main")
    patch = json.dumps(
        {"metadata": {"annotations": {REVISION_ANNOTATION: branch}}, "data": {"message": "Hello from a branch"}}
    )
    proc = as_alice(gate, ns, "patch", "configmap", "guestbook-settings", "--type=merge", "-p", patch)
    assert refused(proc), proc.stderr
    assert "Git has Hello from Git!" in proc.stderr


def test_nobody_rides_on_a_break_glass_change(gate: Gate, enforced: tuple[str, GitRepo]) -> None:
    ns, _ = enforced
    patch = json.dumps({"metadata": {"annotations": {BREAK_GLASS: "INC-9"}}, "data": {"message": "hotfix"}})
    proc = gate.kubectl.run(
        "-n",
        ns,
        "patch",
        "configmap",
        "guestbook-settings",
        "--type=merge",
        "-p",
        patch,
        user="breakglass",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    again = gate.alice_patch(ns, "riding on the hotfix")
    assert refused(again), again.stderr
    assert gate.message(ns) == "hotfix"
    gate.gitops.run("sync", "holes", user="gitops")  # back to Git


def test_a_bare_pod_git_declares_is_created_and_its_eviction_refused(gate: Gate) -> None:
    """A sync creates a bare Pod in enforce mode (the token volume the ServiceAccount plugin injects, with a name of
    its own each time, is no drift); evicting it is deleting it."""
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\n"
        "spec: {containers: [{name: app, image: registry.example/solo:1}]}\n"
    )
    gate.synced("pod", {"pod.yaml": pod})
    volumes = gate.kubectl.run("-n", "ns-pod", "get", "pod", "solo", "-o", "jsonpath={.spec.volumes[*].name}").stdout
    assert volumes.startswith("kube-api-access-")
    eviction = gate.work / "eviction.json"
    eviction.write_text(
        json.dumps({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "solo", "namespace": "ns-pod"}})
    )
    proc = gate.kubectl.run(
        "create",
        "--raw",
        "/api/v1/namespaces/ns-pod/pods/solo/eviction",
        "-f",
        str(eviction),
        user="alice",
        check=False,
    )
    assert proc.returncode != 0
    assert "kubectl-gitops" in proc.stderr, proc.stderr
    gate.kubectl.run("-n", "ns-pod", "get", "pod", "solo")  # still there


def test_an_hpa_changed_through_another_api_version_is_refused(gate: Gate) -> None:
    hpa = (
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\n"
        "spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n"
        "  minReplicas: 2\n  maxReplicas: 5\n"
    )
    gate.synced("hpa", {"hpa.yaml": hpa})
    for resource in ("hpa.v1.autoscaling", "hpa.v2.autoscaling"):
        proc = as_alice(gate, "ns-hpa", "patch", resource, "web", "--type=merge", "-p", '{"spec":{"maxReplicas":50}}')
        assert refused(proc), (resource, proc.stderr)
    max_replicas = gate.kubectl.run("-n", "ns-hpa", "get", "hpa", "web", "-o", "jsonpath={.spec.maxReplicas}").stdout
    assert max_replicas == "5"
