"""Corpora of `decide()` inputs for comparing two bundles (`notigate diff`).

Two come from the bundle itself: its policy test cases, and a seeded workload generated over
what the bundle names (events with their templates' example data, priorities, user zones,
preferences on its channels, clocks spread over a week, short histories). A third is real
traffic, read from a store by the command line. The same seed and bundle give the same corpus.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.model import (
    PRIORITIES,
    Contacts,
    Device,
    HistoryEntry,
    Intent,
    Preference,
    Priority,
    QuietHours,
    UserState,
)
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import LoadedBundle
from gateway.policy.suites import load_cases

Source = Literal["tests", "generated", "store"]
WEEK_START = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)  # a Monday: clocks cover Mon..Sun
ZONES = ("America/Los_Angeles", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Asia/Tokyo", "UTC")
QUIET_HOURS = (("22:00", "08:00"), ("23:00", "07:00"), ("00:00", "00:00"))
PRIORITY_WEIGHTS = (1, 6, 2)  # urgent, normal, low: most traffic is normal


@dataclass(frozen=True, slots=True)
class Sample:
    """One intent to decide under both bundles, with the user, clock and history it meets."""

    source: Source
    intent: Intent
    user: UserState
    now: dt.datetime
    history: tuple[HistoryEntry, ...] = ()


def from_tests(bundle: LoadedBundle) -> list[Sample]:
    """The policy test cases of a bundle (those that load; broken ones are `check`'s business)."""
    samples = []
    for doc in bundle.suites:
        cases, _ = load_cases(doc)
        samples += [Sample("tests", c.intent, c.user, c.now, tuple(c.history)) for c in cases]
    return samples


def from_traffic(
    intents: Sequence[tuple[Intent, dt.datetime]], users: Mapping[str, UserState]
) -> list[Sample]:
    """Stored intents, decided again at the time each was accepted, for the user as stored.

    Intents of users deleted since are left out. The history each met is not replayed (it
    lived in Redis): caps and dedup see none.
    """
    return [
        Sample("store", intent, users[intent.user_id], at)
        for intent, at in intents
        if intent.user_id in users
    ]


def events_of(policy: CompiledPolicy, seeds: Iterable[Sample] = ()) -> dict[str, dict[str, Any]]:
    """Concrete event names the bundle routes, each with data to send: its template example's,
    else a test case's; wildcard patterns contribute the events the examples and tests name."""
    events: dict[str, dict[str, Any]] = {}
    for sample in seeds:
        events.setdefault(sample.intent.event, dict(sample.intent.data))
    for name, example in policy.messages.examples.items():
        events[name] = dict(example.data)
    for rule in policy.rules:
        for pattern in rule.patterns:
            if "*" not in pattern:
                events.setdefault(pattern, {})
    return {e: d for e, d in sorted(events.items()) if policy.candidates(e)}


def generated(
    policy: CompiledPolicy, count: int, seed: int = 1, seeds: Sequence[Sample] = ()
) -> list[Sample]:
    """`count` samples over the bundle's events, priorities, channels, zones and a week of clocks."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    events = events_of(policy, seeds)
    if not events:
        return []
    names = sorted(events)
    channels = sorted(policy.channels)
    zones = sorted({policy.defaults.timezone, *ZONES, *(s.user.timezone for s in seeds if s.user.timezone)})
    users = [_user(rng, i, names, channels, zones) for i in range(max(20, count // 10))]
    samples = []
    for n in range(count):
        event = rng.choice(names)
        user = rng.choice(users)
        now = WEEK_START + dt.timedelta(seconds=rng.randrange(7 * 24 * 3600))
        priority = _priority(rng, policy, event)
        intent = Intent(event=event, user_id=user.user_id, priority=priority, data={**events[event], "n": n})
        history = tuple(_history(rng, names, channels, now))
        samples.append(Sample("generated", intent, user, now, history))
    return samples


def _priority(rng: random.Random, policy: CompiledPolicy, event: str) -> Priority:
    """A priority some rule for `event` routes, weighted like real traffic (mostly normal)."""
    routed = {p for rule in policy.candidates(event) for p in (rule.priorities or PRIORITIES)}
    choices: list[Priority] = [p for p in PRIORITIES if p in routed] or list(PRIORITIES)
    weights = [w for p, w in zip(PRIORITIES, PRIORITY_WEIGHTS, strict=True) if p in choices]
    return rng.choices(choices, weights=weights)[0]


def _user(
    rng: random.Random, index: int, events: Sequence[str], channels: Sequence[str], zones: Sequence[str]
) -> UserState:
    start, end = rng.choice(QUIET_HOURS)
    preferences = [
        Preference(
            event=rng.choice([*events, f"{rng.choice(events).split('.')[0]}.*", "*"]),
            channel=rng.choice([*channels, "*"]),
            enabled=rng.random() < 0.5,
        )
        for _ in range(rng.choices((0, 1, 2), weights=(5, 3, 2))[0])
    ]
    devices = [Device(platform="ios", token=f"token-{index}-{n}") for n in range(rng.choice((0, 1, 2)))]
    return UserState(
        user_id=f"u_{index:05d}",
        timezone=rng.choice(zones),
        contacts=Contacts(
            email=f"user{index}@example.com" if rng.random() < 0.9 else None,
            phone=f"+1415555{index:04d}" if rng.random() < 0.5 else None,
            devices=devices,
        ),
        preferences=preferences,
        quiet_hours=QuietHours(start=start, end=end) if rng.random() < 0.5 else None,
    )


def _history(
    rng: random.Random, events: Sequence[str], channels: Sequence[str], now: dt.datetime
) -> list[HistoryEntry]:
    """A few recent deliveries, so caps and batching have something to count."""
    count = rng.choices((0, 2, 6, 12), weights=(5, 3, 2, 1))[0]
    rows = [
        HistoryEntry(
            event=rng.choice(events),
            channel=rng.choice(channels),
            at=now - dt.timedelta(seconds=rng.randrange(30, 24 * 3600)),
        )
        for _ in range(count)
    ]
    return sorted(rows, key=lambda h: h.at)
