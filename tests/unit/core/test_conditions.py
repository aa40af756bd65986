"""Conditions as kubectl wait and kstatus read them."""

from __future__ import annotations

import datetime

from engine.core.conditions import DRIFTED, HEALTHY, READY, SYNCED, Condition, merged, ready

T0 = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_the_transition_time_moves_only_with_the_status() -> None:
    first = merged([], [Condition(SYNCED, True, "Synced", "at a")], generation=1, now=T0)
    same = merged(first, [Condition(SYNCED, True, "Synced", "at b")], generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == "2026-12-01T10:00:00Z"
    assert same[0]["message"] == "at b"
    assert same[0]["observedGeneration"] == 2
    moved = merged(same, [Condition(SYNCED, False, "SyncFailed", "boom")], generation=2, now=T1)
    assert moved[0]["lastTransitionTime"] == "2026-12-01T10:05:00Z"
    assert moved[0]["status"] == "False"


def test_unknown_is_said_and_others_conditions_are_kept_in_order() -> None:
    out = merged(
        [{"type": "Custom", "status": "True"}],
        [Condition(HEALTHY, None, "SourceUnavailable", "x"), Condition(READY, False, "SourceUnavailable", "x")],
        generation=1,
        now=T0,
    )
    assert [c["type"] for c in out] == [READY, HEALTHY, "Custom"]
    assert out[1]["status"] == "Unknown"


def test_ready_takes_the_first_reason_that_is_not_so() -> None:
    synced = Condition(SYNCED, True, "Synced", "at a")
    clean = Condition(DRIFTED, False, "NoDrift", "")
    healthy = Condition(HEALTHY, True, "Healthy", "")
    assert ready(synced, clean, healthy).status is True
    drift = Condition(DRIFTED, True, "DriftFound", "1 object")
    assert ready(synced, drift, healthy).reason == "DriftFound"
    assert ready(synced, clean, Condition(HEALTHY, False, "Progressing", "")).reason == "Progressing"
    assert ready(Condition(SYNCED, None, "SourceUnavailable", ""), drift, healthy).status is None
