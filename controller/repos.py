"""Git for the reconciler: one mirror per repository URL, fetched at most once per interval however many
Applications use it, and at once when a person asks (`kubectl gitops reconcile`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.adapters.source import GitSource
from engine.core.errors import GitOpsError

RETRY_SECONDS = 15.0  # a failed fetch is tried again this soon (or at the interval, if shorter)


@dataclass
class _Mirror:
    source: GitSource
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

    def source(self, url: str, *, max_age: float, force: bool = False) -> tuple[GitSource, str]:
        """The mirror of `url`, fetched first when its last fetch is older than `max_age` seconds (or `force`), and
        the error of the last fetch ("" when it succeeded). Callers that wait while another fetches use that fetch.
        A failed fetch leaves the mirror as it was: what it holds is still Git's last known state, and nothing is
        deleted for want of Git; it is tried again after RETRY_SECONDS."""
        mirror = self._mirror(url)
        asked = self._clock()
        with mirror.lock:
            age = min(max_age, RETRY_SECONDS) if mirror.error else max_age
            if mirror.tried_at < (asked if force else asked - age):
                mirror.tried_at = self._clock()
                mirror.fetches += 1
                try:
                    mirror.source.fetch()
                except GitOpsError as e:
                    mirror.error = str(e)
                else:
                    mirror.error = ""
        return mirror.source, mirror.error

    def fetches(self) -> int:
        with self._lock:
            return sum(m.fetches for m in self._mirrors.values())
