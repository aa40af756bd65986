"""The local control plane behaves like a real cluster: RBAC, controllers, versions, lifecycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from localcluster import build
from localcluster.cluster import LocalCluster, process_alive

from ..conftest import Kubectl

pytestmark = pytest.mark.cluster

HACK = Path(__file__).resolve().parents[2] / "hack" / "local-cluster"


def test_alice_can_create_a_configmap_but_not_a_namespace(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("-n", namespace, "create", "configmap", "settings", "--from-literal=a=b", user="alice")
    denied = kubectl.run("create", "namespace", f"{namespace}-alice", user="alice", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "alice" cannot create resource "namespaces"' in denied.stderr


def test_identities_carry_their_groups_and_sync_is_not_a_master(kubectl: Kubectl) -> None:
    def whoami(user: str) -> dict[str, object]:
        out = kubectl.run("auth", "whoami", "-o", "json", user=user).stdout
        info: dict[str, object] = json.loads(out)["status"]["userInfo"]
        return info

    assert whoami("gitops")["username"] == "gitops-sync"
    assert "system:masters" not in whoami("gitops")["groups"]  # type: ignore[operator]
    assert "gitops:sync" in whoami("gitops")["groups"]  # type: ignore[operator]
    oncall = whoami("breakglass")
    assert oncall["username"] == "oncall"
    assert {"developers", "gitops:break-glass"} <= set(oncall["groups"])  # type: ignore[call-overload]
    # Authorization is really exercised for gitops-sync: through its ClusterRoleBinding, not a bypass.
    can = kubectl.run("auth", "can-i", "create", "customresourcedefinitions", user="gitops", check=False)
    assert can.stdout.strip() == "yes"
    cannot = kubectl.run("auth", "can-i", "create", "clusterrolebindings", user="alice", check=False)
    assert cannot.stdout.strip() == "no"


def test_kubectl_and_server_report_the_pinned_version(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl.run("version", "-o", "json").stdout)
    pinned = build.read_pins().kubernetes
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned
    assert versions["serverVersion"]["minor"] == pinned.split(".")[1]


def test_deleting_a_namespace_finishes(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("-n", namespace, "create", "configmap", "doomed", "--from-literal=k=v")
    # The namespace's default ServiceAccount proves the serviceaccount controller runs.
    kubectl.run("-n", namespace, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
    kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=90s", timeout=120)
    gone = kubectl.run("get", "namespace", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_garbage_collector_removes_dependents(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("-n", namespace, "create", "configmap", "owner", "--from-literal=k=v")
    uid = kubectl.run("-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}").stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    kubectl.run("-n", namespace, "create", "-f", "-", stdin=json.dumps(dependent))
    kubectl.run("-n", namespace, "delete", "configmap", "owner")
    kubectl.run("-n", namespace, "wait", "--for=delete", "configmap/dependent", "--timeout=60s", timeout=90)


def test_up_on_a_running_cluster_says_so(local_cluster: LocalCluster) -> None:
    proc = subprocess.run([str(HACK), "up", "--dir", str(local_cluster.dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "already up" in proc.stderr
    status = subprocess.run([str(HACK), "status", "--dir", str(local_cluster.dir)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "ready" in status.stdout
    assert "kube-controller-manager" in status.stdout


def test_second_cluster_side_by_side_survives_kill_down_and_up(
    local_cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path
) -> None:
    other = LocalCluster(tmp_path / "other")
    first = other.up()
    try:
        assert first.server != local_cluster.load_state().server  # type: ignore[union-attr]
        assert other.is_up()
        assert local_cluster.is_up()
        other_kubectl = Kubectl(kubectl.binary, other)
        other_kubectl.run("create", "namespace", "only-in-other")
        assert "NotFound" in kubectl.run("get", "namespace", "only-in-other", check=False).stderr

        # A killed run leaves a stale directory; `up` recovers it.
        for record in first.processes.values():
            os.kill(record.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert not other.is_up()
        recovered = other.up()
        assert other.is_up()

        # down then up on the same directory.
        other.down()
        assert not other.dir.exists()
        assert not any(process_alive(record) for record in recovered.processes.values())
        other.up()
        Kubectl(kubectl.binary, other).run("get", "namespace", "default")
    finally:
        other.down()
    assert local_cluster.is_up()


def test_env_file_puts_pinned_kubectl_first(local_cluster: LocalCluster) -> None:
    env_file = local_cluster.dir / "env"
    script = f'source "{env_file}" && command -v kubectl && echo "$KUBECONFIG"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(Path(local_cluster.load_state().bin_dir) / "kubectl")  # type: ignore[union-attr]
    assert out[1] == str(local_cluster.kubeconfig("admin"))


def test_kubectl_finds_the_plugin(local_cluster: LocalCluster) -> None:
    script = f'source "{local_cluster.dir / "env"}" && kubectl gitops version'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Client Version: kubectl-gitops" in proc.stdout
    assert f"Server Version: {build.read_pins().kubernetes}" in proc.stdout


def test_alice_edits_her_namespace_only_and_never_reads_the_platforms_secrets(kubectl: Kubectl, namespace: str) -> None:
    def can(*args: str) -> bool:
        proc = kubectl.run("auth", "can-i", *args, user="alice", check=False)
        return proc.stdout.strip() == "yes"

    assert can("-n", namespace, "patch", "deployments")
    assert can("-n", namespace, "get", "secrets")  # `edit` in her own namespace, as before
    kubectl.run("create", "namespace", "gitops-system", check=False)  # there in every real install
    kubectl.run("-n", "gitops-system", "create", "secret", "generic", "probe", "--from-literal=k=v", check=False)
    for ns in ("gitops-system", "kube-system", "default"):
        assert not can("-n", ns, "get", "secrets"), ns
        assert not can("-n", ns, "list", "secrets"), ns
        assert not can("-n", ns, "create", "serviceaccounts/token"), ns
    # really, not only as can-i says
    try:
        for args in (("get", "secret", "probe"), ("get", "secrets"), ("get", "secret", "gitops-webhook-tls")):
            denied = kubectl.run("-n", "gitops-system", *args, user="alice", check=False)
            assert denied.returncode != 0
            assert "Forbidden" in denied.stderr, denied.stderr
    finally:
        kubectl.run("-n", "gitops-system", "delete", "secret", "probe", check=False)
    kubectl.run("-n", "kube-system", "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
    token = kubectl.run("-n", "kube-system", "create", "token", "default", user="alice", check=False)
    assert token.returncode != 0
    assert 'cannot create resource "serviceaccounts/token"' in token.stderr, token.stderr
    impersonate = kubectl.run(
        "--as=system:serviceaccount:kube-system:default", "-n", "kube-system", "get", "pods", user="alice", check=False
    )
    assert impersonate.returncode != 0
    assert "Forbidden" in impersonate.stderr, impersonate.stderr
    assert 'User "alice" cannot impersonate' in impersonate.stderr, impersonate.stderr
    assert not can("-n", "kube-system", "impersonate", "serviceaccounts")
    assert can("-n", namespace, "impersonate", "serviceaccounts")  # `edit` does, in her namespace: not beyond
    oncall = kubectl.run("-n", "gitops-system", "get", "secrets", user="breakglass", check=False)
    assert "Forbidden" in oncall.stderr, oncall.stderr
