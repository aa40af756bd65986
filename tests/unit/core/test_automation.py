"""The reconciler's next step: sync new commits when automated, heal when asked, back off from fights."""

from __future__ import annotations

import itertools

from engine.core.automation import (
    FIGHT_WINDOW_SECONDS,
    HEAL_BASE_SECONDS,
    MAX_BACKOFF_SECONDS,
    RETRY_BASE_SECONDS,
    Attempts,
    Facts,
    Step,
    plan,
)
from engine.core.history import Trigger

A, B = "a" * 40, "b" * 40


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {
        "target": B,
        "synced": A,
        "drifted": False,
        "automated": True,
        "self_heal": True,
        "suspended": False,
    }
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


def test_a_new_commit_is_synced_when_automated() -> None:
    step = plan(facts(), Attempts(), 0.0)
    assert step.step is Step.SYNC
    assert step.trigger is Trigger.AUTOMATED
    assert step.attempt == f"sync {B}"


def test_a_new_commit_is_only_reported_without_automation_or_when_suspended() -> None:
    assert plan(facts(automated=False), Attempts(), 0.0).reason == "NewCommit"
    assert plan(facts(automated=False), Attempts(), 0.0).step is Step.REPORT
    assert plan(facts(suspended=True), Attempts(), 0.0).reason == "Suspended"


def test_drift_is_healed_with_self_heal_and_reported_without() -> None:
    healing = plan(facts(synced=B, drifted=True), Attempts(), 0.0)
    assert healing.step is Step.SYNC
    assert healing.trigger is Trigger.SELF_HEAL
    assert plan(facts(synced=B, drifted=True, self_heal=False), Attempts(), 0.0).step is Step.REPORT
    assert plan(facts(synced=B, drifted=True, suspended=True), Attempts(), 0.0).reason == "Suspended"
    assert plan(facts(synced=B), Attempts(), 0.0).step is Step.NOTHING


def test_a_fight_backs_off_longer_each_time_and_says_so() -> None:
    tried = Attempts()
    now = 0.0
    waits = []
    for _ in range(12):
        step = plan(facts(synced=B, drifted=True), tried, now)
        if step.step is Step.WAIT:
            assert step.fighting
            assert "another writer" in step.message
            waits.append(step.retry_at - now)
            now = step.retry_at
            continue
        tried = tried.after("heal", now)
        now += 1.0  # the drift is back a second after each heal
    assert waits[0] == HEAL_BASE_SECONDS - 1.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert max(waits) <= MAX_BACKOFF_SECONDS


def test_a_heal_that_held_longer_than_the_window_starts_the_count_again() -> None:
    tried = Attempts().after("heal", 0.0).after("heal", 1.0).after("heal", 2.0)
    assert tried.count == 3
    assert tried.after("heal", 2.0 + FIGHT_WINDOW_SECONDS + 1).count == 1


def test_a_failing_sync_is_retried_with_backoff_and_a_new_commit_at_once() -> None:
    tried = Attempts().after(f"sync {B}", 0.0)
    waiting = plan(facts(), tried, 1.0)
    assert waiting.step is Step.WAIT
    assert waiting.reason == "RetryBackoff"
    assert waiting.retry_at == RETRY_BASE_SECONDS
    assert plan(facts(), tried, RETRY_BASE_SECONDS).step is Step.SYNC
    assert plan(facts(target="c" * 40), tried, 1.0).step is Step.SYNC
