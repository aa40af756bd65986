"""The system's clocks, behind engine.core.clock.Clock."""

from __future__ import annotations

import datetime
import time


class SystemClock:
    def wall(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemClock()
