"""Cron expressions read in a user's own time zone: when a recurring schedule is due.

Pure functions over `cronsim` (maintained, Debian-cron compatible DST handling), so the
scheduler's "who is due" is property-testable. A schedule written `0 9 * * 1` means Monday
09:00 on each user's wall clock:

- a local time that does not exist that day (the spring-forward gap) fires at the first
  instant after the gap (02:30 in a 02:00-03:00 gap fires at 03:00), never not at all;
- a local time that exists twice (the fall-back overlap) fires once, at the first of the
  two, for an expression with a fixed minute and hour; `*/30 * * * *` fires at every
  real instant it names, both halves of the overlap included, as cron does.

An occurrence is identified by its local time *with its UTC offset*
(`2026-10-25T02:30:00+02:00`): that string is unique per real instant, so it makes a
deterministic idempotency key even inside an overlap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

UTC = dt.UTC
# A cron that matches nothing for years (`0 0 30 2 *`) must not spin the scheduler.
_HORIZON = dt.timedelta(days=366 * 5)
# How far back past the misfire grace a pass looks for occurrences to record as missed.
LOOKBACK = dt.timedelta(days=7)


class CronError(ValueError):
    """A cron expression the scheduler cannot evaluate; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One firing of a schedule in one zone."""

    at: dt.datetime  # aware UTC
    local: dt.datetime  # aware, in the zone

    @property
    def key(self) -> str:
        """The local time with its offset: unique per instant, stable across processes."""
        return self.local.isoformat()


def parse_cron(expr: str) -> str:
    """The expression, normalised, or CronError naming the problem (five fields only)."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(
            f"cron {expr!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}; write five: "
            "minute hour day-of-month month day-of-week, e.g. '0 9 * * 1' (Monday 09:00)"
        )
    normalised = " ".join(fields)
    try:
        CronSim(normalised, dt.datetime(2026, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError) as exc:
        raise CronError(f"cron {expr!r} is not valid: {exc}") from None
    return normalised


def occurrences(expr: str, tz: ZoneInfo, after: dt.datetime) -> Iterator[Occurrence]:
    """Occurrences strictly after `after` (aware), in order, for as long as the caller takes them."""
    start = after.astimezone(tz)
    # cronsim works to the second and starts one second later: from a fractional `after`,
    # start at its whole second so an occurrence at `after`'s next second is not skipped.
    for local in CronSim(expr, start.replace(microsecond=0)):
        at = local.astimezone(UTC)
        if at <= after:
            continue
        if at - after > _HORIZON:
            return
        yield Occurrence(at=at, local=at.astimezone(tz))


def next_occurrence(expr: str, tz: ZoneInfo, after: dt.datetime) -> Occurrence | None:
    """The first occurrence strictly after `after`, or None within five years."""
    return next(occurrences(expr, tz, after), None)


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """What one scheduler pass does for one schedule in one zone."""

    due: tuple[Occurrence, ...]  # to fire, oldest first (at most one in practice)
    missed: tuple[Occurrence, ...]  # too late to fire (older than the misfire grace), recorded
    skipped: int  # further missed occurrences not recorded one by one (a long outage)


def plan_zone(
    expr: str,
    tz: ZoneInfo,
    *,
    cursor: dt.datetime,
    now: dt.datetime,
    misfire: dt.timedelta,
    keep_missed: int = 10,
) -> ZonePlan:
    """Occurrences in `(cursor, now]`: those within `misfire` of now are due, older ones missed.

    `cursor` is the last occurrence already handled in this zone (fired, missed or paused).
    Only the newest `keep_missed` misses are returned for recording; the rest are counted,
    so a worker back after a month of an hourly schedule records ten rows, not 720.
    """
    due: list[Occurrence] = []
    missed: list[Occurrence] = []
    skipped = 0
    # Bound the walk: after a long outage only the last `LOOKBACK` is looked at (and counted).
    for occurrence in occurrences(expr, tz, max(cursor, now - misfire - LOOKBACK)):
        if occurrence.at > now:
            break
        if now - occurrence.at > misfire:
            missed.append(occurrence)
            if len(missed) > keep_missed:
                missed.pop(0)
                skipped += 1
        else:
            due.append(occurrence)
    return ZonePlan(due=tuple(due), missed=tuple(missed), skipped=skipped)
