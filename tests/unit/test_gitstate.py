"""The webhook's index of Git's state, with a fake cluster and real local Git repositories."""

from __future__ import annotations

import gc
import secrets
import subprocess
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import gitstate
from engine.adapters.source import GitSource
from engine.compare import DesiredObject, load_desired
from engine.core.admission import Found, GitObject
from engine.core.errors import ApiError, GitOpsError, SourceError
from engine.core.manifests import Manifest
from engine.core.objects import REVISION_ANNOTATION, TRACKING_ANNOTATION, TRACKING_LABEL, AppRef, Claim, ObjectKey
from engine.core.resources import Applied, ResourceInfo
from engine.core.webhookconfig import ManagedResource
from engine.gitstate import CHECKS_AT_ONCE, EXTRA_REVISIONS, DesiredState, stored_form

from ..fakes import FakeClock, FakeCluster, namespace

pytestmark = pytest.mark.usefixtures("collect_git_processes")  # see tests/conftest.py


def cluster(*namespaces: str) -> FakeCluster:
    return FakeCluster(objects=[namespace(n) for n in namespaces])


def dry_runs(cluster: FakeCluster) -> int:
    return len(cluster.made("apply", dry_run=True))


def git_at(index: DesiredState, key: ObjectKey, revision: str = "", app_name: str = "") -> GitObject | None:
    """Git's object for `key` as a request would find it: naming `revision`, claiming `app_name` by its label."""
    return index.lookup(key, revision, (Claim("", app_name),) if app_name else ()).git


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
    fake = cluster("shop", "gitops-system")
    return (
        DesiredState(
            fake,
            lambda: list(apps),
            source_factory=lambda url: GitSource(url, tmp_path / "cache"),
            load_timeout=30,
            retry_seconds=0,
        ),
        fake,
    )


A = ObjectKey("", "ConfigMap", "shop", "a")
B = ObjectKey("", "ConfigMap", "shop", "b")


def test_refresh_indexes_git_as_stored(state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path) -> None:
    index, fake = state
    assert not index.ready
    apps.append(application(repo))
    index.refresh()
    found = git_at(index, A)
    assert found is not None
    assert (found.mode, found.app, found.stored["data"]) == ("warn", AppRef("gitops-system", "shop"), {"k": "one"})
    assert found.stored["metadata"]["name"] == "a"  # the probe name never shows
    # What Git declares, and our tracking marks: the probe carries no tracking label (it must not reach the webhook),
    # yet taking the label off the live object is drift.
    assert dict(found.declared) == {
        "f:data": {"f:k": {}},
        "f:metadata": {
            "f:labels": {f"f:{TRACKING_LABEL}": {}},
            "f:annotations": {f"f:{TRACKING_ANNOTATION}": {}, f"f:{REVISION_ANNOTATION}": {}},
        },
    }
    assert "managedFields" not in found.stored["metadata"]
    assert {(r.verb, r.dry_run) for r in fake.requests} == {("discover", False), ("apply", True)}  # dry runs only
    assert index.ready
    assert index.status()["applications"]["gitops-system/shop"]["objects"] == 1


def test_objects_of_one_shape_share_their_declared_fields_and_strings(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    """engine.core.compact in the index: two ConfigMaps that declare the same fields hold one copy of that set, and
    their keys and short values are the process's one copy of each string."""
    index, _ = state
    commit(repo, {"b.yaml": configmap("b", "two")}, "second")
    apps.append(application(repo))
    index.refresh()
    a, b = git_at(index, A), git_at(index, B)
    assert a is not None
    assert b is not None
    assert a.declared is b.declared
    assert a.stored["data"] == {"k": "one"}
    assert b.stored["data"] == {"k": "two"}
    key_a = next(k for k in a.stored if k == "apiVersion")
    key_b = next(k for k in b.stored if k == "apiVersion")
    assert key_a is key_b
    assert a.stored["metadata"]["namespace"] is b.stored["metadata"]["namespace"]


def test_each_object_git_declares_is_let_go_once_probed(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered objects are not all held while an Application loads: what a probed one took is reused for the
    index rather than left beside it (bench/webhook_memory.py, the process's memory once loaded)."""
    index, _ = state
    commit(repo, {"b.yaml": configmap("b", "two"), "c.yaml": configmap("c", "three")}, "second")
    apps.append(application(repo))
    rendered: list[weakref.ref[DesiredObject]] = []
    alive: list[int] = []
    real_load, real_probe = load_desired, gitstate.stored_form

    def load(*args: Any, **kwargs: Any) -> Any:
        desired = real_load(*args, **kwargs)
        rendered.extend(weakref.ref(d) for d in desired.objects)
        return desired

    def probe(*args: Any, **kwargs: Any) -> Any:
        gc.collect()
        alive.append(sum(r() is not None for r in rendered))
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(gitstate, "PROBE_CHUNK", 1)
    monkeypatch.setattr(gitstate, "load_desired", load)
    monkeypatch.setattr(gitstate, "stored_form", probe)
    index.refresh()
    assert len(rendered) == 3
    assert alive == [3, 2, 1]  # the ones not probed yet, the one being probed among them
    assert index.status()["applications"]["gitops-system/shop"]["objects"] == 3


def test_an_unchanged_application_is_not_rendered_again_until_a_full_refresh(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, fake = state
    apps.append(application(repo))
    index.refresh()
    index.refresh(full=False)
    assert dry_runs(fake) == 1
    apps[0] = application(repo, generation=2)
    index.refresh(full=False)
    assert dry_runs(fake) == 2
    index.refresh()
    assert dry_runs(fake) == 3


def test_a_failing_source_keeps_the_last_good_state_and_is_retried(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path, tmp_path: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    moved = tmp_path / "moved"
    repo.rename(moved)
    index.refresh()
    assert git_at(index, A) is not None  # still decides from the last good state
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
    assert git_at(index, B) is None
    second = commit(repo, {"b.yaml": configmap("b", "two")}, "second")
    (repo / "a.yaml").unlink()
    third = commit(repo, {}, "third: no a")
    found = git_at(index, A, revision=second)
    assert found is not None
    assert found.revision == second
    assert git_at(index, A) is not None  # the second commit is not the head: the Application stays where it was
    assert git_at(index, B, revision=third, app_name="shop") is not None  # new in that commit: a sync creates it
    assert git_at(index, A) is None  # the head was loaded: it is the Application's state now (a prune passes)
    assert index.status()["applications"]["gitops-system/shop"]["revision"] == third


def test_newer_commits_loaded_beside_an_application_are_bounded_and_dropped_when_it_moves(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    newer = [commit(repo, {"a.yaml": configmap("a", f"v{i}")}, f"v{i}") for i in range(EXTRA_REVISIONS + 3)]
    head = newer.pop()
    for sha in newer:  # syncs to commits the Application does not target (its branch has moved on since)
        found = git_at(index, A, revision=sha)
        assert found is not None
        assert found.stored["data"] == {"k": f"v{newer.index(sha)}"}
    status = index.status()["applications"]["gitops-system/shop"]
    assert status["newer_commits_loaded"] == newer[-EXTRA_REVISIONS:]  # the oldest dropped first
    found = git_at(index, A, revision=newer[0])  # dropped: loaded again, and still judged right
    assert found is not None
    assert found.stored["data"] == {"k": "v0"}
    found = git_at(index, A, revision=head)  # the head: the Application's state now, and nothing kept beside it
    assert found is not None
    assert found.revision == head
    status = index.status()["applications"]["gitops-system/shop"]
    assert (status["revision"], status["newer_commits_loaded"]) == (head, [])
    found = git_at(index, A, revision=newer[-1])
    assert found is not None
    assert found.revision == head  # older now: ignored
    index.refresh()
    assert index.status()["applications"]["gitops-system/shop"]["newer_commits_loaded"] == []


def test_a_removed_application_leaves_the_index(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    apps.append(application(repo))
    index.refresh()
    apps.clear()
    index.refresh()
    assert git_at(index, A) is None
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
    assert git_at(index, B) is None
    assert git_at(index, B, revision=with_b, app_name="shop") is None


def test_an_older_commit_named_for_an_existing_object_is_ignored(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    first = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"a.yaml": configmap("a", "changed")}, "change a")
    apps.append(application(repo))
    index.refresh()
    found = git_at(index, A, revision=first)
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
    configmaps = ManagedResource("", "v1", "configmaps")
    deployments = ManagedResource("apps", "v1", "deployments", frozenset({"scale"}))
    assert index.managed_resources() == set()
    apps.append(application(repo))
    index.refresh()
    assert index.managed_resources() == {configmaps}
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
    commit(repo, {"web.yaml": deployment}, "a deployment")
    index.refresh()
    assert index.managed_resources() == {configmaps, deployments}
    (repo / "a.yaml").unlink()
    commit(repo, {}, "no configmap")
    index.refresh()
    assert index.managed_resources() == {deployments}  # the index is Git now (the registration never drops one)
    apps.clear()
    index.refresh()
    assert index.managed_resources() == set()


# --- revisions named by requests: checked for form, answers remembered, fetches shared ---------------------------


class CountingSource(GitSource):
    """The real Git adapter, counting what it asks git. `after_fetch` runs once a fetch has finished, before it
    returns (with the fetch lock held): a test holds it there to make requests arrive during a fetch. `noted` are the
    threads that have read how many fetches had begun (what ensure_commit compares with the last finished fetch)."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.calls: Counter[str] = Counter()
        self.looked: set[int] = set()  # the threads that have looked for a commit
        self.noted: set[int] = set()
        self._noting = threading.Condition()
        self._started = 0
        self.after_fetch: Callable[[], object] = lambda: None
        super().__init__(url, cache_dir)

    @property
    def _fetches_started(self) -> int:
        with self._noting:
            self.noted.add(threading.get_ident())
            self._noting.notify_all()
        return self._started

    @_fetches_started.setter
    def _fetches_started(self, value: int) -> None:
        self._started = value

    def wait_noted(self, callers: int) -> None:
        """Until `callers` threads have read the fetch counter: each knows which fetches began before it looked."""
        with self._noting:
            assert self._noting.wait_for(lambda: len(self.noted) >= callers, timeout=20), "timed out"

    def has_commit(self, sha: str) -> bool:
        found = super().has_commit(sha)
        self.calls["has_commit"] += 1
        self.looked.add(threading.get_ident())
        return found

    def is_ancestor(self, older: str, newer: str) -> bool:
        self.calls["is_ancestor"] += 1
        return super().is_ancestor(older, newer)

    def _fetch(self) -> None:
        self.calls["fetch"] += 1
        try:
            super()._fetch()
        finally:
            self.after_fetch()

    def reset(self) -> None:
        self.calls.clear()
        self.looked.clear()
        with self._noting:
            self.noted.clear()


def held_until_noted(source: CountingSource, callers: int) -> Callable[[], None]:
    """Holds a finished fetch until `callers` threads have looked for their commits and noted which fetches had
    begun: they arrived during it."""

    def hold() -> None:
        source.wait_noted(callers)

    return hold


def unknown_sha() -> str:
    return secrets.token_hex(20)


@pytest.fixture
def counted(tmp_path: Path, apps: list[dict[str, Any]], repo: Path) -> tuple[DesiredState, CountingSource, FakeClock]:
    """An index loaded at the repository's head, with the clock stopped and git's calls counted from zero."""
    made: list[CountingSource] = []
    clock = FakeClock()

    def source(url: str) -> CountingSource:
        made.append(CountingSource(url, tmp_path / "cache"))
        return made[-1]

    index = DesiredState(
        cluster("shop"),
        lambda: list(apps),
        source_factory=source,
        load_timeout=30,
        retry_seconds=0,
        missing_revision_seconds=10,
        clock=clock,
    )
    apps.append(application(repo))
    index.refresh()
    (counting,) = made
    counting.reset()
    return index, counting, clock


@pytest.mark.parametrize(
    "revision",
    [
        "main",
        "HEAD",
        "HEAD~1",
        "abc1234",  # abbreviated
        "a" * 39,
        "a" * 41,
        "a" * 63,
        "a" * 65,
        "A" * 40,  # uppercase: not how a sync writes it
        "g" * 40,
        " " + "a" * 40,
        "a" * 40 + "\n",
        "--upload-pack=touch pwned",
    ],
)
def test_a_revision_that_is_not_a_full_commit_name_is_ignored_without_asking_git(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path, revision: str
) -> None:
    index, source, _ = counted
    head = git(repo, "rev-parse", "HEAD")
    found = git_at(index, A, revision=revision)
    assert found is not None
    assert found.revision == head
    assert git_at(index, B, revision=revision, app_name="shop") is None
    assert source.calls == Counter()


def test_the_head_in_uppercase_is_ignored_too(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, _ = counted
    second = commit(repo, {"b.yaml": configmap("b", "two")}, "second")
    assert git_at(index, B, revision=second.upper(), app_name="shop") is None
    assert source.calls == Counter()


def test_an_unknown_commit_is_fetched_once_while_its_absence_is_remembered(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, clock = counted
    head = git(repo, "rev-parse", "HEAD")
    unknown = unknown_sha()
    for _ in range(5):
        found = git_at(index, A, revision=unknown)
        assert found is not None
        assert found.revision == head
        assert git_at(index, B, revision=unknown, app_name="shop") is None
    assert source.calls["fetch"] == 1
    asked = sum(source.calls.values())
    clock.now += 9.9
    git_at(index, A, revision=unknown)
    assert sum(source.calls.values()) == asked  # still within the window: no git at all
    clock.now += 0.2
    git_at(index, A, revision=unknown)
    assert source.calls["fetch"] == 2  # the window passed: asked again


def test_a_commit_pushed_after_it_was_missing_is_found_once_the_window_passed(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, clock = counted
    first = git(repo, "rev-parse", "HEAD")
    pushed = commit(repo, {"a.yaml": configmap("a", "two")}, "second")
    git(repo, "reset", "-q", "--hard", first)  # not pushed yet: the remote has no ref to it
    found = git_at(index, A, revision=pushed)
    assert found is not None
    assert found.revision == first
    git(repo, "reset", "-q", "--hard", pushed)  # pushed now
    clock.now += 5
    found = git_at(index, A, revision=pushed)
    assert found is not None
    assert found.revision == first  # "missing" still stands
    assert source.calls["fetch"] == 1
    clock.now += 6
    found = git_at(index, A, revision=pushed)
    assert found is not None
    assert (found.revision, found.stored["data"]) == (pushed, {"k": "two"})
    assert index.status()["applications"]["gitops-system/shop"]["revision"] == pushed  # the head: promoted


def test_a_burst_of_requests_naming_unknown_commits_costs_at_most_two_fetches(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, _ = counted
    head = git(repo, "rev-parse", "HEAD")
    burst = 16
    # At most CHECKS_AT_ONCE of them reach Git; the others are judged against the loaded state at once.
    source.after_fetch = held_until_noted(source, CHECKS_AT_ONCE)
    with ThreadPoolExecutor(burst) as pool:
        found = list(pool.map(lambda sha: git_at(index, A, revision=sha), [unknown_sha() for _ in range(burst)]))
    assert [f.revision if f else None for f in found] == [head] * burst
    assert 1 <= source.calls["fetch"] <= 2
    assert len(source.looked) <= 2 * CHECKS_AT_ONCE  # each check looks before and after its fetch at most


def test_a_sync_burst_naming_one_new_commit_waits_for_one_check(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, _ = counted
    pushed = commit(repo, {"b.yaml": configmap("b", "two")}, "the sync's new commit")
    burst = 16  # a sync applies on 16 connections at once, every object naming the same new commit
    with ThreadPoolExecutor(burst) as pool:
        found = list(pool.map(lambda _: git_at(index, A, revision=pushed), range(burst)))
    # none of them turned away because Git was busy with the first: all judged against the new commit
    assert [f.revision if f else None for f in found] == [pushed] * burst
    assert source.calls["fetch"] == 1


def test_a_hanging_remote_holds_a_request_no_longer_than_the_load_timeout(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, _ = counted
    index.load_timeout = 0.3
    release = threading.Event()
    source.after_fetch = lambda: release.wait(20)  # the fetch does not come back
    pushed = commit(repo, {"b.yaml": configmap("b", "two")}, "pushed")
    head = git(repo, "rev-parse", "HEAD~1")
    started = time.monotonic()
    found = git_at(index, A, revision=pushed)
    assert found is not None
    assert found.revision == head  # not known in time: judged against the loaded state
    assert time.monotonic() - started < 5
    release.set()
    index.load_timeout = 30
    for check in [t for t in threading.enumerate() if t.name == "revision-check"]:
        check.join(20)
    found = git_at(index, A, revision=pushed)  # the late answer was remembered when it came
    assert found is not None
    assert found.revision == pushed


def test_a_commit_pushed_during_a_fetch_is_fetched_for_the_request_that_names_it(tmp_path: Path, repo: Path) -> None:
    source = CountingSource(str(repo), tmp_path / "cache")
    source.fetch()
    source.reset()
    fetched, go = threading.Event(), threading.Event()

    def hold() -> None:
        fetched.set()
        go.wait(20)

    source.after_fetch = hold
    with ThreadPoolExecutor(2) as pool:
        before = pool.submit(source.ensure_commit, unknown_sha())
        assert fetched.wait(20)  # that fetch has run git, and holds the lock
        pushed = commit(repo, {"b.yaml": configmap("b", "two")}, "pushed during the fetch")
        after = pool.submit(source.ensure_commit, pushed)
        source.wait_noted(2)  # it looked, while that fetch held the lock
        go.set()
        assert not before.result()
        assert after.result()  # a fetch that began before it looked cannot answer it: fetched again
    assert source.calls["fetch"] == 2


def test_requests_waiting_on_a_failed_fetch_fail_with_it_instead_of_fetching_again(tmp_path: Path, repo: Path) -> None:
    source = CountingSource(str(repo), tmp_path / "cache")
    source.fetch()
    repo.rename(tmp_path / "gone")
    source.reset()
    burst = 8
    source.after_fetch = held_until_noted(source, burst)

    def ensure(sha: str) -> str:
        with pytest.raises(SourceError) as e:
            source.ensure_commit(sha)
        return str(e.value)

    with ThreadPoolExecutor(burst) as pool:
        errors = list(pool.map(ensure, [unknown_sha() for _ in range(burst)]))
    assert all("cannot fetch" in e for e in errors)
    assert 1 <= source.calls["fetch"] <= 2


def test_the_memory_of_answers_is_bounded_least_recently_used_first(
    counted: tuple[DesiredState, CountingSource, FakeClock],
) -> None:
    index, source, _ = counted
    index.revision_memory = 3
    names = [unknown_sha() for _ in range(5)]
    fetches = []
    for sha in [*names, names[4], names[3], names[2], names[1], names[4]]:
        git_at(index, A, revision=sha)
        fetches.append(source.calls["fetch"])
    # The last three are remembered; asking for one forgotten drops the least recently used (names[4]).
    assert fetches == [1, 2, 3, 4, 5, 5, 5, 5, 6, 7]


def test_a_known_newer_commit_is_asked_of_git_once_not_per_request(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, clock = counted
    newer = commit(repo, {"a.yaml": configmap("a", "newer")}, "newer, not the head")
    commit(repo, {"a.yaml": configmap("a", "head")}, "the head")
    found = git_at(index, A, revision=newer)
    assert found is not None
    assert (found.revision, found.stored["data"]) == (newer, {"k": "newer"})
    assert source.calls["is_ancestor"] == 2  # newer than the loaded commit, and reached by the target
    asked = sum(source.calls.values())
    clock.now += 3600  # a commit that exists: the answer stands
    for _ in range(5):
        found = git_at(index, A, revision=newer)
        assert found is not None
        assert found.revision == newer
    assert sum(source.calls.values()) == asked


def test_an_older_commit_is_asked_of_git_once_not_per_request(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    index, source, clock = counted
    first = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"a.yaml": configmap("a", "head")}, "the head")
    index.refresh()
    source.reset()
    for _ in range(5):
        found = git_at(index, A, revision=first)
        assert found is not None
        assert found.revision == head
        clock.now += 3600
    assert (source.calls["has_commit"], source.calls["is_ancestor"], source.calls["fetch"]) == (1, 1, 0)


def test_answers_at_once_says_when_a_lookup_would_wait_for_git(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    """What the webhook's event loop asks before judging a request there (webhook.front): a lookup that may ask Git
    or load a commit goes to a thread. Asking costs no Git."""
    index, source, clock = counted
    head = git(repo, "rev-parse", "HEAD")
    assert index.answers_at_once(A, head)
    assert index.answers_at_once(A, "")
    assert index.answers_at_once(A, "main")  # not a commit name: ignored
    newer = commit(repo, {"b.yaml": configmap("b", "two")}, "second")
    assert not index.answers_at_once(A, newer)  # Git must be asked
    assert not index.answers_at_once(B, newer, (Claim("", "shop"),))  # a new object: the commit must be loaded
    # An Application the webhook does not know: it must list them (it may have been created a moment ago).
    assert not index.answers_at_once(B, newer, (Claim("", "another-app"),))
    assert source.calls == Counter()
    git_at(index, B, revision=newer, app_name="shop")
    assert index.answers_at_once(A, newer)  # known newer, and loaded
    assert index.answers_at_once(B, newer, (Claim("", "shop"),))
    unknown = unknown_sha()
    git_at(index, A, revision=unknown)
    assert index.answers_at_once(A, unknown)  # known missing, for a while
    clock.now += 11
    assert not index.answers_at_once(A, unknown)  # the window passed: Git is asked again


# --- failing closed: what the index has not loaded is never "not managed" --------------------------------------------
SHOP = (Claim("gitops-system", "shop"),)


def test_the_crds_arriving_after_the_webhook_started_are_seen(tmp_path: Path, repo: Path) -> None:
    """The webhook started before `kubectl gitops install`: listing fails until discovery is read again."""
    fake = cluster("shop")
    served = {"yes": False}

    def listing() -> list[dict[str, Any]]:
        if not served["yes"]:
            raise GitOpsError("the cluster does not serve Applications; run `kubectl gitops install` first")
        return [application(repo)]

    index = DesiredState(
        fake,
        listing,
        source_factory=lambda url: GitSource(url, tmp_path / "cache"),
        retry_seconds=0,
    )
    index.refresh()
    assert (index.ready, index.listed) == (False, False)
    assert len(fake.made("discover")) == 1  # read again, so that the next attempt can see CRDs installed since
    found = index.lookup(A, "", SHOP)
    assert found.git is None
    assert found.unjudged is not None
    assert found.unjudged.mode == "enforce"  # the Application's own mode is unknown: the strictest
    assert "cannot list Applications" in found.unjudged.why
    served["yes"] = True
    index.refresh()
    assert (index.ready, index.listed) == (True, True)
    assert git_at(index, A) is not None


class HeldSource(GitSource):
    """The real Git adapter, whose fetches wait until `release` is set (a slow remote)."""

    release = threading.Event()

    def fetch(self) -> None:
        assert self.release.wait(30)
        super().fetch()


def test_a_request_during_the_first_load_is_unjudged_as_not_loaded_yet(tmp_path: Path, repo: Path) -> None:
    """The first load is under way: one Application's render has failed already, the next one is still fetching. A
    request claiming the one not loaded yet is unjudged because the load has not finished, not "cannot list
    Applications" with the other Application's error (the list call succeeded)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    git(broken, "init", "-q", "-b", "main")
    commit(broken, {"noname.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}, "no name")
    bad = application(broken)
    bad["metadata"]["name"] = "aaa-broken"  # listed, and rendered, first
    HeldSource.release = threading.Event()

    def source(url: str) -> GitSource:
        return HeldSource(url, tmp_path / "cache") if url == str(repo) else GitSource(url, tmp_path / "cache")

    index = DesiredState(
        cluster("shop"), lambda: [bad, application(repo)], source_factory=source, load_timeout=0.5, retry_seconds=0
    )
    first = threading.Thread(target=index.refresh)
    first.start()
    try:
        deadline = time.monotonic() + 30
        while "has no `metadata.name`" not in index.last_error and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "has no `metadata.name`" in index.last_error  # the broken one failed: the load goes on with shop
        found = index.lookup(A, "", SHOP)
        assert found.unjudged is not None
        assert found.unjudged.mode == "enforce"
        assert "has not finished loading the Applications yet" in found.unjudged.why
        assert "metadata.name" not in found.unjudged.why
        assert "cannot list" not in found.unjudged.why
    finally:
        HeldSource.release.set()
        first.join(30)
    assert git_at(index, A, app_name="shop") is not None  # loaded once its fetch came through


def test_git_unreachable_at_start_is_not_ready_and_judges_nothing(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], tmp_path: Path, repo: Path
) -> None:
    index, _ = state
    gone = tmp_path / "moved-away"
    repo.rename(gone)
    apps.append(application(repo))
    index.refresh()
    assert not index.ready  # every Application must be loaded
    assert not index.all_loaded()
    status = index.status()["applications"]["gitops-system/shop"]
    assert (status["loaded"], status["objects"]) == (False, 0)
    assert "cannot fetch" in status["error"]
    found = index.lookup(A, "", SHOP)
    assert found.unjudged is not None
    assert found.unjudged.mode == "warn"  # the Application's mode, known from its spec
    assert "not loaded" in found.unjudged.why
    assert "cannot fetch" in found.unjudged.why
    gone.rename(repo)  # Git is back
    index.refresh(full=False)
    assert index.ready
    assert git_at(index, A) is not None


def test_a_request_claiming_an_application_not_known_yet_loads_it(
    state: tuple[DesiredState, FakeCluster], apps: list[Any], repo: Path
) -> None:
    index, _ = state
    index.refresh()
    assert index.ready  # no Application yet
    apps.append(application(repo))  # created a moment ago, before the next poll
    assert not index.answers_at_once(B, "", SHOP)
    found = index.lookup(A, "", SHOP)  # its first sync: the Application is loaded to judge it
    assert found.git is not None
    assert found.git.stored["data"] == {"k": "one"}
    found = index.lookup(B, "", SHOP)  # b is not in Git
    assert (found.git, found.unjudged, found.claimed) == (None, None, frozenset({AppRef("gitops-system", "shop")}))
    assert index.ready


def test_claims_of_unknown_applications_cost_one_listing_per_interval(tmp_path: Path, repo: Path) -> None:
    """A flood of made-up claims, at once: each is judged by a listing begun after it arrived (made up, so not
    managed), and they share those listings, at most one per interval beyond the first."""
    calls = Counter[str]()

    def listing() -> list[dict[str, Any]]:
        calls["list"] += 1
        return []

    index = DesiredState(
        cluster("shop"), listing, source_factory=lambda url: GitSource(url, tmp_path / "cache"), retry_seconds=0.2
    )
    index.refresh()
    with ThreadPoolExecutor(max_workers=50) as pool:
        found = list(pool.map(lambda i: index.lookup(A, "", (Claim("", f"made-up-{i}"),)), range(50)))
    assert found == [Found()] * 50
    assert calls["list"] <= 3


def _listed_a_moment_ago(tmp_path: Path, created: dict[str, Any], **options: Any) -> DesiredState:
    """A webhook's state whose interval's on-demand listing has just run (for a made-up claim), with `created` made
    right after it: the next listing is the first to know it."""
    apps: list[dict[str, Any]] = []
    index = DesiredState(
        cluster("shop"), lambda: list(apps), source_factory=lambda url: GitSource(url, tmp_path / "cache"), **options
    )
    index.refresh()
    assert index.lookup(A, "", (Claim("", "other"),)) == Found()  # an on-demand listing: its turn is taken
    apps.append(created)
    return index


def test_a_claim_of_an_application_created_after_the_last_listing_is_not_taken_for_made_up(
    tmp_path: Path, repo: Path
) -> None:
    """The last listing ran a moment ago, the Application was created since, and a listing may not run again yet:
    the request waits for the interval's next one, which knows it (before, it was judged "not managed" at once)."""
    index = _listed_a_moment_ago(tmp_path, application(repo), retry_seconds=0.3)
    found = index.lookup(A, "", SHOP)
    assert found.git is not None
    assert found.git.stored["data"] == {"k": "one"}


@pytest.mark.xfail(
    strict=True,
    reason="a known limitation, in the README's threat model: a claim of an Application that no listing finished "
    "within LOAD_TIMEOUT_SECONDS of the request has shown is taken for made up (not managed), not unjudged",
)
def test_a_claim_no_listing_in_time_can_tell_is_unjudged(tmp_path: Path, repo: Path) -> None:
    """The next listing would come after the request's deadline: it is unjudged (enforce denies), not "not
    managed"."""
    index = _listed_a_moment_ago(tmp_path, application(repo), retry_seconds=60, load_timeout=0.5)
    found = index.lookup(A, "", SHOP)
    assert found.git is None
    assert found.unjudged is not None
    assert found.unjudged.mode == "enforce"
    assert "has not listed yet" in found.unjudged.why


def test_an_application_whose_namespace_does_not_exist_yet_is_loaded(tmp_path: Path, repo: Path) -> None:
    """Its first sync creates the namespace: Git's state must be there before, or the sync is refused."""
    fake = cluster("gitops-system")
    index = DesiredState(
        fake,
        lambda: [application(repo)],
        source_factory=lambda url: GitSource(url, tmp_path / "cache"),
        retry_seconds=0,
        probe_namespace="gitops-system",
    )
    index.refresh()
    assert index.ready
    found = git_at(index, A)
    assert found is not None
    assert found.stored["metadata"]["namespace"] == "shop"  # probed elsewhere, stored where Git puts it
    assert [r.key.namespace for r in fake.made("apply") if r.key] == ["shop", "gitops-system"]
    assert index._apps[next(iter(index._apps))].provisional
    fake.add(namespace("shop"))
    index.refresh(full=False)  # probed again where it belongs, once the namespace exists
    assert not index._apps[next(iter(index._apps))].provisional


def test_an_unmerged_descendant_commit_does_not_count(
    counted: tuple[DesiredState, CountingSource, FakeClock], repo: Path
) -> None:
    """Anyone who can push a branch can make a commit that descends from the loaded one: only the Application's
    target counts."""
    index, _, _ = counted
    git(repo, "checkout", "-q", "-b", "feature")
    evil = commit(repo, {"a.yaml": configmap("a", "evil"), "b.yaml": configmap("b", "new")}, "not merged")
    git(repo, "checkout", "-q", "main")
    found = git_at(index, A, revision=evil)
    assert found is not None
    assert found.stored["data"] == {"k": "one"}  # judged against main
    assert git_at(index, B, revision=evil, app_name="shop") is None
    git(repo, "merge", "-q", "--ff-only", "feature")  # merged: now the target reaches it
    index._answers.clear()  # (an unmerged answer lasts only MISSING_REVISION_SECONDS)
    found = git_at(index, A, revision=evil)
    assert found is not None
    assert found.stored["data"] == {"k": "evil"}


def test_refs_other_than_branches_and_tags_are_never_fetched(tmp_path: Path, repo: Path) -> None:
    """A hosting service's refs/pull/* hold commits nobody merged."""
    main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "pr")
    pr = commit(repo, {"a.yaml": configmap("a", "pr")}, "a pull request")
    git(repo, "update-ref", "refs/pull/1/head", pr)
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-D", "pr")
    source = GitSource(str(repo), tmp_path / "cache")
    source.fetch()
    assert source.has_commit(main)
    assert not source.has_commit(pr)


class GuardedCluster:
    """What the API server checks of a dry run against the identity that sends it, as for the webhook's ServiceAccount
    with its shipped RBAC: a CRD's name is its plural and group; rules and an aggregationRule it does not hold, or a
    binding of a role it does not hold, are forbidden. Answers with the webhook's manager owning what was sent."""

    def apply(self, info: ResourceInfo, obj: dict[str, Any], **kwargs: Any) -> Applied:
        assert kwargs.get("dry_run")
        kind, spec = obj["kind"], obj.get("spec") or {}
        if kind == "CustomResourceDefinition":
            if obj["metadata"]["name"] != f"{spec['names']['plural']}.{spec['group']}":
                raise ApiError('metadata.name: Invalid value: must be spec.names.plural+"."+spec.group', 422)
            spec = {**spec, "names": {**spec["names"], "singular": spec["names"]["kind"].lower()}}  # a default
        if obj.get("rules") or obj.get("aggregationRule"):
            raise ApiError("is attempting to grant RBAC permissions not currently held", 403)
        if "roleRef" in obj and obj["roleRef"]["name"] != "system:discovery":
            raise ApiError("is attempting to grant RBAC permissions not currently held", 403)
        sent: dict[str, Any] = {f"f:{k}": {} for k in obj if k not in ("apiVersion", "kind", "metadata")}
        entry = {"manager": "kubectl-gitops", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": sent}
        stored = {**obj, "metadata": {**obj["metadata"], "uid": "u", "managedFields": [entry]}}
        if "spec" in obj:
            stored["spec"] = spec
        if obj.get("rules") == []:
            stored.pop("rules")  # the API server stores no empty list
        return Applied(stored)


CRD_INFO = ResourceInfo("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False)
ROLE_INFO = ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
BINDING_INFO = ResourceInfo("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True)


@pytest.mark.parametrize(
    ("info", "obj"),
    [
        pytest.param(
            CRD_INFO,
            {
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Cluster"},
            },
            id="crd",
        ),
        pytest.param(
            ROLE_INFO,
            {
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["watch"]}],
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"team": "a"}}]},
            },
            id="clusterrole",
        ),
        pytest.param(
            BINDING_INFO,
            {
                "metadata": {"name": "readers", "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "not-created-yet"},
                "subjects": [{"kind": "Group", "name": "developers", "apiGroup": "rbac.authorization.k8s.io"}],
            },
            id="rolebinding",
        ),
    ],
)
def test_objects_the_api_server_checks_against_the_webhooks_rights_are_probed_without_it(
    info: ResourceInfo, obj: dict[str, Any]
) -> None:
    """Found by syncing the realistic corpus through the webhook running with its shipped RBAC: its probe of a CRD
    (under a probe name, which a CRD cannot have), of a Role granting what it does not hold, and of a binding could
    not be made, so no Application with one could be loaded (and enforce mode refused its first sync). The probe
    leaves those parts out and puts Git's back; the rest is the API server's answer."""
    manifest = {"apiVersion": info.api_version, "kind": info.kind, **obj}
    manifest["metadata"] = {**obj["metadata"], "labels": {TRACKING_LABEL: "shop"}}
    desired = DesiredObject(Manifest("m.yaml", 1, manifest), manifest, info)
    stored, declared, elsewhere = stored_form(GuardedCluster(), desired)  # type: ignore[arg-type]
    assert not elsewhere
    assert stored["metadata"]["name"] == obj["metadata"]["name"]
    for field_name, value in obj.items():
        if field_name == "metadata":
            continue
        if field_name == "spec":
            assert stored["spec"]["names"] == {**value["names"], "singular": "widget"}  # Git's plural, the default
            continue
        assert stored[field_name] == value
        assert f"f:{field_name}" in declared


WIDGET_INFO = ResourceInfo("example.com", "v1", "Widget", "widgets", True)
WIDGET_CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
"""


WIDGET_W = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"


def widget_state(tmp_path: Path, repo: Path, **options: Any) -> tuple[DesiredState, FakeCluster]:
    """The shop Application with WIDGET_CRD and a Widget `w` committed, in a cluster that does not serve Widgets yet
    (the CRD comes with the sync)."""
    commit(repo, {"crd.yaml": WIDGET_CRD, "w.yaml": WIDGET_W}, "a CRD and a widget")
    fake = FakeCluster(objects=[namespace("shop")])
    index = DesiredState(
        fake, lambda: [application(repo)], source_factory=lambda url: GitSource(url, tmp_path / "cache"), **options
    )
    return index, fake


def test_a_custom_resource_whose_crd_the_sync_just_made_is_judged_within_the_request(
    tmp_path: Path, repo: Path
) -> None:
    """Found by syncing the realistic corpus through the webhook: the first request of a sync loads the
    Application, while its CRD is not served yet (its Widgets are pending); moments later the sync has made the CRD
    and creates the Widgets, and their requests found the on-demand refresh used up for RETRY_SECONDS, so they were
    refused as unjudged. A request about a pending object waits, within its deadline, for the next refresh."""

    index, cluster = widget_state(tmp_path, repo, retry_seconds=0.5)
    widget = ObjectKey("example.com", "Widget", "shop", "w")
    assert index.lookup(A, "", SHOP).git is not None  # the sync's first request: the Application loads
    assert widget in index._apps[next(iter(index._apps))].pending
    cluster.add(yaml.safe_load(WIDGET_CRD))  # the sync applied the CRD; discovery serves it
    found = index.lookup(widget, "", SHOP)
    assert found.unjudged is None
    assert found.git is not None
    assert found.git.key == widget


def test_a_pending_custom_resource_joins_the_refresh_another_request_scheduled(tmp_path: Path, repo: Path) -> None:
    """Found by CI (test_sync_through_webhook, the realistic corpus): the namespace controller was deleting an earlier
    test's objects, each claiming an Application deleted before, and each such request asked for the interval's next
    on-demand refresh, for no Application in particular. The sync's Widgets, pending until their CRD was served,
    shared that scheduled refresh, which did not retry their Application: still pending at their deadline, they
    were refused as unjudged. A request that joins a refresh before it begins adds what it needs to it."""
    # The clock stands still: the Application's last render stays within retry_seconds (a turn sleeps for real).
    index, cluster = widget_state(tmp_path, repo, retry_seconds=1.0, load_timeout=4.0, clock=FakeClock())
    ghost = (Claim("gitops-system", "deleted-a-moment-ago"),)
    index.refresh()
    widget = ObjectKey("example.com", "Widget", "shop", "w")
    assert widget in index._apps[next(iter(index._apps))].pending
    assert index.lookup(ObjectKey("", "ConfigMap", "gone", "x"), "", ghost).claimed == frozenset()  # made up
    cluster.add(yaml.safe_load(WIDGET_CRD))  # the sync made the CRD
    # Another deletion claiming the deleted Application: it schedules the interval's next refresh and waits for it.
    other = threading.Thread(target=index.lookup, args=(ObjectKey("", "ConfigMap", "gone", "y"), "", ghost))
    other.start()
    deadline = time.monotonic() + 10
    while index._asked_refresh is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert index._asked_refresh is not None
    found = index.lookup(widget, "", SHOP)  # the sync's Widget, while that refresh waits for its turn
    other.join(10)
    assert found.unjudged is None
    assert found.git is not None
    assert found.git.key == widget


def test_a_retry_for_pending_kinds_probes_only_what_was_pending(tmp_path: Path, repo: Path) -> None:
    """An Application whose Widgets were pending (their CRD not served when it loaded), retried once the CRD is
    served: the commit and the spec are the same, so what the first load probed stands; only the Widgets are probed
    now, not every object of the Application again (with 20,000 objects a retry every RETRY_SECONDS would re-probe
    them all, holding the refresh for seconds while the sync's requests for its Widgets wait). A full refresh still
    probes everything."""
    commit(repo, {f"c{i}.yaml": configmap(f"c{i}", str(i)) for i in range(20)}, "20 ConfigMaps")
    index, cluster = widget_state(tmp_path, repo, retry_seconds=0)
    index.refresh()
    widget = ObjectKey("example.com", "Widget", "shop", "w")
    first = index._apps[next(iter(index._apps))]
    assert first.pending == {widget}
    assert dry_runs(cluster) == 22  # a.yaml, the CRD and the 20 ConfigMaps
    kept = git_at(index, A, "", "shop")
    cluster.add(yaml.safe_load(WIDGET_CRD))
    index.refresh(full=False, retry_failed=True)
    assert dry_runs(cluster) == 23  # the Widget alone
    assert git_at(index, widget, "", "shop") is not None
    assert git_at(index, A, "", "shop") is kept
    assert index.all_loaded()
    index.refresh()  # the periodic full one
    assert dry_runs(cluster) == 23 + 23


def held(repo: Path, generation: int, revision: str = "") -> dict[str, Any]:
    """The Application with a rollback held at `revision` (none: lifted)."""
    app = application(repo, generation)
    if revision:
        app["spec"]["rollback"] = {"revision": revision, "reason": "bad release", "user": "admin", "at": ""}
    return app


def test_a_rollback_held_and_lifted_is_followed_and_what_the_sync_prunes_next_is_judged_against_it(
    state: tuple[DesiredState, FakeCluster], apps: list[dict[str, Any]], repo: Path
) -> None:
    """Found by `rollback --resume --prune` through the webhook: that a commit was newer than the loaded one was
    remembered from before the rollback (when the target reached it). After the rollback's lift the sync's applies
    were judged against that commit without the index moving to it, so pruning an object only the held commit had
    was refused as deleting what Git declares. Whether a commit is newer depends on the target: asked again."""
    index, _ = state
    b_only = ObjectKey("", "ConfigMap", "shop", "b")
    b = commit(repo, {"a.yaml": configmap("a", "two"), "b.yaml": configmap("b", "x")}, "second")
    apps.append(application(repo, 1))
    index.refresh()
    (repo / "b.yaml").unlink()
    c = commit(repo, {"a.yaml": configmap("a", "three")}, "third")
    found = git_at(index, A, c, "shop")  # a sync to the new commit: newer, loaded, promoted
    assert found is not None
    assert found.revision == c

    apps[0] = held(repo, 2, b)  # kubectl gitops rollback: the Application holds the second commit
    found = git_at(index, A, b, "shop")  # the rollback's first request: the Application is read again
    assert found is not None
    assert found.revision == b
    assert git_at(index, b_only, b, "shop") is not None

    apps[0] = held(repo, 3)  # rollback --resume: the target is the branch again
    found = git_at(index, A, c, "shop")
    assert found is not None
    assert found.revision == c
    # What the sync prunes next (it carries the held commit's annotation) is judged against the branch's commit.
    assert git_at(index, b_only, b, "shop") is None

    # And a hand-set annotation naming the held commit, now lifted, brings nothing back.
    stale = git_at(index, A, b, "shop")
    assert stale is not None
    assert stale.revision == c


def test_a_rollback_again_within_a_second_of_its_resume_is_followed(tmp_path: Path, repo: Path) -> None:
    """Found by CI (test_history: rollback 1, resume, rollback to the same commit by name, each sync taking 60 ms):
    the third step's requests named the commit the first step's had, less than REREAD_SECONDS before, and were
    judged against the branch's commit without the Application being read again, so the rollback was refused as
    drift. Only a name the Application did not target when read is not read again for REREAD_SECONDS."""
    apps: list[dict[str, Any]] = []
    lists: list[int] = []

    def listing() -> list[dict[str, Any]]:
        lists.append(1)
        return list(apps)

    index = DesiredState(
        cluster("shop", "gitops-system"),
        listing,
        source_factory=lambda url: GitSource(url, tmp_path / "cache"),
        retry_seconds=0,
        clock=FakeClock(),  # it never moves: every step comes within REREAD_SECONDS of the one before
    )

    def judged_at(revision: str) -> str:
        """The commit a sync's request naming `revision` is judged against."""
        found = git_at(index, A, revision, "shop")
        assert found is not None
        return found.revision

    b = commit(repo, {"a.yaml": configmap("a", "two")}, "second")
    c = commit(repo, {"a.yaml": configmap("a", "three")}, "third")
    apps.append(application(repo, 1))
    index.refresh()
    assert judged_at(c) == c
    apps[0] = held(repo, 2, b)  # rollback
    assert judged_at(b) == b
    apps[0] = held(repo, 3)  # rollback --resume
    assert judged_at(c) == c
    apps[0] = held(repo, 4, b)  # rollback again, to the same commit
    assert judged_at(b) == b

    apps[0] = held(repo, 5)  # lifted: a forged name of the commit it no longer holds is judged against the branch
    assert judged_at(c) == c
    before = len(lists)
    assert [judged_at(b) for _ in range(3)] == [c, c, c]
    assert len(lists) == before + 1  # read once for that name, then not again for REREAD_SECONDS


class DiesOnce(GitSource):
    """A mirror whose `git cat-file` died under it once (its repository was moved): GitPython raises
    BrokenPipeError, not a git error."""

    broken = True

    def file_names(self, sha: str, path: str) -> set[str]:
        if DiesOnce.broken:
            DiesOnce.broken = False
            raise BrokenPipeError(32, "Broken pipe")
        return super().file_names(sha, path)


def test_a_mirror_whose_git_process_died_fails_its_application_only_and_is_opened_anew(
    tmp_path: Path, repo: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    commit(other, {"b.yaml": configmap("b", "two")}, "first")
    broken_app = application(repo)
    fine_app = {**application(other), "metadata": {"name": "blog", "namespace": "gitops-system", "generation": 1}}
    made: list[str] = []

    def factory(url: str) -> GitSource:
        made.append(url)
        kind = DiesOnce if url == str(repo) else GitSource
        return kind(url, tmp_path / "cache")

    index = DesiredState(
        cluster("shop", "gitops-system"),
        lambda: [broken_app, fine_app],
        source_factory=factory,
        load_timeout=30,
        retry_seconds=0,
    )
    index.refresh()  # must not raise: one Application's broken mirror is its own problem
    status = index.status()["applications"]
    assert "read again" in status["gitops-system/shop"]["error"]
    assert git_at(index, B) is not None  # the other Application loaded
    assert git_at(index, A) is None  # fails closed: not judged from nothing
    index.refresh(full=False)
    assert git_at(index, A) is not None
    assert made.count(str(repo)) == 2  # the dead mirror was dropped and opened anew


def test_a_request_waiting_for_its_application_retries_that_one_not_every_broken_one(
    tmp_path: Path, apps: list[Any], repo: Path
) -> None:
    """An on-demand refresh (a request whose object's state is pending) renders again the Applications the request
    claims; the others whose last render failed wait for their turn, so that many broken Applications do not hold a
    request past its deadline."""
    index = DesiredState(
        cluster("shop", "gitops-system"),
        lambda: list(apps),
        source_factory=lambda url: GitSource(url, tmp_path / "cache"),
        load_timeout=30,
        retry_seconds=3600,
    )
    apps.append(application(repo))
    moved = tmp_path / "moved"
    repo.rename(moved)
    index.refresh()
    assert "cannot fetch" in index.status()["applications"]["gitops-system/shop"]["error"]
    moved.rename(repo)
    index.refresh(full=False, retry_failed=True, retry_only=frozenset())
    assert "cannot fetch" in index.status()["applications"]["gitops-system/shop"]["error"]  # not this one's turn
    index.refresh(full=False, retry_failed=True, retry_only=frozenset({AppRef("gitops-system", "shop")}))
    assert index.status()["applications"]["gitops-system/shop"]["error"] == ""
