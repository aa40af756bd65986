"""Fixtures shared by the whole suite. The control plane starts only when a `cluster` test asks for it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from localcluster.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real control plane per test session, in its own temporary directory (parallel runs never collide)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("local-cluster") / "state")
    cluster.up()
    yield cluster
    cluster.down()


@dataclass(frozen=True)
class Kubectl:
    """The pinned kubectl, run as one of the cluster's identities (admin, alice, gitops, breakglass)."""

    binary: Path
    cluster: LocalCluster

    def run(
        self, *args: str, user: str = "admin", check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.cluster.kubeconfig(user)}", *args]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} as {user} failed ({proc.returncode}): {proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def kubectl(local_cluster: LocalCluster) -> Kubectl:
    state = local_cluster.load_state()
    assert state is not None
    return Kubectl(Path(state.bin_dir) / "kubectl", local_cluster)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)
