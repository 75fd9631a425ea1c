"""The helper functions CEL conditions may call, beyond standard CEL.

Each is written once, over plain Python values, and declared with CEL types; the runtime
adapters in `gateway.policy.cel` wrap them for cel-python and cel-expr-python. Keep the
set small and documented (docs/policies.md): every helper is a promise to policy authors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.model import check_zone, zone
from gateway.timeutil import DailyWindow, format_clock, minute_of_day


class HelperError(ValueError):
    """A helper was called with a value it cannot use; becomes a CEL evaluation error."""


@dataclass(frozen=True, slots=True)
class Helper:
    name: str
    params: tuple[str, ...]  # CEL type names: timestamp, string, int, bool, list
    returns: str
    impl: Callable[..., Any]
    signature: str
    doc: str


def _tz(name: Any) -> Any:
    if not isinstance(name, str):
        raise HelperError(f"time zone must be a string, got {type(name).__name__}")
    try:
        check_zone(name)
    except ValueError as exc:
        raise HelperError(str(exc)) from exc
    return zone(name)


def _aware(ts: Any) -> dt.datetime:
    if not isinstance(ts, dt.datetime) or ts.tzinfo is None:
        raise HelperError("expected a timestamp")
    return ts


def local_time(ts: Any, tz: Any) -> str:
    return format_clock(minute_of_day(_aware(ts).astimezone(_tz(tz))))


def local_weekday(ts: Any, tz: Any) -> int:
    return _aware(ts).astimezone(_tz(tz)).isoweekday()


def in_window(ts: Any, tz: Any, start: Any, end: Any) -> bool:
    try:
        window = DailyWindow.parse(str(start), str(end))
    except ValueError as exc:
        raise HelperError(str(exc)) from exc
    return window.contains_minute(minute_of_day(_aware(ts).astimezone(_tz(tz))))


def event_matches(event: Any, pattern: Any) -> bool:
    if not isinstance(event, str) or not isinstance(pattern, str):
        raise HelperError("event_matches takes two strings")
    return glob_event(pattern, event)


def count_sent(history: Any, pattern: Any, channel: Any, since: Any) -> int:
    if not isinstance(history, Sequence) or isinstance(history, str):
        raise HelperError("count_sent expects the history list")
    if not isinstance(pattern, str) or not isinstance(channel, str):
        raise HelperError("count_sent takes an event pattern and a channel (or '*')")
    since = _aware(since)
    count = 0
    for entry in history:
        if not isinstance(entry, Mapping):
            raise HelperError("history entries must be maps")
        if entry.get("batched"):
            continue
        at = entry.get("at")
        if not isinstance(at, dt.datetime) or at <= since:
            continue
        if channel != "*" and entry.get("channel") != channel:
            continue
        if glob_event(pattern, str(entry.get("event", ""))):
            count += 1
    return count


def glob_event(pattern: str, event: str) -> bool:
    """Match `order.*`-style patterns: `*` alone matches all, `a.*` matches `a.b` and `a.b.c`."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event.startswith(pattern[:-1])
    return event == pattern


HELPERS: tuple[Helper, ...] = (
    Helper(
        "local_time",
        ("timestamp", "string"),
        "string",
        local_time,
        "local_time(timestamp, string) -> string",
        "The wall-clock time `HH:MM` of a timestamp in an IANA zone.",
    ),
    Helper(
        "local_weekday",
        ("timestamp", "string"),
        "int",
        local_weekday,
        "local_weekday(timestamp, string) -> int",
        "The ISO weekday (1 = Monday ... 7 = Sunday) of a timestamp in an IANA zone.",
    ),
    Helper(
        "in_window",
        ("timestamp", "string", "string", "string"),
        "bool",
        in_window,
        "in_window(timestamp, string, string, string) -> bool",
        "Whether a timestamp falls in the local `[start, end)` window; wraps midnight.",
    ),
    Helper(
        "event_matches",
        ("string", "string"),
        "bool",
        event_matches,
        "event_matches(string, string) -> bool",
        "Whether an event name matches a pattern (`order.*`, `*`, an exact name).",
    ),
    Helper(
        "count_sent",
        ("list", "string", "string", "timestamp"),
        "int",
        count_sent,
        "count_sent(list, string, string, timestamp) -> int",
        "How many history entries match an event pattern and channel (`*` = any) after a time.",
    ),
)
