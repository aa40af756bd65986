"""The Application's conditions, kept to the conventions kubectl wait and kstatus read: `type`, `status` ("True",
"False", "Unknown"), `reason` (CamelCase), `message`, `observedGeneration`, and a `lastTransitionTime` that moves
only when the status does."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import rfc3339

READY, SYNCED, DRIFTED, HEALTHY = "Ready", "Synced", "Drifted", "Healthy"
ORDER = (READY, SYNCED, DRIFTED, HEALTHY)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown (the reconciler cannot tell, and says so)
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def merged(
    previous: Sequence[Mapping[str, Any]] | None,
    current: Iterable[Condition],
    *,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """The conditions to write: `current` over `previous`, each keeping its lastTransitionTime while its status
    stays, and any condition another writer added left as it was."""
    before = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in before.items()}
    for c in current:
        old = before.get(c.type) or {}
        moved = old.get("status") != c.status_text or not old.get("lastTransitionTime")
        out[c.type] = {
            "type": c.type,
            "status": c.status_text,
            "reason": c.reason,
            "message": c.message[:1024],
            "observedGeneration": generation,
            "lastTransitionTime": rfc3339(now) if moved else old["lastTransitionTime"],
        }
    return sorted(out.values(), key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER))


def ready(synced: Condition, drifted: Condition, healthy: Condition) -> Condition:
    """Ready: synced to Git's target, not drifted, healthy. Its reason is the first of them that is not so."""
    if synced.status is not True:
        return Condition(READY, False if synced.status is False else None, synced.reason, synced.message)
    if drifted.status is not False:
        return Condition(READY, False if drifted.status else None, drifted.reason, drifted.message)
    if healthy.status is not True:
        return Condition(READY, False if healthy.status is False else None, healthy.reason, healthy.message)
    return Condition(READY, True, "Reconciled", synced.message)


def status_of(conditions: Iterable[Mapping[str, Any]], kind: str) -> str:
    return next((str(c.get("status")) for c in conditions if c.get("type") == kind), "")
