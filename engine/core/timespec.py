"""The times people give history questions: an RFC 3339 instant, a local date or date-time, a duration ago, or a
weekday. Resolved against `now` and a time zone the caller passes in (the CLI: the local zone), so that the same
words always give the same instant in tests.

    2026-11-26T15:00:00Z      that instant (any offset)
    2026-11-26 15:00          15:00 local time that day (also 2026-11-26T15:00)
    2026-11-26                the start of that day, local time
    36h, 90m, 3d, 2w, 45s     that long before now
    now, today, yesterday     now; the start of today; the start of yesterday
    thursday, thu             the start of the newest Thursday, today included
    last thursday             the start of the Thursday before today
    thursday 15:00            15:00 on that day (also with "last")
"""

from __future__ import annotations

import datetime
import re

from .errors import GitOpsError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class InvalidTime(GitOpsError):
    """A time the history verbs cannot read."""


def _weekday(word: str) -> int | None:
    word = word.lower()
    for index, name in enumerate(WEEKDAYS):
        if word == name or (len(word) >= 3 and name.startswith(word)):
            return index
    return None


def _start_of(day: datetime.date, zone: datetime.tzinfo) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(), tzinfo=zone)


def _at_clock(day: datetime.date, clock: str, zone: datetime.tzinfo, text: str) -> datetime.datetime:
    match = _CLOCK.match(clock)
    if match is None:
        raise InvalidTime(f"{text!r}: {clock!r} is not a time of day (HH:MM or HH:MM:SS)")
    hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    try:
        return datetime.datetime.combine(day, datetime.time(hour, minute, second), tzinfo=zone)
    except ValueError as e:
        raise InvalidTime(f"{text!r}: {e}") from e


def duration(text: str) -> datetime.timedelta:
    """`45s`, `90m`, `36h`, `3d`, `2w` as a timedelta."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise InvalidTime(f"{text!r} is not a duration (a number and s, m, h, d or w: 36h, 3d)")
    return datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def duration_text(span: datetime.timedelta) -> str:
    """A timedelta as `duration` reads it back: in the largest unit that divides it."""
    seconds = int(span.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def resolve(text: str, now: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    """The instant `text` names (time-zone aware). `now` must be aware; `zone` resolves local dates and times."""
    words = text.strip().lower().split()
    if not words:
        raise InvalidTime("an empty time; give an RFC 3339 time, a date, a duration (36h, 3d) or a weekday")
    local_now = now.astimezone(zone)
    today = local_now.date()
    if words == ["now"]:
        return now
    if len(words) == 1 and (match := _DURATION.match(words[0])):
        return now - datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if words[0] in ("today", "yesterday") and len(words) <= 2:
        day = today if words[0] == "today" else today - datetime.timedelta(days=1)
        return _at_clock(day, words[1], zone, text) if len(words) == 2 else _start_of(day, zone)
    last = words[0] == "last"
    rest = words[1:] if last else words
    if rest and (weekday := _weekday(rest[0])) is not None and len(rest) <= 2:
        back = (today.weekday() - weekday) % 7
        if last and back == 0:
            back = 7
        day = today - datetime.timedelta(days=back)
        return _at_clock(day, rest[1], zone, text) if len(rest) == 2 else _start_of(day, zone)
    try:
        parsed = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidTime(
            f"{text!r} is not a time: give an RFC 3339 time (2026-11-26T15:00:00Z), a local date or date-time "
            "(2026-11-26, 2026-11-26 15:00), a duration before now (36h, 3d) or a weekday (thursday, last thursday)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=zone)
    return parsed
