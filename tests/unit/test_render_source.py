"""Rendering plain directories, choosing a renderer, and the Git adapter against real local repositories."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import git
import pytest

from engine.adapters.render import detect, parse_files, render_plain
from engine.adapters.source import Commit, GitSource, redact_url
from engine.core.errors import ManifestError, SourceError
from engine.core.manifests import MANIFEST_SUFFIXES
from engine.core.repourl import HOST_PATH_HINT, is_host_path

pytestmark = pytest.mark.usefixtures("collect_git_processes")  # see tests/conftest.py

# --- detect -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], "directory"),
        (["deploy.yaml", "README.md"], "directory"),
        (["kustomization.yaml"], "kustomize"),
        (["kustomization.yml"], "kustomize"),
        (["Kustomization"], "kustomize"),
        (["Chart.yaml", "values.yaml"], "helm"),
        (["Chart.yaml", "kustomization.yaml"], "kustomize"),
        (["Chart.yml"], "directory"),
        (["chart.yaml"], "directory"),
        (["base/kustomization.yaml"], "directory"),
        (["charts/sub/Chart.yaml"], "directory"),
    ],
)
def test_detect(tmp_path: Path, files: list[str], expected: str) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x: 1\n")
    assert detect(tmp_path) == expected


@pytest.mark.parametrize("name", ["kustomization.yaml", "Chart.yaml"])
def test_detect_looks_at_files_not_folders(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    assert detect(tmp_path) == "directory"


# --- render_plain -------------------------------------------------------------------------------------------------


def cm(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


def write(root: Path, relative: str, text: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


TREE = {
    "b.yaml": cm("b"),
    "a.yml": cm("a") + "---\n" + cm("a2"),
    "c.json": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}',
    "README.md": "# not a manifest: apiVersion\n",
    "notes.txt": "kind: nothing",
    "Makefile": "all:\n",
    "kustomize.yaml.bak": "broken: [",
    ".hidden.yaml": "broken: [",
    ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
    "sub/z.yaml": cm("sub-z"),
    "sub/deeper/y.yaml": cm("deeper-y"),
    "sub/.cache/x.yaml": "broken: [",
    "another/x.yaml": cm("another-x"),
    "zz/empty.yaml": "# nothing\n",
}


def test_render_plain_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    for relative, text in TREE.items():
        write(tmp_path, relative, text)
    found = render_plain(tmp_path, "apps@3f2a9c1e")
    assert [(m.source, m.document, m.obj["metadata"]["name"]) for m in found] == [
        ("apps@3f2a9c1e/a.yml", 1, "a"),
        ("apps@3f2a9c1e/a.yml", 2, "a2"),
        ("apps@3f2a9c1e/b.yaml", 1, "b"),
        ("apps@3f2a9c1e/c.json", 1, "c"),
        ("apps@3f2a9c1e/another/x.yaml", 1, "another-x"),
        ("apps@3f2a9c1e/sub/z.yaml", 1, "sub-z"),
        ("apps@3f2a9c1e/sub/deeper/y.yaml", 1, "deeper-y"),
    ]


@pytest.mark.parametrize(("label", "source"), [("", "x.yaml"), ("/", "x.yaml"), (".", "./x.yaml")])
def test_render_plain_label_prefix(tmp_path: Path, label: str, source: str) -> None:
    write(tmp_path, "x.yaml", cm("x"))
    assert [m.source for m in render_plain(tmp_path, label)] == [source]


def test_render_plain_of_an_empty_directory(tmp_path: Path) -> None:
    assert render_plain(tmp_path, "apps") == []


def test_render_plain_names_the_file_of_a_bad_manifest(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", cm("ok"))
    write(tmp_path, "sub/bad.yaml", cm("ok2") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    with pytest.raises(ManifestError, match=r"^apps/sub/bad\.yaml \(document 2\): ConfigMap has no `metadata\.name`$"):
        render_plain(tmp_path, "apps")


def test_render_plain_reports_a_file_that_is_not_text(tmp_path: Path) -> None:
    write(tmp_path, "blob.yaml", b"\xff\xfe\x00binary")
    with pytest.raises(ManifestError, match=r"^apps/blob\.yaml: "):
        render_plain(tmp_path, "apps")


# --- a local Git repository ---------------------------------------------------------------------------------------


class Repo:
    """A real repository in tmp_path, committed to with the git CLI at fixed dates."""

    def __init__(self, path: Path, ticks: int = 0) -> None:
        self.path = path
        self.ticks = ticks

    @classmethod
    def create(cls, path: Path) -> Repo:
        path.mkdir()
        repo = cls(path)
        repo.git("init", "-q", "-b", "trunk")
        return repo

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Dev",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Dev",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
            "GIT_AUTHOR_DATE": f"2024-05-01T10:{self.ticks:02d}:00+00:00",
            "GIT_COMMITTER_DATE": f"2024-05-01T10:{self.ticks:02d}:00+00:00",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.path.parent),
        }
        proc = subprocess.run(["git", "-C", str(self.path), *args], env=env, capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    def write(self, relative: str, text: str) -> None:
        write(self.path, relative, text)

    def commit(self, message: str) -> str:
        self.ticks += 1
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """trunk: c1 (apps/web, apps/db), c2 (apps/web changed), c3 (docs only); tags v1 (light) and v2 (annotated);
    branch feature/x from c1 with its own commit. Built once; each test gets a copy."""
    r = Repo.create(tmp_path_factory.mktemp("template") / "origin")
    r.write("apps/web/deploy.yaml", cm("web-v1"))
    r.write("apps/db/cm.yaml", cm("db"))
    r.write("README.md", "# shop\n")
    r.commit("Add web and db")
    r.git("tag", "v1")
    r.git("checkout", "-q", "-b", "feature/x")
    r.write("apps/web/deploy.yaml", cm("web-feature"))
    r.commit("Try a feature")
    r.git("checkout", "-q", "trunk")
    r.write("apps/web/deploy.yaml", cm("web-v2"))
    r.commit("Bump web\n\nWith a body that is not the subject.")
    r.git("tag", "-a", "v2", "-m", "Release 2")
    r.write("README.md", "# shop, documented\n")
    r.commit("Document")
    return r


@pytest.fixture
def repo(template: Repo, tmp_path: Path) -> Repo:
    path = tmp_path / "origin"
    shutil.copytree(template.path, path, symlinks=True)
    return Repo(path, template.ticks)


def source(repo: Repo, tmp_path: Path) -> GitSource:
    return GitSource(str(repo.path), cache_dir=tmp_path / "cache")


def rev(repo: Repo, name: str) -> str:
    return repo.git("rev-parse", f"{name}^{{commit}}")


def test_resolve_the_default_branch(repo: Repo, tmp_path: Path) -> None:
    src = source(repo, tmp_path)
    commit = src.resolve(None)
    assert commit == Commit(
        sha=rev(repo, "trunk"),
        subject="Document",
        author="Dev <dev@example.com>",
        date="2024-05-01T10:04:00+00:00",
    )
    assert src.default_branch() == "trunk"
    assert src.resolve("") == commit
    assert commit.as_dict() == {
        "revision": commit.sha,
        "subject": "Document",
        "author": "Dev <dev@example.com>",
        "date": "2024-05-01T10:04:00+00:00",
    }


@pytest.mark.parametrize(
    ("revision", "expected", "subject"),
    [
        ("trunk", "trunk", "Document"),
        ("feature/x", "feature/x", "Try a feature"),
        ("v1", "v1", "Add web and db"),
        ("v2", "v2", "Bump web"),
        ("trunk~1", "v2", "Bump web"),
    ],
    ids=["branch", "branch-with-slash", "light-tag", "annotated-tag", "relative"],
)
def test_resolve_branches_and_tags(repo: Repo, tmp_path: Path, revision: str, expected: str, subject: str) -> None:
    commit = source(repo, tmp_path).resolve(revision)
    assert commit.sha == rev(repo, expected)
    assert commit.subject == subject


@pytest.mark.parametrize("length", [7, 12, 40])
def test_resolve_a_full_or_abbreviated_sha(repo: Repo, tmp_path: Path, length: int) -> None:
    sha = rev(repo, "v1")
    assert source(repo, tmp_path).resolve(sha[:length]).sha == sha


def test_a_branch_wins_over_a_tag_of_the_same_name(repo: Repo, tmp_path: Path) -> None:
    repo.git("branch", "release", "v1")
    repo.git("tag", "release", "v2")
    assert source(repo, tmp_path).resolve("release").sha == rev(repo, "v1")


@pytest.mark.parametrize("revision", ["nope", "v3", "feature/y", "0123456789abcdef0123456789abcdef01234567"])
def test_a_missing_revision_is_a_clear_error(repo: Repo, tmp_path: Path, revision: str) -> None:
    with pytest.raises(SourceError) as caught:
        source(repo, tmp_path).resolve(revision)
    assert str(caught.value) == (f"revision {revision!r} does not exist in {repo.path} (no such branch, tag or commit)")


def test_an_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    url = str(tmp_path / "no-such-repository")
    with pytest.raises(SourceError) as caught:
        GitSource(url, cache_dir=tmp_path / "cache").resolve(None)
    message = str(caught.value)
    assert message.startswith(f"cannot fetch {url}: ")
    # A path is read where the reader runs: the message says what that means for a webhook in a pod.
    assert message.endswith(f"; {HOST_PATH_HINT}")
    assert "inside a pod it names the pod's own files" in message
    assert "no-such-repository" in message.removeprefix(f"cannot fetch {url}: ")
    assert isinstance(caught.value.__cause__, git.GitCommandError)


def test_an_unreachable_network_url_is_a_clear_error(tmp_path: Path) -> None:
    url = "git://127.0.0.1:1/no-such-repository"
    with pytest.raises(SourceError) as caught:
        GitSource(url, cache_dir=tmp_path / "cache").resolve(None)
    assert str(caught.value).endswith("; check the URL and that the repository is reachable")


@pytest.mark.parametrize(
    ("url", "host_path"),
    [
        ("/srv/git/app", True),
        ("./app", True),
        ("app", True),
        ("~/app", True),
        ("file:///srv/git/app", True),
        ("https://git.example/app.git", False),
        ("ssh://git@git.example/app.git", False),
        ("git://10.0.0.1:9418/app", False),
        ("git@git.example:team/app.git", False),
    ],
)
def test_host_paths_are_told_from_network_urls(url: str, host_path: bool) -> None:
    assert is_host_path(url) is host_path


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bot:s3cr3t-token@git.example/shop.git", "https://***@git.example/shop.git"),
        ("https://s3cr3t-token@git.example/shop.git", "https://***@git.example/shop.git"),
        ("https://git.example/shop.git", "https://git.example/shop.git"),
        ("git@git.example:shop.git", "git@git.example:shop.git"),  # scp-like: a user name, no secret
        ("/srv/git/shop", "/srv/git/shop"),
    ],
)
def test_credentials_in_a_url_are_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_failed_fetch_does_not_repeat_the_credentials_of_its_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: git fails fast and says which URL it could not reach
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://bot:s3cr3t-token@127.0.0.1:{port}/shop.git"
    with pytest.raises(SourceError) as caught:
        GitSource(url, cache_dir=tmp_path / "cache").fetch()
    message = str(caught.value)
    assert message.startswith(f"cannot fetch http://***@127.0.0.1:{port}/shop.git: ")
    assert "s3cr3t-token" not in message
    assert "bot" not in message


def test_the_cache_is_per_url_and_reused(repo: Repo, tmp_path: Path) -> None:
    first = source(repo, tmp_path)
    first.resolve(None)
    second = source(repo, tmp_path)
    assert second.path == first.path
    assert second.path.parent == tmp_path / "cache"
    assert (second.path / "HEAD").exists()
    assert GitSource(str(tmp_path / "elsewhere"), cache_dir=tmp_path / "cache").path != first.path
    # The mirror is read before any fetch: resolving a revision it already has needs no remote.
    assert second.repo.commit(rev(repo, "v1")).hexsha == rev(repo, "v1")


def test_fetch_brings_new_commits(repo: Repo, tmp_path: Path) -> None:
    src = source(repo, tmp_path)
    before = src.resolve(None)
    repo.write("apps/web/deploy.yaml", cm("web-v3"))
    after_sha = repo.commit("Bump web again")
    assert src.resolve(None) == before  # fetched once per instance: reads are cheap
    src.fetch()
    assert src.resolve(None).sha == after_sha
    assert source(repo, tmp_path).resolve(None).sha == after_sha


def test_fetch_follows_a_deleted_tag_and_a_moved_branch(repo: Repo, tmp_path: Path) -> None:
    src = source(repo, tmp_path)
    src.resolve(None)
    repo.git("tag", "-d", "v1")
    repo.git("branch", "-f", "feature/x", "v2")
    src.fetch()
    with pytest.raises(SourceError, match="revision 'v1' does not exist"):
        src.resolve("v1")
    assert src.resolve("feature/x").sha == rev(repo, "v2")


# --- checkout -----------------------------------------------------------------------------------------------------


def files_below(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("path", "expected"), [("apps/web", {"deploy.yaml"}), ("/apps/web/", {"deploy.yaml"})])
def test_checkout_of_a_sub_path(repo: Repo, tmp_path: Path, path: str, expected: set[str]) -> None:
    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    with src.checkout(sha, path) as directory:
        assert set(files_below(directory)) == expected
        assert (directory / "deploy.yaml").read_text() == cm("web-v2")
        # The whole tree is there: an overlay may refer to a base outside its folder.
        assert (directory.parent / "db" / "cm.yaml").read_text() == cm("db")
        exported = directory
    assert not exported.exists()


@pytest.mark.parametrize("path", ["", ".", "/"])
def test_checkout_of_the_root(repo: Repo, tmp_path: Path, path: str) -> None:
    src = source(repo, tmp_path)
    with src.checkout(src.resolve(None).sha, path) as directory:
        assert set(files_below(directory)) == {"README.md", "apps/web/deploy.yaml", "apps/db/cm.yaml"}


def test_checkout_of_an_older_commit(repo: Repo, tmp_path: Path) -> None:
    src = source(repo, tmp_path)
    with src.checkout(src.resolve("v1").sha, "apps/web") as directory:
        assert (directory / "deploy.yaml").read_text() == cm("web-v1")


def test_checkout_never_sees_or_disturbs_the_work_tree(repo: Repo, tmp_path: Path) -> None:
    repo.write("apps/web/deploy.yaml", cm("uncommitted-edit"))
    repo.write("apps/web/extra.yaml", cm("untracked"))
    repo.git("checkout", "-q", "feature/x", "--", "README.md")  # something staged, too
    status_before = repo.git("status", "--porcelain")
    head_before = repo.git("rev-parse", "HEAD")

    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    with src.checkout(sha, "apps/web") as directory:
        assert files_below(directory) == {"deploy.yaml": cm("web-v2")}
        assert repo.path not in directory.parents

    assert repo.git("status", "--porcelain") == status_before
    assert repo.git("rev-parse", "HEAD") == head_before
    assert (repo.path / "apps/web/deploy.yaml").read_text() == cm("uncommitted-edit")
    assert (repo.path / "apps/web/extra.yaml").read_text() == cm("untracked")


@pytest.mark.parametrize("path", ["apps/nope", "README.md", "../..", "apps/../../outside"])
def test_checkout_of_a_path_that_is_not_a_directory(repo: Repo, tmp_path: Path, path: str) -> None:
    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    with pytest.raises(SourceError) as caught, src.checkout(sha, path):
        pass
    assert str(caught.value) == f"path {path!r} is not a directory at {sha[:12]} in {repo.path}"


def test_checkout_of_an_unknown_commit(repo: Repo, tmp_path: Path) -> None:
    src = source(repo, tmp_path)
    src.resolve(None)
    with pytest.raises(SourceError, match=r"^cannot read commit 0123456789ab of "), src.checkout("0123456789ab" * 3):
        pass


def test_plain_files_read_from_git_match_a_checkout(repo: Repo, tmp_path: Path) -> None:
    """Diff reads plain directories straight from Git's objects; the result is what rendering a checkout gives."""
    for relative, text in TREE.items():
        repo.write(f"apps/plain/{relative}", text)
    repo.commit("A plain directory")
    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    read = parse_files(src.read_files(sha, "apps/plain", MANIFEST_SUFFIXES), "plain@x")
    with src.checkout(sha, "apps/plain") as directory:
        rendered = render_plain(directory, "plain@x")
    assert [(m.source, m.document, m.obj) for m in read] == [(m.source, m.document, m.obj) for m in rendered]
    assert len(read) == 7


def test_a_symlinked_manifest_is_read_from_git_as_a_checkout_renders_it(repo: Repo, tmp_path: Path) -> None:
    """A manifest shared between environments by a symlink is the file it points to, not the link's text."""
    repo.write("shared/cm.yaml", cm("shared"))
    (repo.path / "apps/web/shared.yaml").symlink_to("../../shared/cm.yaml")
    repo.commit("Share a ConfigMap")
    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    with src.checkout(sha, "apps/web") as directory:
        rendered = render_plain(directory, "web")
    assert [m.obj["metadata"]["name"] for m in rendered] == ["web-v2", "shared"]
    read = parse_files(src.read_files(sha, "apps/web", MANIFEST_SUFFIXES), "web")
    assert [(m.source, m.obj) for m in read] == [(m.source, m.obj) for m in rendered]


@pytest.mark.parametrize("target", ["/usr/local/bin/kubectl", "../../outside"])
def test_a_link_out_of_the_repository_elsewhere_does_not_break_a_checkout(
    repo: Repo, tmp_path: Path, target: str
) -> None:
    """A link in another folder, which the export refuses to follow, has nothing to do with rendering apps/web."""
    (repo.path / "tools").mkdir()
    (repo.path / "tools/kubectl").symlink_to(target)
    repo.commit("Link a tool")
    src = source(repo, tmp_path)
    sha = src.resolve(None).sha
    with src.checkout(sha, "apps/web") as directory:
        assert files_below(directory) == {"deploy.yaml": cm("web-v2")}


# --- history ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision", "path", "limit", "subjects"),
    [
        (None, "", 50, ["Document", "Bump web", "Add web and db"]),
        (None, ".", 50, ["Document", "Bump web", "Add web and db"]),
        (None, "apps/web", 50, ["Bump web", "Add web and db"]),
        (None, "apps/db", 50, ["Add web and db"]),
        (None, "README.md", 50, ["Document", "Add web and db"]),
        (None, "apps/nothing-here", 50, []),
        (None, "", 2, ["Document", "Bump web"]),
        ("v2", "", 50, ["Bump web", "Add web and db"]),
        ("feature/x", "apps/web", 50, ["Try a feature", "Add web and db"]),
    ],
)
def test_history(repo: Repo, tmp_path: Path, revision: str | None, path: str, limit: int, subjects: list[str]) -> None:
    history = source(repo, tmp_path).history(revision, path, limit=limit)
    assert [c.subject for c in history] == subjects
    assert all(c.author == "Dev <dev@example.com>" for c in history)
    dates = [c.date for c in history]
    assert dates == sorted(dates, reverse=True)


def test_history_commits_are_the_repositorys(repo: Repo, tmp_path: Path) -> None:
    history = source(repo, tmp_path).history(None)
    assert [c.sha for c in history] == repo.git("rev-list", "trunk").split()
