"""Wall-clock arithmetic in users' time zones, correct across daylight-saving changes.

Quiet hours and delivery windows are written as local clock times ("22:00"), but every
instant the gateway stores is an aware UTC datetime. Converting between the two is where
notification systems usually lose or duplicate messages: a local time may not exist (the
spring-forward gap) or exist twice (the fall-back overlap). `local_instant` is the one
place that resolves a wall-clock time to an instant; everything else builds on it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w))+\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_duration(text: str) -> dt.timedelta:
    """Parse `90s`, `10m`, `1h30m`, `7d` into a timedelta; raise ValueError otherwise."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d, w), "
            "e.g. '30s', '10m', '1h30m', '7d'"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_clock(text: str) -> int:
    """Parse `HH:MM` into minutes after midnight; raise ValueError otherwise."""
    match = _CLOCK.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a clock time; write HH:MM, e.g. '22:00'")
    return int(match.group(1)) * 60 + int(match.group(2))


def format_clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def minute_of_day(local: dt.datetime) -> int:
    return local.hour * 60 + local.minute


def local_instant(
    day: dt.date, minutes: int, tz: ZoneInfo, *, after: dt.datetime | None = None
) -> dt.datetime:
    """The UTC instant at which `tz`'s clocks read `minutes` on `day`.

    A wall time inside a spring-forward gap does not exist; it resolves to the first
    instant after the gap, so a deferral to it neither vanishes nor lands inside the gap.
    A wall time inside a fall-back overlap exists twice; it resolves to the earlier
    occurrence, or to the later one when the earlier is not strictly after `after`.
    """
    naive = dt.datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
    early = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if early.astimezone(tz).replace(tzinfo=None) != naive:
        return _transition_between(min(early, late), max(early, late), tz)
    if after is not None and early <= after < late:
        return late
    return early


def _transition_between(lo: dt.datetime, hi: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """First instant in (lo, hi] whose UTC offset is hi's: the end of a DST gap."""
    target = hi.astimezone(tz).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid
    return dt.datetime.fromtimestamp(hi_s, UTC)


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A half-open `[start, end)` span of local clock time, wrapping midnight when start > end.

    `start == end` is an empty window: "no quiet hours", never "quiet all day".
    """

    start: int
    end: int

    @classmethod
    def parse(cls, start: str, end: str) -> DailyWindow:
        return cls(parse_clock(start), parse_clock(end))

    @property
    def empty(self) -> bool:
        return self.start == self.end

    def contains_minute(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        if self.start > self.end:
            return minute >= self.start or minute < self.end
        return False

    def end_after(self, at: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        """When the window containing `at` ends, or None when `at` is outside it."""
        local = at.astimezone(tz)
        minute = minute_of_day(local)
        if not self.contains_minute(minute):
            return None
        day = local.date()
        if self.start > self.end and minute >= self.start:
            day += dt.timedelta(days=1)
        return local_instant(day, self.end, tz, after=at)

    def describe(self) -> str:
        return f"{format_clock(self.start)}-{format_clock(self.end)}"


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """Local clock spans on chosen weekdays (Mon=0), e.g. marketing Mon-Fri 09:00-18:00.

    A span that wraps midnight belongs to the day it starts on. `start == end` means the
    whole of each listed day.
    """

    days: frozenset[int]
    start: int
    end: int

    def contains(self, at: dt.datetime, tz: ZoneInfo) -> bool:
        local = at.astimezone(tz)
        minute, weekday = minute_of_day(local), local.weekday()
        if self.start == self.end:
            return weekday in self.days
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )

    def next_open(self, at: dt.datetime, tz: ZoneInfo) -> dt.datetime:
        """`at` itself when inside the window, else the next instant the window opens."""
        if self.contains(at, tz):
            return at
        local_day = at.astimezone(tz).date()
        for offset in range(8):
            day = local_day + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = local_instant(day, 0 if self.start == self.end else self.start, tz, after=at)
            if opens > at:
                return opens
        raise ValueError("a weekly window with no days never opens")  # guarded by the schema

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.days))
        if self.start == self.end:
            return f"{days} all day"
        return f"{days} {format_clock(self.start)}-{format_clock(self.end)}"
