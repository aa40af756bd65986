"""Fixtures shared by the whole suite. The control plane starts only when a `cluster` test asks for it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from localcluster.cluster import LocalCluster, developers_edit
from localcluster.errors import ClusterError


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real control plane per test session, in its own temporary directory (parallel runs never collide)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("local-cluster") / "state")
    try:
        cluster.up()
    except ClusterError as first:
        # One retry on fresh ports: a start-up race (a port taken between choosing and binding it) is no test result.
        print(f"the local cluster failed to start once, retrying: {first}", file=sys.stderr)
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

    def edit(
        self, namespace: str, resource: str, old: str, new: str, *, user: str, scratch: Path
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl edit` as a person would, with an EDITOR script that replaces `old` by `new` in the buffer."""
        editor = scratch / "editor.sh"
        editor.write_text(f"#!/bin/sh\nsed -i 's/{old}/{new}/' \"$1\"\n")
        editor.chmod(0o755)
        argv = [str(self.binary), f"--kubeconfig={self.cluster.kubeconfig(user)}", "-n", namespace, "edit", resource]
        return subprocess.run(
            argv, env={**os.environ, "KUBE_EDITOR": str(editor)}, capture_output=True, text=True, timeout=60
        )


@pytest.fixture(scope="session")
def kubectl(local_cluster: LocalCluster) -> Kubectl:
    state = local_cluster.load_state()
    assert state is not None
    return Kubectl(Path(state.bin_dir) / "kubectl", local_cluster)


def grant_developers_edit(kubectl: Kubectl, namespace: str) -> None:
    """alice and oncall (group developers) may edit `namespace`, and only it; returns once RBAC says so."""
    kubectl.run("apply", "-f", "-", stdin=developers_edit(namespace))
    deadline = time.monotonic() + 30
    while kubectl.run("-n", namespace, "auth", "can-i", "patch", "configmaps", user="alice", check=False).returncode:
        if time.monotonic() > deadline:
            raise AssertionError(f"alice cannot edit {namespace} 30 s after her RoleBinding was made")
        time.sleep(0.1)


APPLICATIONS = "applications.gitops.kubectl-gitops.io"


def delete_applications_of(kubectl: Kubectl, namespace: str) -> None:
    """Deletes the Applications a test made for `namespace`: named after it, or sending objects to it (or to a
    namespace named after it). Left behind, every webhook a later module starts would load them all, and a broken
    one among them, before it serves."""
    listed = kubectl.run("-n", "gitops-system", "get", APPLICATIONS, "-o", "json", check=False)
    if listed.returncode:
        return  # not installed (yet), or gitops-system is gone: nothing of this test's is left there
    names = [
        str(item["metadata"]["name"])
        for item in json.loads(listed.stdout).get("items") or []
        if str(item["metadata"]["name"]).startswith(namespace)
        or str(((item.get("spec") or {}).get("destination") or {}).get("namespace") or "").startswith(namespace)
    ]
    if names:
        kubectl.run("-n", "gitops-system", "delete", APPLICATIONS, *names, "--ignore-not-found", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace for one test, where the developers (alice, oncall) have `edit`; deleted (without waiting)
    afterwards, with the Applications the test made for it."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl.run("create", "namespace", name)
    grant_developers_edit(kubectl, name)
    yield name
    delete_applications_of(kubectl, name)
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Gitops:
    """The real `kubectl gitops` (through the pinned kubectl's plugin lookup), run as one of the identities."""

    kubectl: Kubectl
    cache: Path
    defaults: tuple[tuple[str, str], ...] = ()  # environment every run gets (say, KUBECTL_GITOPS_FULL=1)

    def env(self, user: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.kubectl.binary.parent}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubectl.cluster.kubeconfig(user)),
            "XDG_CACHE_HOME": str(self.cache),
            **dict(self.defaults),
            **(extra or {}),
        }

    def run(
        self,
        *args: str,
        user: str = "admin",
        expect: int | None = 0,
        env: dict[str, str] | None = None,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl.binary), "gitops", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(user, env), timeout=timeout)
        if expect is not None and proc.returncode != expect:
            raise AssertionError(
                f"kubectl gitops {' '.join(args)} as {user}: exit {proc.returncode}, wanted {expect}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


@pytest.fixture(scope="session")
def gitops(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Gitops:
    """`kubectl gitops`, with the Application CRD installed once per session."""
    runner = Gitops(kubectl, tmp_path_factory.mktemp("gitops-cache"))
    runner.run("install")
    return runner


SHORTCUT_MODES = {"fingerprints": (), "full": (("KUBECTL_GITOPS_FULL", "1"),)}


@pytest.fixture(params=sorted(SHORTCUT_MODES))
def gitops_both_ways(request: pytest.FixtureRequest, gitops: Gitops) -> Gitops:
    """`kubectl gitops` once trusting the fingerprints of the last sync (the default) and once with --full: the
    suites that prove no drift is missed and none is made up run both ways."""
    return dataclasses.replace(gitops, defaults=SHORTCUT_MODES[request.param])


@dataclass
class GitRepo:
    """A real Git repository in a temporary directory, committed to like a user would."""

    path: Path

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[[str | None], GitRepo]:
    """Factory: a repository whose first commit holds a copy of a folder of this project (or nothing)."""

    def make(source: str | None = None) -> GitRepo:
        path = tmp_path / f"repo-{uuid.uuid4().hex[:6]}"
        if source:
            shutil.copytree(REPO_ROOT / source, path)
        else:
            path.mkdir()
        repo = GitRepo(path)
        repo.git("init", "-q", "-b", "main")
        if source:
            repo.commit(f"add {source}")
        return repo

    return make


@pytest.fixture
def collect_git_processes() -> Iterator[None]:
    """GitPython keeps `git cat-file` processes per repository object. A test's repositories are collected when it
    ends, so that their processes end with it, not in the middle of a later test (where `filterwarnings = error` would
    turn the ResourceWarning of a still-running process into that test's failure)."""
    yield
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
