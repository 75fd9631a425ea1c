"""Cron occurrences per zone (gateway/cron.py): DST gaps and overlaps, the misfire plan."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cron import LOOKBACK, CronError, next_occurrence, occurrences, parse_cron, plan_zone

UTC = dt.UTC
PARIS = ZoneInfo("Europe/Paris")
LA = ZoneInfo("America/Los_Angeles")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_monday_nine_local_is_a_different_instant_per_zone() -> None:
    after = utc(2026, 11, 21, 12)  # a Saturday
    paris = next_occurrence("0 9 * * 1", PARIS, after)
    la = next_occurrence("0 9 * * 1", LA, after)
    assert paris is not None and la is not None
    assert paris.at == utc(2026, 11, 23, 8)
    assert la.at == utc(2026, 11, 23, 17)
    assert paris.key == "2026-11-23T09:00:00+01:00"
    assert la.key == "2026-11-23T09:00:00-08:00"


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [
        # Paris springs forward 02:00 -> 03:00 on 2026-03-29: 02:30 fires at 03:00 (01:00 UTC).
        (PARIS, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
        # Los Angeles springs forward 02:00 -> 03:00 on 2026-03-08: 02:30 fires at 03:00 PDT.
        (LA, utc(2026, 3, 7, 20), utc(2026, 3, 8, 10)),
    ],
)
def test_a_local_time_in_the_spring_gap_fires_at_the_first_instant_after_it(
    tz: ZoneInfo, after: dt.datetime, expected: dt.datetime
) -> None:
    found = next_occurrence("30 2 * * *", tz, after)
    assert found is not None
    assert found.at == expected
    assert (found.local.hour, found.local.minute) == (3, 0)


@pytest.mark.parametrize(
    ("tz", "day", "first"),
    [
        (PARIS, dt.date(2026, 10, 25), utc(2026, 10, 25, 0, 30)),  # 02:30 CEST, then again at CET
        (LA, dt.date(2026, 11, 1), utc(2026, 11, 1, 8, 30)),  # 01:30 PDT, then again at PST
    ],
)
def test_an_ambiguous_local_time_fires_once(tz: ZoneInfo, day: dt.date, first: dt.datetime) -> None:
    hour = 2 if tz is PARIS else 1
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz) - dt.timedelta(hours=12)
    found = [o for o in _take(occurrences(f"30 {hour} * * *", tz, start), 3) if o.local.date() == day]
    assert [o.at for o in found] == [first]


def test_a_wildcard_hour_fires_at_both_halves_of_the_overlap_with_distinct_keys() -> None:
    found = _take(occurrences("30 * * * *", PARIS, utc(2026, 10, 24, 23, 45)), 3)
    assert [o.at for o in found] == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 30),
    ]
    assert len({o.key for o in found}) == 3  # 02:30+02:00 and 02:30+01:00


@pytest.mark.parametrize("expr", ["0 9 * * 1 *", "0 9 * *", "61 * * * *", "0 25 * * *", "0 0 30 2 *", "x"])
def test_invalid_expressions_are_refused_with_the_expression_named(expr: str) -> None:
    with pytest.raises(CronError, match="cron"):
        parse_cron(expr)


def test_plan_fires_within_the_grace_and_records_older_occurrences_missed() -> None:
    now = utc(2026, 11, 23, 8, 30)  # Monday 09:30 Paris
    plan = plan_zone("0 9 * * 1", PARIS, cursor=utc(2026, 11, 9), now=now, misfire=dt.timedelta(hours=1))
    assert [o.at for o in plan.due] == [utc(2026, 11, 23, 8)]
    assert [o.at for o in plan.missed] == [utc(2026, 11, 16, 8)]
    late = plan_zone("0 9 * * 1", PARIS, cursor=utc(2026, 11, 20), now=now, misfire=dt.timedelta(minutes=10))
    assert late.due == () and [o.at for o in late.missed] == [utc(2026, 11, 23, 8)]


def test_a_long_outage_records_a_bounded_number_of_misses() -> None:
    plan = plan_zone(
        "*/5 * * * *", LA, cursor=utc(2026, 1, 1), now=utc(2026, 3, 1), misfire=dt.timedelta(minutes=1)
    )
    assert len(plan.missed) == 10
    assert plan.skipped > 0
    assert len(plan.due) == 1  # 00:00 UTC itself


ZONES = st.sampled_from(["Europe/Paris", "America/Los_Angeles", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"])
CRONS = st.sampled_from(["0 9 * * 1", "30 2 * * *", "*/30 * * * *", "15 1 1 * *", "0 0 * * 0"])
INSTANTS = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31), timezones=st.just(UTC)
)


@given(expr=CRONS, tz=ZONES, after=INSTANTS)
def test_occurrences_are_strictly_increasing_and_match_their_local_time(
    expr: str, tz: str, after: dt.datetime
) -> None:
    found = _take(occurrences(expr, ZoneInfo(tz), after), 6)
    assert found
    assert found[0].at > after
    assert all(a.at < b.at for a, b in itertools.pairwise(found))
    assert len({o.key for o in found}) == len(found)
    for o in found:
        assert o.local.astimezone(UTC) == o.at


# Each example walks up to a week of occurrences (every 30 minutes for one cron): fewer
# examples than the default keep it near a second while still reaching past the lookback.
@settings(max_examples=30)
@given(expr=CRONS, tz=ZONES, cursor=INSTANTS, span=st.integers(min_value=0, max_value=9 * 24 * 60))
def test_every_occurrence_up_to_now_is_either_due_missed_or_counted(
    expr: str, tz: str, cursor: dt.datetime, span: int
) -> None:
    now = cursor + dt.timedelta(minutes=span)
    misfire = dt.timedelta(hours=1)
    plan = plan_zone(expr, ZoneInfo(tz), cursor=cursor, now=now, misfire=misfire)
    start = max(cursor, now - misfire - LOOKBACK)  # the walk is bounded after a long outage
    every = [o for o in _take(occurrences(expr, ZoneInfo(tz), start), 5000) if o.at <= now]
    assert len(plan.due) + len(plan.missed) + plan.skipped == len(every)
    assert all(now - o.at <= misfire for o in plan.due)
    assert all(now - o.at > misfire for o in plan.missed)
    assert list(plan.due) == [o for o in every if now - o.at <= misfire]


def _take(iterator: object, n: int) -> list:  # type: ignore[type-arg]
    out = []
    for item in iterator:  # type: ignore[attr-defined]
        out.append(item)
        if len(out) == n:
            break
    return out
