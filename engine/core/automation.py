"""What the reconciler does with an Application now: sync a new commit, heal drift, back off, or only report.

The decision is a plain function of facts the reconciler gathered (Git's target, what the last sync applied, the
drift found, the Application's policy) and of what it tried before, so that every rule here is a unit test. A
reconciler that fights a person or another controller must not loop: each repeated attempt waits longer, and the
waiting is told (status, Event), never silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .history import Trigger

HEAL_BASE_SECONDS = 5.0
RETRY_BASE_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0
# A heal whose drift comes back sooner than this did not hold: another writer is changing the same fields.
FIGHT_WINDOW_SECONDS = 120.0
FREE_HEALS = 2  # heals that may follow each other at once before backing off starts


class Step(StrEnum):
    NOTHING = "nothing"  # the cluster is Git's, or there is nothing this Application lets the reconciler do
    SYNC = "sync"  # apply Git's target commit
    WAIT = "wait"  # a sync or heal is due but backing off: try again at `retry_at`
    REPORT = "report"  # out of sync or drifted, and the Application says: report only


@dataclass(frozen=True)
class Facts:
    target: str  # the commit Git's state resolves to (a rollback's commit while one holds the Application)
    synced: str  # the commit the last successful sync applied ("": never synced)
    drifted: bool  # the engine's compare found drift (missing, extra or changed objects)
    automated: bool  # syncPolicy.automated: new commits are synced without a person
    self_heal: bool  # syncPolicy.selfHeal: drift is synced back
    suspended: bool = False  # kubectl gitops suspend: automation paused


@dataclass(frozen=True)
class Attempts:
    """Consecutive tries of one thing ("sync <commit>" or "heal") that did not hold, and when the last one ran (on
    the reconciler's monotonic clock)."""

    what: str = ""
    count: int = 0
    last: float = float("-inf")

    def after(self, what: str, now: float) -> Attempts:
        """The record once `what` was tried at `now`: a heal counts as another try when the drift came back within
        the fight window of the last heal, a sync when it is the same commit again."""
        again = what == self.what and (not what.startswith("heal") or now - self.last < FIGHT_WINDOW_SECONDS)
        return Attempts(what, self.count + 1 if again else 1, now)

    def next_try(self, what: str) -> float:
        """When `what` may be tried next (-inf: now)."""
        if what != self.what or self.count == 0:
            return float("-inf")
        if what.startswith("heal"):
            if self.count < FREE_HEALS:
                return float("-inf")
            delay = HEAL_BASE_SECONDS * 2.0 ** (self.count - FREE_HEALS)
        else:
            delay = RETRY_BASE_SECONDS * 2.0 ** (self.count - 1)
        return self.last + min(delay, MAX_BACKOFF_SECONDS)


@dataclass(frozen=True)
class Plan:
    step: Step
    reason: str  # a condition reason: NewCommit, DriftFound, SelfHealBackoff, RetryBackoff, Suspended, ...
    message: str
    trigger: Trigger = Trigger.AUTOMATED
    attempt: str = ""  # what the step tries ("sync <commit>", "heal"), for Attempts
    retry_at: float = float("-inf")  # for WAIT: when to look again

    @property
    def fighting(self) -> bool:
        return self.reason == "SelfHealBackoff"


def plan(facts: Facts, tried: Attempts, now: float) -> Plan:
    """The next step for an Application, given what the reconciler found and what it tried before."""
    short = facts.target[:12]
    if facts.target != facts.synced:
        if facts.suspended:
            return Plan(Step.REPORT, "Suspended", f"commit {short} is waiting: automation is suspended")
        if not facts.automated:
            return Plan(
                Step.REPORT,
                "NewCommit",
                f"commit {short} is waiting: automated sync is off (kubectl gitops sync, or syncPolicy.automated)",
            )
        what = f"sync {facts.target}"
        due = tried.next_try(what)
        if due > now:
            return Plan(
                Step.WAIT,
                "RetryBackoff",
                f"the sync of {short} failed {tried.count} times; next try in {due - now:.0f}s",
                attempt=what,
                retry_at=due,
            )
        return Plan(Step.SYNC, "NewCommit", f"syncing commit {short}", Trigger.AUTOMATED, what)
    if not facts.drifted:
        return Plan(Step.NOTHING, "Synced", f"the cluster is at {short}")
    if facts.suspended:
        return Plan(Step.REPORT, "Suspended", "drift found; automation is suspended, so it is only reported")
    if not facts.self_heal:
        return Plan(Step.REPORT, "DriftFound", "drift found; selfHeal is off, so it is only reported")
    due = tried.next_try("heal")
    if due > now:
        return Plan(
            Step.WAIT,
            "SelfHealBackoff",
            f"the drift came back {tried.count} times within {FIGHT_WINDOW_SECONDS:.0f}s of a heal: another writer "
            f"changes these objects; the next heal is in {due - now:.0f}s",
            attempt="heal",
            retry_at=due,
        )
    return Plan(Step.SYNC, "DriftFound", "healing drift", Trigger.SELF_HEAL, "heal")
