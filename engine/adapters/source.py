"""The Git adapter: a per-repository cache, revisions resolved to commits, commits exported without a work tree."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import posixpath
import shlex
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import git

from ..core import redact
from ..core.errors import SourceError
from ..core.repourl import HOST_PATH_HINT, is_host_path

if TYPE_CHECKING:
    import tarfile

# What GitPython raises when the long-lived `git cat-file` process of a mirror died under it (the repository moved or
# was removed): the caller drops that GitSource and opens a new one.
READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, git.GitError)


@dataclass(frozen=True)
class GitCredentials:
    """How to authenticate to a repository, from the Secret an Application names (spec.source.secretRef): a
    username and password or token for HTTPS, or an SSH private key with the host keys to trust. The values never
    show in a repr, a log or an error; git gets them through its environment, never its command line."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    identity: str = field(default="", repr=False)  # an SSH private key (PEM / OpenSSH)
    known_hosts: str = field(default="", repr=False)
    name: str = ""  # the Secret's namespace/name, for messages

    def __post_init__(self) -> None:
        # Every form of the values is scrubbed from any error this process formats from now on.
        values = {"password": self.password, "identity": self.identity, "header": self._basic()}
        redact.SEEN.remember({"kind": "Secret", "stringData": {k: v for k, v in values.items() if v}})

    def _basic(self) -> str:
        if not (self.password or self.username):
            return ""
        return base64.b64encode(f"{self.username or 'git'}:{self.password}".encode()).decode()

    @contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """The environment git runs in with these credentials (an SSH key lives in a private temporary folder
        for the duration)."""
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
        if self.password or self.username:
            token = self._basic()
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
                }
            )
        if not self.identity:
            yield env
            return
        folder = Path(tempfile.mkdtemp(prefix="gitops-ssh-"))
        try:
            key, hosts = folder / "identity", folder / "known_hosts"
            key.touch(mode=0o600)
            key.write_text(self.identity if self.identity.endswith("\n") else self.identity + "\n")
            hosts.write_text(self.known_hosts)
            env["GIT_SSH_COMMAND"] = " ".join(
                [
                    "ssh",
                    f"-i {shlex.quote(str(key))}",
                    "-o IdentitiesOnly=yes",
                    f"-o UserKnownHostsFile={shlex.quote(str(hosts))}",
                    "-o StrictHostKeyChecking=yes",  # a host not in known_hosts is refused, never trusted on sight
                    "-o BatchMode=yes",
                ]
            )
            yield env
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    date: str  # ISO 8601

    def as_dict(self) -> dict[str, str]:
        return {"revision": self.sha, "subject": self.subject, "author": self.author, "date": self.date}


SYMLINK_MODE = 0o120000


def _safe_member(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, but a link that points out of the tree is skipped instead of failing the export."""
    import tarfile

    try:
        return tarfile.data_filter(member, path)
    except tarfile.FilterError:
        return None


FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubectl-gitops" / "repos"


def redact_url(url: str) -> str:
    """The URL as it may be shown: credentials written into it (`https://user:token@host/...`, or a token as the
    user) replaced by `***`."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.scheme and "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
    return url


def without_credentials(text: str, url: str) -> str:
    """`text` with `url` redacted wherever it is quoted, and the password or token the URL carries taken out
    wherever else it appears."""
    text = text.replace(url, redact_url(url))
    userinfo = urllib.parse.urlsplit(url).netloc.rpartition("@")[0] if "://" in url else ""
    user, _, password = userinfo.partition(":")
    secret = password or user
    return text.replace(secret, "***") if secret else text


def _git_message(e: git.GitCommandError, url: str) -> str:
    """git's own complaint, with the URL's credentials taken out wherever git repeats them."""
    stderr = e.stderr.strip() if isinstance(e.stderr, str) else str(e.stderr)
    message = stderr.removeprefix("stderr: ").strip("'\n ") or str(e)
    userinfo = urllib.parse.urlsplit(url).netloc.rpartition("@")[0] if "://" in url else ""
    message = message.replace(url, redact_url(url))
    for secret in {userinfo, *userinfo.split(":")} - {""}:
        message = message.replace(secret, "***")
    return message


class GitSource:
    """One repository URL mirrored into the cache; fetches are explicit so that reads are cheap."""

    def __init__(self, url: str, cache_dir: Path | None = None, *, fetched: bool = False) -> None:
        """`fetched`: the mirror is kept up to date by its owner (the reconciler fetches once per interval for every
        reader), so `resolve` reads it as it is instead of fetching first."""
        self.url = url
        self.shown = redact_url(url)  # in every message: never the credentials a URL may carry
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        self.path = (cache_dir or default_cache_dir()) / digest
        self._repo: git.Repo | None = None
        self._fetched = fetched
        self.credentials: GitCredentials | None = None  # set by whoever read the Application's secretRef
        self._fetch_lock = threading.Lock()
        # Fetches are numbered as they start; the latest to finish is kept with its error, if any, so that callers
        # waiting for a missing commit can tell whether a fetch begun after they looked has already answered them.
        self._fetches_started = 0
        self._last_fetch: tuple[int, SourceError | None] = (0, None)

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            if (self.path / "HEAD").exists():
                self._repo = git.Repo(self.path)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._repo = git.Repo.init(self.path, bare=True)
                self._repo.git.remote("add", "origin", self.url)
            self._only_branches_and_tags(self._repo)
        return self._repo

    @staticmethod
    def _only_branches_and_tags(repo: git.Repo) -> None:
        """Fetch branches and tags, nothing else: a hosting service's other refs (`refs/pull/*`, review refs) hold
        commits that no branch has merged. (A mirror made by an older version fetched every ref: reset it.)"""
        with repo.config_reader() as config:
            current = config.get_values('remote "origin"', "fetch") if config.has_section('remote "origin"') else []
        if list(current) != list(FETCH_REFSPECS):
            repo.git.config("--unset-all", "remote.origin.fetch", with_exceptions=False)
            repo.git.config("--unset-all", "remote.origin.mirror", with_exceptions=False)
            for refspec in FETCH_REFSPECS:
                repo.git.config("--add", "remote.origin.fetch", refspec)

    def has_commit(self, sha: str) -> bool:
        """Whether the mirror holds this commit (GitPython's repo.commit() does not check a full sha exists)."""
        try:
            self.repo.git.cat_file("-e", f"{sha}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether `older` is `newer` or in its history (both must be in the mirror)."""
        try:
            self.repo.git.merge_base("--is-ancestor", older, newer)
        except git.GitCommandError:
            return False
        return True

    def fetch(self) -> None:
        """Brings the mirror up to date with the remote: branches, tags, and which branch is its default."""
        with self._fetch_lock:  # one fetch at a time per mirror: git locks refs
            self._fetch()

    def ensure_commit(self, sha: str) -> bool:
        """Fetches only if `sha` is not in the mirror yet. Concurrent callers share fetches: one that finds, once it
        holds the lock, that a fetch begun after it looked has finished does not fetch again, since that fetch
        brought whatever the remote had when the commit was asked for. A burst of requests for missing commits
        thus costs about two fetches, not one each, and a commit pushed a moment ago is still fetched."""
        if self.has_commit(sha):
            return True
        looked = self._fetches_started  # fetches numbered above this one began after `sha` was found missing
        with self._fetch_lock:
            finished, error = self._last_fetch
            if finished > looked:
                if error is not None:
                    raise SourceError(str(error)) from error
            elif not self.has_commit(sha):  # an older fetch may still have brought it while this one waited
                self._fetch()
        return self.has_commit(sha)

    def _fetch(self) -> None:
        """(Call with the fetch lock held.)"""
        self._fetches_started += 1
        number = self._fetches_started
        try:
            self._fetch_origin()
        except SourceError as e:
            self._last_fetch = (number, e)
            raise
        self._last_fetch = (number, None)

    def _fetch_origin(self) -> None:
        credentials = self.credentials or GitCredentials()
        try:
            with credentials.environment() as env:
                self.repo.git.fetch("--prune", "--tags", "--force", "origin", kill_after_timeout=300, env=env)
                heads = str(self.repo.git.ls_remote("--symref", "origin", "HEAD", kill_after_timeout=60, env=env))
        except git.GitCommandError as e:
            hint = HOST_PATH_HINT if is_host_path(self.url) else "check the URL and that the repository is reachable"
            if self.credentials is not None:
                hint += f", and the credentials in Secret {self.credentials.name}"
            message = f"cannot fetch {self.shown}: {_git_message(e, self.url)}; {hint}"
            raise SourceError(redact.SEEN.scrub(message)) from e
        for line in heads.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                self.repo.git.symbolic_ref("HEAD", line[len("ref: ") :].split("\t")[0])
        self._fetched = True

    def default_branch(self) -> str:
        try:
            return str(self.repo.git.symbolic_ref("HEAD")).removeprefix("refs/heads/")
        except git.GitCommandError as e:
            raise SourceError(f"{self.shown} has no default branch; give a --revision") from e

    def resolve(self, revision: str | None) -> Commit:
        """A branch, tag or commit (full or abbreviated) to the commit it names, fetching first if needed."""
        if not self._fetched:
            self.fetch()
        wanted = revision or self.default_branch()
        for candidate in (f"refs/heads/{wanted}", f"refs/tags/{wanted}", wanted):
            try:
                commit = self.repo.commit(candidate)
            except (git.BadName, ValueError, git.GitCommandError):
                continue
            return Commit(
                sha=commit.hexsha,
                subject=commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
                author=f"{commit.author.name} <{commit.author.email}>",
                date=commit.committed_datetime.isoformat(),
            )
        raise SourceError(f"revision {wanted!r} does not exist in {self.shown} (no such branch, tag or commit)")

    def history(self, revision: str | None, path: str = "", limit: int = 50) -> list[Commit]:
        head = self.resolve(revision)
        out = []
        paths = [path] if path and path != "." else []
        for commit in self.repo.iter_commits(head.sha, paths, max_count=limit):
            out.append(
                Commit(
                    commit.hexsha,
                    commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
                    f"{commit.author.name} <{commit.author.email}>",
                    commit.committed_datetime.isoformat(),
                )
            )
        return out

    def _tree(self, sha: str, path: str) -> git.Tree:
        sub = path.strip("/")
        try:
            tree = self.repo.commit(sha).tree
            return tree / sub if sub and sub != "." else tree
        except (KeyError, ValueError, git.BadName) as e:
            raise SourceError(f"path {path!r} is not a directory at {sha[:12]} in {self.shown}") from e

    def file_names(self, sha: str, path: str) -> set[str]:
        """The names of the files directly in `path` at `sha` (to choose a renderer without exporting)."""
        tree = self._tree(sha, path)
        if tree.type != "tree":
            raise SourceError(f"path {path!r} is not a directory at {sha[:12]} in {self.shown}")
        return {blob.name for blob in tree.blobs}

    def read_files(
        self, sha: str, path: str, suffixes: tuple[str, ...], *, recurse: bool = True
    ) -> Iterator[tuple[str, bytes]]:
        """(path relative to `path`, content) of every file below `path` (directly in it unless `recurse`) with one
        of `suffixes`, in path order; hidden files and folders skipped. Read from Git's object store: nothing
        touches the disk."""
        root = self.repo.commit(sha).tree
        tree = self._tree(sha, path)
        pending = [(tree, "")]
        while pending:
            current, prefix = pending.pop()
            for blob in sorted(current.blobs, key=lambda b: b.name):
                if not blob.name.startswith(".") and blob.name.endswith(suffixes):
                    data = self._blob_data(root, blob)
                    if data is not None:
                        yield prefix + blob.name, data
            if not recurse:
                break
            pending.extend(
                (t, f"{prefix}{t.name}/")
                for t in sorted(current.trees, key=lambda t: t.name, reverse=True)
                if not t.name.startswith(".")
            )

    def read_file(self, sha: str, path: str) -> bytes | None:
        """The content of the file at `path` (relative to the repository's root, `/`-separated, normalized) at
        `sha`, or None when the commit has no file there. Only the commit's own tree is reachable: a symbolic link
        is followed inside it, and one that leads out of it reads as no file."""
        root = self.repo.commit(sha).tree
        try:
            blob = root / path
        except KeyError:
            return None
        return self._blob_data(root, blob) if blob.type == "blob" else None

    @staticmethod
    def _blob_data(root: git.Tree, blob: git.Blob) -> bytes | None:
        """A blob's content; a symbolic link is followed inside the commit's tree (one pointing out is skipped)."""
        if blob.mode != SYMLINK_MODE:
            return bytes(blob.data_stream.read())
        link = blob.data_stream.read().decode(errors="replace")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(blob.path), link))
        if posixpath.isabs(link) or target == ".." or target.startswith("../"):
            return None
        try:
            resolved = root / target
        except KeyError:
            return None
        return bytes(resolved.data_stream.read()) if resolved.type == "blob" else None

    @contextmanager
    def checkout(self, sha: str, path: str = "") -> Iterator[Path]:
        """The tree of `sha` exported to a temporary directory (never a user's work tree); yields `path` in it.

        The whole tree is exported: a Kustomize overlay may refer to a base outside its own folder.
        """
        sub = path.strip("/")
        try:
            data = self.repo.git.archive("--format=tar", sha, stdout_as_string=False)
        except git.GitCommandError as e:
            raise SourceError(f"cannot read commit {sha[:12]} of {self.shown}: {_git_message(e, self.url)}") from e
        import tarfile  # imported by what exports a tree (Kustomize, Helm): plain manifests are read as blobs

        with tempfile.TemporaryDirectory(prefix="gitops-render-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                archive.extractall(tmp, filter=_safe_member)
            root = Path(tmp).resolve()
            target = (root / sub).resolve() if sub and sub != "." else root
            if not target.is_relative_to(root) or not target.is_dir():
                raise SourceError(f"path {path!r} is not a directory at {sha[:12]} in {self.shown}")
            yield target
