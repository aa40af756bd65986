"""engine.core.timespec: the times history questions take, resolved against a fixed now and zone."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from engine.core.timespec import InvalidTime, duration, duration_text, resolve

BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 2026-12-01, 10:30 in Berlin (09:30 UTC)
NOW = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T15:00:00Z", datetime.datetime(2026, 11, 26, 15, tzinfo=datetime.UTC)),
        ("2026-11-26T15:00:00+05:00", datetime.datetime(2026, 11, 26, 10, tzinfo=datetime.UTC)),
        ("2026-11-26", local(2026, 11, 26)),
        ("2026-11-26 15:00", local(2026, 11, 26, 15)),
        ("2026-11-26T15:00", local(2026, 11, 26, 15)),
        ("36h", NOW - datetime.timedelta(hours=36)),
        ("3d", NOW - datetime.timedelta(days=3)),
        ("90m", NOW - datetime.timedelta(minutes=90)),
        ("2w", NOW - datetime.timedelta(weeks=2)),
        ("now", NOW),
        ("today", local(2026, 12, 1)),
        ("yesterday", local(2026, 11, 30)),
        ("yesterday 17:45", local(2026, 11, 30, 17, 45)),
        ("thursday", local(2026, 11, 26)),
        ("Thursday", local(2026, 11, 26)),
        ("thu", local(2026, 11, 26)),
        ("last thursday", local(2026, 11, 26)),
        ("tuesday", local(2026, 12, 1)),  # today is a Tuesday: "tuesday" is today
        ("last tuesday", local(2026, 11, 24)),  # and "last tuesday" the one before
        ("thursday 15:00", local(2026, 11, 26, 15)),
        ("last monday 08:00:30", local(2026, 11, 30, 8, 0, 30)),
    ],
)
def test_resolves(text: str, expected: datetime.datetime) -> None:
    assert resolve(text, NOW, BERLIN) == expected


def test_a_local_date_across_daylight_saving_time_keeps_its_wall_clock() -> None:
    """2026-07-01 is summer time in Berlin (UTC+2), although now is winter time (UTC+1)."""
    assert resolve("2026-07-01 12:00", NOW, BERLIN).astimezone(datetime.UTC).hour == 10


@pytest.mark.parametrize("text", ["", "soon", "thursday 25:00", "last", "last blursday", "3 fortnights", "12:00"])
def test_says_what_it_takes(text: str) -> None:
    with pytest.raises(InvalidTime) as raised:
        resolve(text, NOW, BERLIN)
    assert str(raised.value)


@pytest.mark.parametrize("text", ["45s", "90m", "36h", "3d", "2w", "0s"])
def test_a_duration_reads_back_as_written(text: str) -> None:
    assert duration_text(duration(text)) == text


def test_a_duration_is_written_in_its_largest_unit() -> None:
    assert duration_text(datetime.timedelta(days=14)) == "2w"
    assert duration_text(datetime.timedelta(hours=36)) == "36h"
