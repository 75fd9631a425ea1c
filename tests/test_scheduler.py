"""The scheduler (gateway/scheduler.py) against a real store and Redis, with a pinned clock.

Monday 2026-11-23: 09:00 in Paris is 08:00 UTC, 09:00 in Los Angeles is 17:00 UTC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from gateway.cron import Occurrence
from gateway.model import UserState
from gateway.redis_server import RedisServer
from gateway.scheduler import Scheduler, idempotency_key, schedule_intent
from gateway.services import Services
from gateway.store.schedules import ScheduleStore
from gateway.store.tables import ScheduleRunRow
from tests.conftest import Clock, make_settings, open_services
from tests.harness import NOTIFICATIONS

UTC = dt.UTC
MONDAY_0905_PARIS = dt.datetime(2026, 11, 23, 8, 5, tzinfo=UTC)
RUNS = ScheduleRunRow.__table__  # type: ignore[attr-defined]
OPTED_OUT = [{"event": "marketing.*", "channel": "email", "enabled": False}]


def user(user_id: str, tz: str | None, email: bool = True, **extra: Any) -> UserState:
    contacts = {"email": f"{user_id}@example.com"} if email else {}
    return msgspec.convert({"user_id": user_id, "timezone": tz, "contacts": contacts, **extra}, UserState)


@pytest.fixture
async def pinned(
    database_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Services, Clock]]:
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    clock = Clock(MONDAY_0905_PARIS)
    opened = await open_services(make_settings(database_url, redis_server.url, tmp_path), clock)
    await opened.start()
    yield opened, clock
    await opened.close()


def scheduler(services: Services, owner: str, **options: Any) -> Scheduler:
    return Scheduler(
        policy=services.current_policy,
        store=ScheduleStore(services.database),
        recipients=services.recipients,
        intake=services.intake,
        clock=services.clock,
        owner=owner,
        **options,
    )


async def fired(services: Services) -> dict[str, list[str]]:
    """user id -> idempotency keys of the notifications the scheduler created."""
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(NOTIFICATIONS.c.user_id, NOTIFICATIONS.c.idempotency_key).where(
                NOTIFICATIONS.c.producer == "scheduler"
            )
        )
        found: dict[str, list[str]] = {}
        for r in rows:
            found.setdefault(r.user_id, []).append(r.idempotency_key)
        return found


async def runs(services: Services) -> list[tuple[str, str, str]]:
    async with services.database.connect() as connection:
        rows = await connection.execute(sa.select(RUNS).order_by(RUNS.c.occurrence, RUNS.c.timezone))
        return [(r.timezone, r.local, r.status) for r in rows]


async def put(services: Services, *users: UserState) -> None:
    await services.recipients.put_users(list(users), MONDAY_0905_PARIS)


def test_the_intent_is_deterministic(policy: Any) -> None:
    (digest,) = policy.schedules
    at = dt.datetime(2026, 11, 23, 8, tzinfo=UTC)
    from zoneinfo import ZoneInfo

    occurrence = Occurrence(at=at, local=at.astimezone(ZoneInfo("Europe/Paris")))
    intent = schedule_intent(digest, occurrence, "u_ada")
    assert intent == schedule_intent(digest, occurrence, "u_ada")
    assert intent.idempotency_key == "schedule:weekly-digest-monday:2026-11-23T09:00:00+01:00:u_ada"
    assert intent.idempotency_key == idempotency_key(digest.name, occurrence, "u_ada")
    assert intent.data["week"] == "2026-W48"
    assert intent.priority == "low"


async def test_two_concurrent_schedulers_fire_once_per_user_in_each_zone_at_its_time(
    pinned: tuple[Services, Clock],
) -> None:
    services, clock = pinned
    await put(
        services,
        user("u_ada", "Europe/Paris"),
        user("u_cy", "Europe/Paris", email=False),  # no email: outside the segment
        user("u_eve", "Europe/Paris", preferences=OPTED_OUT),  # marketing email off: outside
        user("u_bob", "America/Los_Angeles"),
        user("u_utc", None),  # the policy's default zone (UTC): 09:00 UTC is still to come
    )
    one, two = scheduler(services, "a", page=2), scheduler(services, "b", page=2)
    await asyncio.gather(one.run_once(), two.run_once())
    assert await fired(services) == {
        "u_ada": ["schedule:weekly-digest-monday:2026-11-23T09:00:00+01:00:u_ada"]
    }
    await asyncio.gather(one.run_once(), two.run_once())  # nothing new is due
    assert len(await fired(services)) == 1

    clock.now = dt.datetime(2026, 11, 23, 17, 1, tzinfo=UTC)  # 09:01 in Los Angeles
    await asyncio.gather(one.run_once(), two.run_once())
    keys = await fired(services)
    assert keys["u_bob"] == ["schedule:weekly-digest-monday:2026-11-23T09:00:00-08:00:u_bob"]
    assert set(keys) == {"u_ada", "u_bob"}  # UTC's 09:00 was 8 hours ago: past the 1h grace
    assert ("UTC", "2026-11-23T09:00:00+00:00", "missed") in await runs(services)
    assert ("Europe/Paris", "2026-11-23T09:00:00+01:00", "done") in await runs(services)


class Crash(Exception):
    pass


async def test_a_run_cut_short_is_resumed_by_another_scheduler_without_firing_twice(
    pinned: tuple[Services, Clock],
) -> None:
    services, clock = pinned
    await put(services, *(user(f"u_{i:02d}", "Europe/Paris") for i in range(5)))
    dying = scheduler(services, "dying", page=2)
    real_advance = dying.store.advance

    async def crash_after_commit(*args: Any, **kwargs: Any) -> bool:
        raise Crash  # the intents of the page are stored; the progress is not

    dying.store.advance = crash_after_commit  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await dying.run_once()
    assert set(await fired(services)) == {"u_00", "u_01"}
    dying.store.advance = real_advance  # type: ignore[method-assign]

    other = scheduler(services, "other", page=2)
    await other.run_once()  # the lease (120 s) still holds: the run is left alone
    assert set(await fired(services)) == {"u_00", "u_01"}

    clock.now = MONDAY_0905_PARIS + dt.timedelta(minutes=3)
    await other.run_once()
    keys = await fired(services)
    assert sorted(keys) == [f"u_{i:02d}" for i in range(5)]
    assert all(len(v) == 1 for v in keys.values())  # the replayed page made no second notification
    assert await runs(services) == [("Europe/Paris", "2026-11-23T09:00:00+01:00", "done")]


async def test_a_worker_back_within_the_grace_catches_up_and_one_back_later_records_a_miss(
    pinned: tuple[Services, Clock],
) -> None:
    services, clock = pinned
    await put(services, user("u_ada", "Europe/Paris"))
    clock.now = dt.datetime(2026, 11, 16, 7, 0, tzinfo=UTC)  # the Monday before, 08:00 Paris
    await scheduler(services, "w").run_once()  # first sight of the zone: nothing due yet
    clock.now = dt.datetime(2026, 11, 16, 8, 50, tzinfo=UTC)  # down at 09:00, back at 09:50
    await scheduler(services, "w").run_once()
    assert len((await fired(services))["u_ada"]) == 1
    clock.now = dt.datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # down at 09:00, back at 10:30
    await scheduler(services, "w").run_once()
    assert len((await fired(services))["u_ada"]) == 1
    assert [r[2] for r in await runs(services)] == ["done", "missed"]


async def test_a_paused_schedule_does_not_fire_and_resuming_does_not_fire_the_past(
    pinned: tuple[Services, Clock],
) -> None:
    services, clock = pinned
    await put(services, user("u_ada", "Europe/Paris"))
    store = ScheduleStore(services.database)
    await store.set_paused("weekly-digest-monday", True, "ops", MONDAY_0905_PARIS)
    await scheduler(services, "w").run_once()
    assert await fired(services) == {}
    assert await runs(services) == [("Europe/Paris", "2026-11-23T09:00:00+01:00", "paused")]
    await store.set_paused("weekly-digest-monday", False, "ops", MONDAY_0905_PARIS)
    clock.now = MONDAY_0905_PARIS + dt.timedelta(minutes=5)
    await scheduler(services, "w").run_once()
    assert await fired(services) == {}  # the 09:00 of the pause stays unfired
    clock.now = MONDAY_0905_PARIS + dt.timedelta(days=7)
    await scheduler(services, "w").run_once()
    assert list(await fired(services)) == ["u_ada"]


async def test_the_api_shows_each_zones_last_runs(pinned: tuple[Services, Clock]) -> None:
    from tests.harness import admin_key, client

    services, _ = pinned
    await put(services, user("u_ada", "Europe/Paris"), user("u_eve", "Europe/Paris", preferences=OPTED_OUT))
    await scheduler(services, "a").run_once()
    async with client(services, await admin_key(services)) as http:
        (digest,) = (await http.get("/v1/schedules")).json()["schedules"]
    paris = [r for r in digest["last_runs"] if r["timezone"] == "Europe/Paris"]
    assert [(r["local"], r["status"], r["users"], r["fired"], r["failed"]) for r in paris] == [
        ("2026-11-23T09:00:00+01:00", "done", 2, 1, 0)  # two users looked at, one in the segment
    ]
    assert set(paris[0]) >= {"occurrence", "started_at", "finished_at", "detail"}
    assert "after_user" not in paris[0] and "id" not in paris[0]  # the store's cursor stays inside
