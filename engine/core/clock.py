"""The clock the engine is given (the core never reads one): wall time for records, and a monotonic scale for
deadlines and ages. engine.adapters.clock.SYSTEM reads the real ones; tests pass their own."""

from __future__ import annotations

import datetime
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> datetime.datetime:
        """Now, time-zone aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a scale that never goes back (deadlines and ages are measured on it)."""
        ...


def rfc3339(at: datetime.datetime, *, milliseconds: bool = False) -> str:
    """`at` in UTC as RFC 3339 with a Z: whole seconds, as Kubernetes writes times, or milliseconds (audit records,
    whose times order attempts within a second)."""
    return (
        at.astimezone(datetime.UTC)
        .isoformat(timespec="milliseconds" if milliseconds else "seconds")
        .replace("+00:00", "Z")
    )
