"""The reconciler's Git mirrors: fetched once per interval for every reader, read safely from many threads."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from controller.repos import Repositories


def make_repo(path: Path, folders: int) -> None:
    path.mkdir()
    for n in range(folders):
        (path / f"app-{n}").mkdir()
        (path / f"app-{n}" / "cm.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{n}}}\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=path, check=True)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("collect_git_processes")
def test_many_threads_read_one_mirror_and_fetch_it_once(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo", 20)
    clock = Ticks()
    repos = Repositories(tmp_path / "cache", clock)
    url = str(tmp_path / "repo")
    errors: list[BaseException] = []

    def read(worker: int) -> None:
        try:
            for n in range(60):
                source, error = repos.source(url, max_age=60.0)
                assert error == ""
                commit = source.resolve(None)
                folder = f"app-{(worker + n) % 20}"
                assert source.file_names(commit.sha, folder) == {"cm.yaml"}
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(w,), daemon=True) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [t for t in threads if t.is_alive()], "readers hung (a shared GitPython Repo deadlocks)"
    assert errors == []
    assert repos.fetches() == 1
    clock.now += 61
    repos.source(url, max_age=60.0)
    assert repos.fetches() == 2
    repos.source(url, max_age=60.0, force=True)
    assert repos.fetches() == 3


@pytest.mark.usefixtures("collect_git_processes")
def test_a_failed_fetch_is_reported_and_retried_soon(tmp_path: Path) -> None:
    clock = Ticks()
    repos = Repositories(tmp_path / "cache", clock)
    url = str(tmp_path / "missing")
    _, error = repos.source(url, max_age=600.0)
    assert "cannot fetch" in error
    _, again = repos.source(url, max_age=600.0)
    assert repos.fetches() == 1  # not at every reconcile
    clock.now += 16
    repos.source(url, max_age=600.0)
    assert repos.fetches() == 2
    assert again == error
