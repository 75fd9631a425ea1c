"""Crash safety with real processes: nothing accepted is lost, nothing is delivered twice.

Workers are real `notigate worker` processes. They are killed (exit 137, no cleanup) at
each point of the delivery path through failpoints; Redis is stopped mid-intake and comes
back empty; a second worker races the first. Every test then checks, address by address,
that each accepted intent was delivered exactly once (the dev provider writes each delivery
once per address, as an .eml file or a JSON line, and would refuse to write a second), and
nothing is left pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.conftest import make_settings, open_services
from tests.faults.checks import INBOX, accept_many, all_final, assert_exactly_once, open_deliveries
from tests.faults.procs import env_of, logs, stop, worker
from tests.harness import (
    ADA,
    DELIVERIES,
    JOBS,
    NOTIFICATIONS,
    accept,
    admin_key,
    client,
    count,
    eventually,
    like,
    store_user,
)
from tests.providers.outbox import per_delivery


@pytest.mark.parametrize("point", ["delivery.claimed", "delivery.sent", "delivery.recorded", "job.finished"])
async def test_a_worker_killed_at_any_point_yields_exactly_one_delivery(
    services: Services, tmp_path: Path, point: str
) -> None:
    outbox = tmp_path / "outbox"
    ids = await accept_many(services, 12)
    doomed = worker(env_of(services, outbox), failpoints=f"{point}=exit")
    try:
        try:
            # Waited for off the event loop: this process's own background writes (the
            # dispatcher marking jobs pushed) must be able to commit meanwhile, or on SQLite
            # they hold the write lock the worker needs to reach its failpoint.
            code = await asyncio.to_thread(doomed.wait, 60)
        except subprocess.TimeoutExpired:
            code = None
        # It died at the failpoint, as kill -9 would leave it.
        assert code == 137, logs(outbox.parent)
    finally:
        stop(doomed)
    survivor = worker(env_of(services, outbox))
    try:
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    await assert_exactly_once(services, outbox, ids)


@pytest.mark.parametrize("point", ["delivery.claimed", "delivery.sent"])
async def test_a_worker_killed_while_flushing_a_batch_sends_it_once_with_every_item(
    services: Services, tmp_path: Path, point: str
) -> None:
    """R11 under a crash: the group taken by the dead worker's claim is sent once, whole."""
    outbox = tmp_path / "outbox"
    await store_user(services, ADA)
    closed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=330)  # their window closed 30 s ago
    ids = await accept(services, [like(n) for n in range(7)], closed)
    doomed = worker(env_of(services, outbox), failpoints=f"{point}=exit")
    try:
        assert await asyncio.to_thread(doomed.wait, 60) == 137, logs(outbox.parent)  # off the loop, as above
    finally:
        stop(doomed)
    survivor = worker(env_of(services, outbox))
    try:
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.id, DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.grouped_into
                ).where(DELIVERIES.c.notification_id.in_(ids))
            )
        )
        titles = [r.title for r in await connection.execute(sa.select(INBOX.c.title))]
    assert len(rows) == 14 and {r.status for r in rows} == {"delivered"}  # 7 push + 7 in-app, none lost
    leaders = {
        channel: {r.grouped_into for r in rows if r.channel == channel} for channel in ("push", "in_app")
    }
    assert all(len(found) == 1 for found in leaders.values()), leaders  # one message per channel
    assert per_delivery(outbox) == {next(iter(leaders["push"])): 2}  # once to each device, never twice
    assert titles == ["7 people liked your post"]


async def test_two_workers_racing_deliver_each_message_once(services: Services, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    ids = await accept_many(services, 150, users=10)
    # A relay that pushed every job twice: the same deliveries sit in two jobs each.
    async with services.database.begin() as connection:
        rows = list(await connection.execute(sa.select(JOBS)))
        await connection.execute(
            sa.insert(JOBS), [{**row._asdict(), "id": row.id + "x", "enqueued_at": None} for row in rows]
        )
    first, second = worker(env_of(services, outbox)), worker(env_of(services, outbox))
    try:
        try:
            await eventually(lambda: all_final(services), within=90, every=0.2)
        except AssertionError:
            raise AssertionError(f"{await open_deliveries(services)}\n{logs(outbox.parent)}") from None
    finally:
        stop(first)
        stop(second)
    addresses = await assert_exactly_once(services, outbox, ids)
    async with services.database.connect() as connection:
        attempts = await connection.scalar(
            sa.text("SELECT count(*) FROM attempts WHERE outcome = 'delivered'")
        )
    assert attempts == sum(addresses.values())  # one successful send per address, whoever won the claim


async def test_redis_stopped_and_restarted_during_intake_loses_nothing(
    on_own_redis: Services, own_redis: RedisServer, tmp_path: Path
) -> None:
    services, outbox = on_own_redis, tmp_path / "outbox"
    survivor = None
    try:
        before = await accept_many(services, 10)
        own_redis.kill()  # gone, and it keeps nothing on disk
        during = await accept_many(services, 10)
        assert await count(services, NOTIFICATIONS, NOTIFICATIONS.c.status == "undecided") == 10
        own_redis.start()  # back, empty: no history, no queues, no jobs
        survivor = worker(env_of(services, outbox))
        await eventually(lambda: all_final(services), within=60, every=0.2)
        await assert_exactly_once(services, outbox, before + during)
    finally:
        if survivor is not None:
            stop(survivor)


async def test_with_the_database_unreachable_intake_answers_503_and_keeps_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from gateway.redis_server import free_port

    services = await open_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", redis_server.url, tmp_path)
    )
    token = await admin_key(services)
    await services.close()
    down = make_settings(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere",
        redis_server.url,
        tmp_path,
        redis_prefix=services.settings.redis_prefix,
    )
    broken = Services(down, policy=services.policy)
    await broken.start()
    try:
        # Keys are looked up in the database too: a valid token is refused with 503, not 401.
        async with client(broken, token) as http:
            response = await http.post(
                "/v1/intents",
                json={
                    "event": "order.shipped",
                    "user_id": "u_1",
                    "data": {"order_id": "A", "carrier": "UPS"},
                },
            )
            dry = await http.post(
                "/v1/dry-run",
                json={
                    "intent": {"event": "order.shipped", "user_id": "u_1"},
                    "user": {"user_id": "u_1"},
                    "history": [],
                },
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert dry.status_code == 503
        history = await broken.redis.keys(f"{down.redis_prefix}:history:*")
        assert history == []  # nothing reserved, nothing to undo
    finally:
        await broken.close()


async def test_intents_held_while_redis_was_away_are_decided_once_by_racing_workers(
    database_url: str, own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' late decisions run at the same moment over the same undecided intents:
    each intent is decided by exactly one of them, and none becomes its own duplicate."""
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    settings = make_settings(database_url, own_redis.url, tmp_path)
    api = await open_services(settings)
    await api.start()
    workers = [Services(settings, policy=api.policy, clock=api.clock) for _ in range(2)]
    try:
        own_redis.kill()
        ids = await accept_many(api, 60, users=20)
        own_redis.start()  # back, empty
        for services in workers:
            await services.start()

        async def drain(services: Services) -> int:
            decided = 0
            while n := await services.intake.decide_pending(limit=7):
                decided += n
            return decided

        counts = await asyncio.gather(*(drain(s) for s in workers))
        assert sum(counts) == 60  # each intent decided once, whoever did it
        async with api.database.connect() as connection:
            rows = list(
                await connection.execute(
                    sa.select(
                        DELIVERIES.c.notification_id,
                        DELIVERIES.c.channel,
                        DELIVERIES.c.status,
                        DELIVERIES.c.reason,
                    ).where(DELIVERIES.c.notification_id.in_(ids))
                )
            )
        assert Counter(r.notification_id for r in rows) == {n: 4 for n in ids}  # one row per channel
        suppressed = Counter((r.channel, r.reason) for r in rows if r.status == "suppressed")
        assert suppressed == {("sms", "opted_out"): 60}  # nobody's duplicate, nobody capped
    finally:
        for services in workers:
            await services.close()
        await api.close()
