"""Git for the reconciler: one mirror per repository URL, fetched at most once per interval however many
Applications use it, and at once when a person asks (`kubectl gitops reconcile`).

Each worker thread reads a mirror through a GitSource of its own: GitPython's Repo keeps one `git cat-file` process
per object and is not safe to share between threads (a shared one interleaves answers: a tree read back as
"not a directory" under eight workers). Fetches go through one more, under the mirror's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.adapters.source import GitCredentials, GitSource
from engine.core.errors import GitOpsError

RETRY_SECONDS = 15.0  # a failed fetch is tried again this soon (or at the interval, if shorter)


@dataclass
class _Mirror:
    source: GitSource  # the one that fetches
    readers: threading.local = field(default_factory=threading.local)  # each thread's own, for reads
    lock: threading.Lock = field(default_factory=threading.Lock)
    tried_at: float = float("-inf")  # when the last fetch began
    error: str = ""  # the last fetch's error ("" when it succeeded)
    fetches: int = 0


class Repositories:
    def __init__(self, cache_dir: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache_dir = cache_dir
        self._clock = clock
        self._mirrors: dict[str, _Mirror] = {}
        self._lock = threading.Lock()

    def _mirror(self, url: str) -> _Mirror:
        with self._lock:
            if url not in self._mirrors:
                self._mirrors[url] = _Mirror(GitSource(url, self._cache_dir))
            return self._mirrors[url]

    def source(
        self, url: str, *, max_age: float, force: bool = False, credentials: GitCredentials | None = None
    ) -> tuple[GitSource, str]:
        """The mirror of `url`, fetched first when its last fetch is older than `max_age` seconds (or `force`), and
        the error of the last fetch ("" when it succeeded). Callers that wait while another fetches use that fetch.
        A failed fetch leaves the mirror as it was: what it holds is still Git's last known state, and nothing is
        deleted for want of Git; it is tried again after RETRY_SECONDS."""
        mirror = self._mirror(url)
        asked = self._clock()
        with mirror.lock:
            age = min(max_age, RETRY_SECONDS) if mirror.error else max_age
            due = mirror.tried_at <= asked if force else mirror.tried_at < asked - age
            if due:
                mirror.tried_at = self._clock()
                mirror.fetches += 1
                mirror.source.credentials = credentials
                try:
                    mirror.source.fetch()
                except GitOpsError as e:
                    mirror.error = str(e)
                else:
                    mirror.error = ""
        reader = getattr(mirror.readers, "source", None)
        if reader is None:
            reader = GitSource(url, self._cache_dir, fetched=True)
            mirror.readers.source = reader
        reader.credentials = credentials  # it never fetches; the credentials only spare load_desired a read
        return reader, mirror.error

    def drop_reader(self, url: str) -> None:
        """Forgets this thread's reader of `url` (its `git cat-file` died): the next read opens a new one."""
        with self._lock:
            mirror = self._mirrors.get(url)
        if mirror is not None:
            mirror.readers.source = None

    def fetches(self) -> int:
        with self._lock:
            return sum(m.fetches for m in self._mirrors.values())
