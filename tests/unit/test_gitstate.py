"""The webhook's index of Git's state, with a fake cluster and real local Git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.gitstate import DesiredState
from engine.kube import ResourceInfo
from engine.objects import ObjectKey
from engine.source import GitSource
from engine.webhookconfig import ManagedResource

CONFIGMAP = ResourceInfo("", "v1", "ConfigMap", "configmaps", True)
DEPLOYMENT = ResourceInfo("apps", "v1", "Deployment", "deployments", True, frozenset({"scale", "status"}))
SERVED = {(r.api_version, r.kind): r for r in (CONFIGMAP, DEPLOYMENT)}


class FakeCluster:
    """Answers a dry-run apply like the API server would, with our manager owning what was sent."""

    def __init__(self) -> None:
        self.dry_runs = 0

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo | None:
        return SERVED.get((api_version, kind))

    def preferred(self, group: str, kind: str) -> ResourceInfo | None:
        return next((r for r in SERVED.values() if (r.group, r.kind) == (group, kind)), None)

    def apply(self, info: ResourceInfo, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        assert kwargs.get("dry_run"), "the index only ever dry-runs"
        self.dry_runs += 1
        fields = {"f:data": {f"f:{k}": {} for k in obj.get("data", {})}}
        metadata = {
            **obj["metadata"],
            "uid": "u",
            "managedFields": [
                {"manager": "kubectl-gitops", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}
            ],
        }
        return {**obj, "metadata": metadata}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def configmap(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: {value}}}\n"


def application(repo: Path, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "gitops.kubectl-gitops.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop", "namespace": "gitops-system", "generation": generation},
        "spec": {"source": {"repoURL": str(repo)}, "destination": {"namespace": "shop"}, "driftMode": "warn"},
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, {"a.yaml": configmap("a", "one")}, "first")
    return path


@pytest.fixture
def apps() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def state(tmp_path: Path, apps: list[dict[str, Any]]) -> tuple[DesiredState, FakeCluster]:
    cluster = FakeCluster()
    return (
        DesiredState(
            cluster,  # type: ignore[arg-type]
            lambda: list(apps),
            source_factory=lambda url: GitSource(url, tmp_path / "cache"),
            load_timeout=30,
            retry_seconds=0,
        ),
        cluster,
    )


A = ObjectKey("", "ConfigMap", "shop", "a")
B = ObjectKey("", "ConfigMap", "shop", "b")


def test_refresh_indexes_git_as_stored(state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path) -> None:
    index, _ = state
    assert not index.ready
    apps.append(application(repo))
    index.refresh()
    found = index.lookup(A)
    assert found is not None
    assert (found.mode, found.app, found.stored["data"]) == ("warn", "gitops-system/shop", {"k": "one"})
    assert found.stored["metadata"]["name"] == "a"  # the probe name never shows
    assert dict(found.declared) == {"f:data": {"f:k": {}}}
    assert index.ready
    assert index.status()["applications"]["gitops-system/shop"]["objects"] == 1


def test_an_unchanged_application_is_not_rendered_again_until_a_full_refresh(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, cluster = state
    apps.append(application(repo))
    index.refresh()
    index.refresh(full=False)
    assert cluster.dry_runs == 1
    apps[0] = application(repo, generation=2)
    index.refresh(full=False)
    assert cluster.dry_runs == 2
    index.refresh()
    assert cluster.dry_runs == 3


def test_a_failing_source_keeps_the_last_good_state_and_is_retried(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path, tmp_path: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    moved = tmp_path / "moved"
    repo.rename(moved)
    index.refresh()
    assert index.lookup(A) is not None  # still decides from the last good state
    assert "cannot fetch" in index.status()["applications"]["gitops-system/shop"]["error"]
    moved.rename(repo)
    index.refresh(full=False)  # an errored Application is retried even without a change
    assert index.status()["applications"]["gitops-system/shop"]["error"] == ""


def test_a_new_commit_named_by_a_request_is_loaded_and_promoted_when_it_is_the_head(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    assert index.lookup(B) is None
    second = commit(repo, {"b.yaml": configmap("b", "two")}, "second")
    (repo / "a.yaml").unlink()
    third = commit(repo, {}, "third: no a")
    found = index.lookup(A, revision=second)
    assert found is not None
    assert found.revision == second
    assert index.lookup(A) is not None  # the second commit is not the head: the Application stays where it was
    assert index.lookup(B, revision=third, app_name="shop") is not None  # new in that commit: a sync creates it
    assert index.lookup(A) is None  # the head was loaded: it is the Application's state now (a prune passes)
    assert index.status()["applications"]["gitops-system/shop"]["revision"] == third


def test_a_removed_application_leaves_the_index(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    apps.clear()
    index.refresh()
    assert index.lookup(A) is None
    assert index.app_names() == set()


def test_an_older_commit_cannot_bring_back_an_object_git_dropped(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    with_b = commit(repo, {"b.yaml": configmap("b", "two")}, "add b")
    (repo / "b.yaml").unlink()
    commit(repo, {}, "drop b")
    apps.append(application(repo))
    index.refresh()  # at the head: no b
    assert index.lookup(B) is None
    assert index.lookup(B, revision=with_b, app_name="shop") is None


def test_an_older_commit_named_for_an_existing_object_is_ignored(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    first = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"a.yaml": configmap("a", "changed")}, "change a")
    apps.append(application(repo))
    index.refresh()
    found = index.lookup(A, revision=first)
    assert found is not None
    assert (found.revision, found.stored["data"]) == (head, {"k": "changed"})


def test_a_commit_not_fetched_yet_is_fetched_once(tmp_path: Path, repo: Path) -> None:
    source = GitSource(str(repo), tmp_path / "cache")
    source.fetch()
    new = commit(repo, {"c.yaml": configmap("c", "three")}, "third")
    assert not source.has_commit(new)
    assert not source.has_commit("f" * 40)
    assert source.ensure_commit(new)
    assert source.has_commit(new)


def test_managed_resources_are_those_of_the_objects_in_the_index(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    configmaps, deployments = ManagedResource("", "configmaps"), ManagedResource("apps", "deployments", True)
    assert index.managed_resources() == set()
    apps.append(application(repo))
    index.refresh()
    assert index.managed_resources() == {configmaps}
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
    commit(repo, {"web.yaml": deployment}, "a deployment")
    index.refresh()
    assert index.managed_resources() == {
        ManagedResource("", "configmaps"),
        ManagedResource("apps", "deployments", True),
    }
    (repo / "a.yaml").unlink()
    commit(repo, {}, "no configmap")
    index.refresh()
    assert index.managed_resources() == {deployments}  # the index is Git now (the registration never drops one)
    apps.clear()
    index.refresh()
    assert index.managed_resources() == set()
