"""The reconciler as it runs in a cluster: `kubectl apply -k manifests/controller/` on the node, the project's image,
two replicas electing one leader through the Lease; a leader killed without warning hands over; an Application with
automated sync is synced from inside the cluster, from a Git remote on the pod network, with nobody running `sync`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import REPO_ROOT
from .conftest import Node, NodeSlot, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.node]

NS = "gitops-system"
SELECTOR = "app.kubernetes.io/name=gitops-controller"


@pytest.fixture(scope="module")
def controller(node_slot: NodeSlot) -> Iterator[Node]:
    node = node_slot.with_image()
    node.kubectl.run("apply", "-k", str(REPO_ROOT / "manifests" / "controller"))
    node.kubectl.run("-n", NS, "rollout", "status", "deployment/gitops-controller", "--timeout=180s", timeout=200)
    yield node
    node.kubectl.run("delete", "-k", str(REPO_ROOT / "manifests" / "controller"), "--wait=false", check=False)


def pods(node: Node) -> list[dict[str, Any]]:
    out = node.kubectl.run("-n", NS, "get", "pods", "-l", SELECTOR, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def holder(node: Node) -> str:
    proc = node.kubectl.run(
        "-n", NS, "get", "lease", "gitops-controller", "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def leader_pod(node: Node) -> str:
    """The pod whose replica holds the Lease (its identity starts with the pod's name), or ""."""
    identity = holder(node)
    return next((p["metadata"]["name"] for p in pods(node) if identity.startswith(p["metadata"]["name"] + "_")), "")


def test_one_of_two_pods_leads(controller: Node) -> None:
    wait_for(lambda: len(pods(controller)) == 2 and leader_pod(controller), "one of the two replicas to lead")
    ready = [
        p
        for p in pods(controller)
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
    ]
    assert len(ready) == 2


def test_a_killed_leader_hands_over(controller: Node) -> None:
    wait_for(lambda: leader_pod(controller), "a leader")
    leader = leader_pod(controller)
    identity = holder(controller)
    pod = next(p for p in pods(controller) if p["metadata"]["name"] == leader)
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    state = controller.cluster.load_state()
    assert state is not None
    crictl = [
        f"{state.bin_dir}/crictl",
        f"--runtime-endpoint=unix://{controller.cluster.dir / 'node' / 'containerd' / 'containerd.sock'}",
    ]
    info = json.loads(subprocess.run([*crictl, "inspect", container], capture_output=True, text=True).stdout)
    os.kill(int(info["info"]["pid"]), signal.SIGKILL)  # no graceful release of the Lease: it must expire

    def handed_over() -> bool:
        now = holder(controller)
        return bool(now) and now != identity and not now.startswith(leader + "_")

    wait_for(handed_over, "the other replica to take the Lease over", timeout=90)


def test_automated_sync_from_inside_the_cluster(controller: Node) -> None:
    name = f"c-{os.urandom(4).hex()}"
    controller.kubectl.run("create", "namespace", name)
    repo = controller.git.repo("examples/guestbook")
    url = controller.git.url(repo)
    controller.gitops.run("create", name, "--repo", url, "--dest-namespace", name, "--auto-sync", "--interval", "2s")

    def message() -> str:
        proc = controller.kubectl.run(
            "-n", name, "get", "configmap", "guestbook-settings", "-o", "jsonpath={.data.message}", check=False
        )
        return proc.stdout if proc.returncode == 0 else ""

    wait_for(lambda: message() == "Hello from Git!", "the controller to sync the new Application")
    target = next(p for p in repo.path.glob("*.yaml") if "guestbook-settings" in p.read_text())
    target.write_text(target.read_text().replace("Hello from Git!", "Hello from the controller"))
    sha = repo.commit("a new message")
    wait_for(lambda: message() == "Hello from the controller", "the controller to sync the new commit")
    status = json.loads(controller.kubectl.run("-n", NS, "get", "application", name, "-o", "json").stdout)["status"]
    assert sha in json.dumps(status)  # the Application says which commit the controller synced
    controller.gitops.run("delete", name, expect=None)
    controller.kubectl.run("delete", "namespace", name, "--wait=false", check=False)
