"""`hack/local-cluster up --node` and `down` as a person runs them: the node comes up Ready with pods running, a
second node on the machine is refused, and `down` leaves the machine exactly as it found it, after a clean run, after
every process was killed, and after a start that failed half-way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from localcluster import node as nodehost
from localcluster.cluster import LocalCluster

from ..conftest import Kubectl
from .conftest import LOCAL_CLUSTER, NodeSlot, host_snapshot, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.node]

PAUSE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {
        "containers": [{"name": "sleeper", "image": nodehost.PAUSE_IMAGE, "imagePullPolicy": "Never"}],
        "terminationGracePeriodSeconds": 1,
    },
}


def local_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "hack")}
    return subprocess.run([*LOCAL_CLUSTER, *args], capture_output=True, text=True, timeout=300, env=env)


def run_a_pod(cluster: LocalCluster) -> Kubectl:
    state = cluster.load_state()
    assert state is not None
    kubectl = Kubectl(Path(state.bin_dir) / "kubectl", cluster)
    kubectl.run("apply", "-f", "-", stdin=json.dumps(PAUSE_POD))

    def running() -> bool:
        phase = kubectl.run("get", "pod", "sleeper", "-o", "jsonpath={.status.phase}", check=False).stdout
        return phase == "Running"

    wait_for(running, "a pod to run on the node")
    return kubectl


def test_down_after_a_clean_run_leaves_the_machine_as_it_was(node_slot: NodeSlot, tmp_path: Path) -> None:
    node_slot.release()
    before = host_snapshot()
    up = local_cluster("up", "--node", "--dir", str(tmp_path / "c"))
    assert up.returncode == 0, up.stderr
    assert "node 127.0.0.1 is Ready" in up.stderr
    cluster = LocalCluster(tmp_path / "c")
    run_a_pod(cluster)
    during = host_snapshot()
    assert nodehost.BRIDGE in during["links"]  # type: ignore[operator]
    assert during["processes"]
    down = local_cluster("down", "--dir", str(tmp_path / "c"))
    assert down.returncode == 0, down.stderr
    assert "the machine is as it was before the node" in down.stderr
    assert host_snapshot() == before


def test_a_second_node_on_the_machine_is_refused(node_slot: NodeSlot, tmp_path: Path) -> None:
    first = node_slot.get()
    second = local_cluster("up", "--node", "--dir", str(tmp_path / "second"))
    assert second.returncode == 1
    assert f"a node already runs on this machine, started from {first.cluster.dir}" in second.stderr
    assert f"hack/local-cluster down --dir {first.cluster.dir}" in second.stderr
    assert not (tmp_path / "second").exists()
    assert first.cluster.is_up()  # untouched


def test_down_after_every_process_was_killed_leaves_the_machine_as_it_was(node_slot: NodeSlot, tmp_path: Path) -> None:
    node_slot.release()
    before = host_snapshot()
    up = local_cluster("up", "--node", "--dir", str(tmp_path / "c"))
    assert up.returncode == 0, up.stderr
    cluster = LocalCluster(tmp_path / "c")
    run_a_pod(cluster)
    state = cluster.load_state()
    assert state is not None
    for record in state.processes.values():  # a crash of everything at once: nothing stops gracefully
        os.killpg(record.pid, signal.SIGKILL)
    down = local_cluster("down", "--dir", str(tmp_path / "c"))
    assert down.returncode == 0, down.stderr
    assert host_snapshot() == before


def test_a_start_that_fails_half_way_leaves_the_machine_as_it_was(node_slot: NodeSlot, tmp_path: Path) -> None:
    """The kubelet cannot bind its port: the bridge, containerd, the cgroups and the sysctls changed by then are
    undone, and the error says why."""
    node_slot.release()
    before = host_snapshot()
    cluster = LocalCluster(tmp_path / "c")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", nodehost.FIXED_PORTS["kubelet"]))
        squatter.listen()
        up = local_cluster("up", "--node", "--dir", str(cluster.dir))
    assert up.returncode == 1
    assert "kubelet exited during start-up" in up.stderr
    assert "A port it needs is in use" in up.stderr
    assert host_snapshot() == before
