"""The reconciler's queue of Applications: keyed, delayed, and never the same Application twice at once.

An Application asked for many times before a worker takes it (a burst of watch events, a sync's own writes) is
reconciled once. One that is being reconciled when it is asked for again is reconciled once more afterwards, so
that no change seen meanwhile is lost. Python has no maintained library for this (client-go's workqueue has no
counterpart in the kubernetes package), so it is written here: one heap and one condition variable.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[K, float] = {}  # each waiting key, with when it becomes due
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._active: set[K] = set()  # taken by a worker, not done yet
        self._again: dict[K, float] = {}  # asked for while active: due again at this time once done
        self._changed = threading.Condition()
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        """Asks for `key` in `delay` seconds; an earlier request already waiting wins."""
        at = self._clock() + max(delay, 0.0)
        with self._changed:
            if key in self._active:
                self._again[key] = min(at, self._again.get(key, at))
                return
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, next(self._order), key))
            self._changed.notify()

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key (None when the queue is closed or `timeout` passes), marked active until `done`."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._changed:
            while not self._closed:
                now = self._clock()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier request, or taken
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._active.add(key)
                    return key
                waits = [t for t in (self._heap[0][0] if self._heap else None, deadline) if t is not None]
                if deadline is not None and now >= deadline:
                    return None
                self._changed.wait(max(min(waits) - now, 0.0) if waits else None)
            return None

    def done(self, key: K) -> None:
        with self._changed:
            self._active.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self._clock())

    def waiting(self) -> int:
        with self._changed:
            return len(self._due)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
