"""Witnesses of the audit log outside the cluster: a file of checkpoint JSON lines, or a Git repository.

The webhook commits each checkpoint to `checkpoints.jsonl` in the witness repository (a local work tree is committed
to in place; any other URL git understands is cloned, committed to and pushed), and `audit verify --witness` reads
them back, from such a repository or from a file of JSON lines collected from the webhook's stdout.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import git

from ..core.auditchain import Checkpoint, parse_checkpoints
from ..core.errors import GitOpsError

CHECKPOINTS_FILE = "checkpoints.jsonl"
AUTHOR = git.Actor("gitops-webhook", "gitops-webhook@kubectl-gitops.io")


def _is_work_tree(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and (path / ".git").exists()


class GitWitness:
    """Checkpoints committed to a Git repository, one JSON line each."""

    def __init__(self, source: str, workdir: Path | None = None) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._workdir = workdir
        self._repo: git.Repo | None = None

    def _open(self) -> git.Repo:
        """The repository to commit to: the work tree itself, or a clone of the remote one kept in `workdir`."""
        if self._repo is not None:
            return self._repo
        try:
            if _is_work_tree(self.source):
                self._repo = git.Repo(self.source)
            else:
                where = self._workdir or Path(tempfile.mkdtemp(prefix="gitops-witness-"))
                if (where / ".git").exists():
                    self._repo = git.Repo(where)
                else:
                    self._repo = git.Repo.clone_from(self.source, where)
        except (git.GitError, OSError) as e:
            raise GitOpsError(f"the audit witness {self.source} cannot be opened: {e}") from e
        return self._repo

    def _remote(self) -> bool:
        return not _is_work_tree(self.source)

    def add(self, checkpoints: list[Checkpoint]) -> None:
        lines = "".join(json.dumps(c.as_dict(), sort_keys=True) + "\n" for c in checkpoints)
        with self._lock:
            repo = self._open()
            try:
                for _ in range(5):
                    if self._remote() and repo.remotes and repo.head.is_valid():
                        repo.remotes.origin.fetch()
                        branch = repo.active_branch.name
                        if f"origin/{branch}" in [r.name for r in repo.remotes.origin.refs]:
                            repo.git.reset("--hard", f"origin/{branch}")
                    path = Path(str(repo.working_tree_dir)) / CHECKPOINTS_FILE
                    with path.open("a") as out:
                        out.write(lines)
                    repo.index.add([CHECKPOINTS_FILE])
                    last = checkpoints[-1]
                    repo.index.commit(
                        f"audit checkpoint {last.sequence} ({last.hash[:12]})", author=AUTHOR, committer=AUTHOR
                    )
                    if not self._remote():
                        return
                    pushed = repo.remotes.origin.push(repo.active_branch.name)
                    if not any(info.flags & info.ERROR for info in pushed):
                        return  # else another replica pushed first: take theirs and add ours again
                raise GitOpsError("the witness repository kept rejecting the push")
            except git.GitError as e:
                raise GitOpsError(f"could not commit to the audit witness {self.source}: {e}") from e

    def read(self) -> list[Checkpoint]:
        with self._lock:
            return read_witness(self.source)


def read_witness(source: str) -> list[Checkpoint]:
    """The checkpoints a witness holds: a file of JSON lines, or a Git repository (its `checkpoints.jsonl` at HEAD)."""
    path = Path(source)
    if path.is_file():
        try:
            return parse_checkpoints(path.read_text().splitlines())
        except OSError as e:
            raise GitOpsError(f"cannot read the audit witness {source}: {e}") from e
    try:
        if _is_work_tree(source):
            return _checkpoints_at_head(git.Repo(source))
        with tempfile.TemporaryDirectory(prefix="gitops-witness-") as tmp:
            return _checkpoints_at_head(git.Repo.clone_from(source, tmp, depth=1))
    except git.GitError as e:
        raise GitOpsError(
            f"the audit witness {source} is neither a file of checkpoint lines nor a Git repository git can read: {e}"
        ) from e


def _checkpoints_at_head(repo: git.Repo) -> list[Checkpoint]:
    if not repo.head.is_valid():
        return []
    try:
        blob = repo.head.commit.tree / CHECKPOINTS_FILE
    except KeyError:
        return []
    return parse_checkpoints(blob.data_stream.read().decode().splitlines())
