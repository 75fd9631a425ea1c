"""Wall-clock arithmetic across daylight-saving changes: where deliveries vanish or double."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.timeutil import (
    DailyWindow,
    WeeklyWindow,
    format_duration,
    local_instant,
    parse_clock,
    parse_duration,
)

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # shifts by 30 minutes


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), ("0s", 0), ("250ms", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "10 minutes", "1.5h", "h", "-5m", "5M"])
def test_parse_duration_rejects_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '30s', '10m'"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("30s", "10m", "1h30m", "7d", "1d2h3m4s"):
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:60", "0700", "ab:cd"])
def test_parse_clock_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_clock(text)


def test_quiet_window_is_half_open_and_wraps_midnight() -> None:
    window = DailyWindow.parse("22:00", "08:00")
    assert window.contains_minute(parse_clock("22:00"))
    assert window.contains_minute(parse_clock("23:59"))
    assert window.contains_minute(parse_clock("00:00"))
    assert window.contains_minute(parse_clock("07:59"))
    assert not window.contains_minute(parse_clock("08:00"))
    assert not window.contains_minute(parse_clock("21:59"))


def test_equal_start_and_end_is_no_window_not_a_whole_day() -> None:
    window = DailyWindow.parse("09:00", "09:00")
    assert window.empty
    assert not any(window.contains_minute(m) for m in range(1440))
    assert window.end_after(utc("2026-06-01T09:00:00Z"), NY) is None


def test_end_after_inside_an_overnight_window_is_the_next_morning() -> None:
    window = DailyWindow.parse("22:00", "08:00")
    # 23:30 EST on 21 Nov -> 08:00 EST on 22 Nov
    assert window.end_after(utc("2026-11-22T04:30:00Z"), NY) == utc("2026-11-22T13:00:00Z")
    # 03:00 EST -> 08:00 the same day
    assert window.end_after(utc("2026-11-22T08:00:00Z"), NY) == utc("2026-11-22T13:00:00Z")
    assert window.end_after(utc("2026-11-22T18:00:00Z"), NY) is None


def test_a_nonexistent_local_time_resolves_to_the_first_instant_after_the_gap() -> None:
    # 8 March 2026: New York clocks jump from 02:00 EST to 03:00 EDT (07:00Z).
    assert local_instant(dt.date(2026, 3, 8), parse_clock("02:30"), NY) == utc("2026-03-08T07:00:00Z")
    assert local_instant(dt.date(2026, 3, 8), parse_clock("03:00"), NY) == utc("2026-03-08T07:00:00Z")
    assert local_instant(dt.date(2026, 3, 8), parse_clock("01:59"), NY) == utc("2026-03-08T06:59:00Z")


def test_a_half_hour_gap_resolves_too() -> None:
    # Lord Howe Island moves from +10:30 to +11:00 at 02:00 local on 4 October 2026.
    gap = local_instant(dt.date(2026, 10, 4), parse_clock("02:15"), LORD_HOWE)
    assert gap == utc("2026-10-03T15:30:00Z")
    assert gap.astimezone(LORD_HOWE).strftime("%H:%M") == "02:30"


def test_an_ambiguous_local_time_takes_the_first_occurrence_after_the_reference() -> None:
    # 1 November 2026: New York's 01:00-02:00 happens twice (EDT 05:xxZ, then EST 06:xxZ).
    day, minutes = dt.date(2026, 11, 1), parse_clock("01:30")
    assert local_instant(day, minutes, NY) == utc("2026-11-01T05:30:00Z")
    assert local_instant(day, minutes, NY, after=utc("2026-11-01T05:40:00Z")) == utc("2026-11-01T06:30:00Z")


def test_weekly_window_opens_on_the_next_listed_day() -> None:
    office = WeeklyWindow(days=frozenset(range(5)), start=parse_clock("09:00"), end=parse_clock("18:00"))
    saturday_noon = utc("2026-11-21T17:00:00Z")  # 12:00 EST
    assert not office.contains(saturday_noon, NY)
    assert office.next_open(saturday_noon, NY) == utc("2026-11-23T14:00:00Z")  # Monday 09:00 EST
    monday_ten = utc("2026-11-23T15:00:00Z")
    assert office.next_open(monday_ten, NY) == monday_ten


def test_weekly_window_wrapping_midnight_belongs_to_its_start_day() -> None:
    friday_nights = WeeklyWindow(days=frozenset({4}), start=parse_clock("22:00"), end=parse_clock("02:00"))
    assert friday_nights.contains(utc("2026-11-21T06:30:00Z"), NY)  # Saturday 01:30 EST
    assert not friday_nights.contains(utc("2026-11-22T06:30:00Z"), NY)  # Sunday 01:30 EST


instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2028, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from(
    [
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "America/St_Johns",
        "Pacific/Chatham",
        "Asia/Kathmandu",
        "UTC",
        "Australia/Adelaide",
    ]
)
clocks = st.integers(min_value=0, max_value=1439)


@given(at=instants, zone_name=zones, start=clocks, end=clocks)
def test_a_window_end_is_outside_the_window_and_nothing_in_between_is(
    at: dt.datetime, zone_name: str, start: int, end: int
) -> None:
    zone, window = ZoneInfo(zone_name), DailyWindow(start, end)
    ends = window.end_after(at, zone)
    local_minute = at.astimezone(zone).hour * 60 + at.astimezone(zone).minute
    if not window.contains_minute(local_minute):
        assert ends is None
        return
    assert ends is not None and ends > at
    end_local = ends.astimezone(zone)
    assert not window.contains_minute(end_local.hour * 60 + end_local.minute)
    # Every minute strictly between `at` and the end is still quiet: the end is the first exit.
    probe = at.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while probe < ends:
        local = probe.astimezone(zone)
        assert window.contains_minute(local.hour * 60 + local.minute), probe
        probe += dt.timedelta(minutes=1)


@given(
    at=instants, zone_name=zones, start=clocks, end=clocks, days=st.frozensets(st.integers(0, 6), min_size=1)
)
def test_weekly_next_open_is_open_and_nothing_earlier_is(
    at: dt.datetime, zone_name: str, start: int, end: int, days: frozenset[int]
) -> None:
    zone, window = ZoneInfo(zone_name), WeeklyWindow(days=days, start=start, end=end)
    opens = window.next_open(at, zone)
    assert opens >= at
    assert window.contains(opens, zone)
    assert opens - at <= dt.timedelta(days=8)
    probe = at.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while probe < opens:
        assert not window.contains(probe, zone), probe
        probe += dt.timedelta(minutes=7)
