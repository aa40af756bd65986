"""Fixtures of the tests that run pods: one node per machine (`hack/local-cluster up --node`), shared by the session,
and Git served to the pods over the pod network, as a real remote."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from localcluster import node as nodehost
from localcluster.build import NODE_BINARIES
from localcluster.cluster import LocalCluster

from ..cluster.test_webhook_gate import wait_for
from ..conftest import REPO_ROOT, Gitops, GitRepo, Kubectl

__all__ = ["wait_for"]  # the node tests' poll with a deadline, as the cluster tests'


def host_snapshot() -> dict[str, object]:
    """What a node may change on the machine, as `down` must leave it: links, addresses, routes, netfilter, the
    sysctls, the mounts, the cgroups, the host directories, and any process of the node's binaries."""
    node_binaries = {str(nodehost_bin() / name) for name in NODE_BINARIES} | {str(nodehost.RUNC)}
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    processes = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            exe = os.readlink(entry / "exe")
            if exe in node_binaries:
                processes.append(exe)
    return {
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "addresses": subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout,
        "routes": subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout,
        "nft": re.sub(r"counter packets \d+ bytes \d+", "counter", ruleset),
        "iptables": "\n".join(line for line in iptables.splitlines() if not line.startswith("#")),
        "sysctls": {name: nodehost._read_sysctl(name) for name in nodehost.SYSCTLS},
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "cgroups": sorted(str(p) for h in nodehost.cgroup_hierarchies() for p in h.iterdir() if p.is_dir()),
        "host_dirs": [str(d) for d in (*nodehost.HOST_DIRS, nodehost.MACHINE_LOCK) if d.exists()],
        "processes": sorted(processes),
    }


def nodehost_bin() -> Path:
    from localcluster import build

    return build.bin_dir()


def node_prerequisites() -> str:
    """Why this machine cannot run a node ("" when it can)."""
    if os.geteuid() != 0:
        return "a node needs root"
    missing = [str(p) for p in (nodehost.RUNC, nodehost.CNI_BIN / "bridge", nodehost.CATATONIT) if not p.exists()]
    missing += [t for t in ("buildah", "mmdebstrap", "nft", "iptables") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}: run hack/setup --node" if missing else ""


@dataclass
class GitDaemon:
    """`git daemon` on the host's address on the pod network: what pods clone from, as from any remote."""

    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    repos: list[Path] = field(default_factory=list)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind((nodehost.HOST_ADDRESS, 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={self.root}",
                f"--listen={nodehost.HOST_ADDRESS}",
                f"--port={self.port}",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((nodehost.HOST_ADDRESS, self.port), 1):
                return
            time.sleep(0.1)
        raise AssertionError("git daemon did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def url(self, repo: GitRepo) -> str:
        """git://HOST:PORT/NAME for a repository made under the daemon's root."""
        return f"git://{nodehost.HOST_ADDRESS}:{self.port}/{repo.path.relative_to(self.root)}"

    def repo(self, source: str) -> GitRepo:
        """A repository holding a copy of a folder of this project, served by the daemon."""
        path = self.root / f"repo-{uuid.uuid4().hex[:8]}"
        shutil.copytree(REPO_ROOT / source, path)
        repo = GitRepo(path)
        repo.git("init", "-q", "-b", "main")
        repo.commit(f"add {source}")
        return repo


@dataclass
class Node:
    cluster: LocalCluster
    kubectl: Kubectl
    gitops: Gitops
    git: GitDaemon
    work: Path


class NodeSlot:
    """The machine's one node, started when a test first needs it and shared by the session; a test that needs
    the machine without it (the teardown tests) releases it first."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.node: Node | None = None
        self.runs = 0
        self.image_loaded = False

    def with_image(self) -> Node:
        """The node with the project's image (hack/image) loaded into its containerd and manifests/ applied."""
        node = self.get()
        if not self.image_loaded:
            image = subprocess.run(
                [str(REPO_ROOT / "hack" / "image"), "--load", str(node.cluster.dir)],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            assert image.returncode == 0, image.stderr
            node.kubectl.run("apply", "-k", str(REPO_ROOT / "manifests"))
            self.image_loaded = True
        return node

    def get(self) -> Node:
        if self.node is None:
            self.runs += 1
            work = self.work / f"run-{self.runs}"
            cluster = LocalCluster(work / "state")
            cluster.up(with_node=True)
            state = cluster.load_state()
            assert state is not None
            kubectl = Kubectl(Path(state.bin_dir) / "kubectl", cluster)
            git = GitDaemon(work / "git")
            git.start()
            self.node = Node(cluster, kubectl, Gitops(kubectl, work / "cache"), git, work)
        return self.node

    def release(self) -> None:
        if self.node is not None:
            node, self.node = self.node, None
            self.image_loaded = False
            node.git.stop()
            node.cluster.down()


@pytest.fixture(scope="session")
def node_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSlot]:
    why = node_prerequisites()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the node tests: {why}")
        pytest.skip(why)
    slot = NodeSlot(tmp_path_factory.mktemp("node"))
    yield slot
    slot.release()


@pytest.fixture
def node(node_slot: NodeSlot) -> Node:
    return node_slot.get()


LOCAL_CLUSTER = [sys.executable, "-m", "localcluster"]
