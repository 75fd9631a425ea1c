"""Bulk fan-out under faults: a worker killed mid-expansion, Redis lost mid-expansion. Every
recipient of an accepted bulk request ends with one notification, delivered once."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.faults.checks import all_final, assert_exactly_once
from tests.faults.procs import env_of, logs, stop, worker
from tests.harness import ADA, NOTIFICATIONS, admin_key, bulk_fanout, client, eventually, store_user

SHIPPED = {"event": "order.shipped", "data": {"order_id": "A-1", "carrier": "UPS"}}


async def post_bulk(services: Services, users: list[str]) -> str:
    for user in users:
        await store_user(services, {**ADA, "user_id": user})
    async with client(services, await admin_key(services)) as http:
        response = await http.post("/v1/intents/bulk", json={**SHIPPED, "user_ids": users})
    assert response.status_code == 202, response.text
    return str(response.json()["bulk_id"])


async def notifications_of(services: Services, bulk_id: str) -> list[tuple[str, str, str]]:
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(NOTIFICATIONS.c.user_id, NOTIFICATIONS.c.id, NOTIFICATIONS.c.status).where(
                NOTIFICATIONS.c.bulk_id == bulk_id
            )
        )
        return sorted((r.user_id, r.id, r.status) for r in rows)


async def test_a_worker_killed_mid_expansion_leaves_every_recipient_to_the_next_one(
    services: Services, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    users = [f"u_{i:02d}" for i in range(40)]
    bulk_id = await post_bulk(services, users)
    doomed = worker(env_of(services, outbox), failpoints="bulk.chunk_stored=exit")
    try:
        try:  # off the event loop: this process's own writes must commit meanwhile (SQLite)
            code = await asyncio.to_thread(doomed.wait, 120)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 137, logs(outbox.parent)  # it stored the chunk and died before the cursor moved
    finally:
        stop(doomed)
    stored_by_the_dead = await notifications_of(services, bulk_id)
    assert [user for user, _, _ in stored_by_the_dead] == users
    survivor = worker(env_of(services, outbox))  # claims the request once the lease ends
    try:
        await eventually(lambda: _expanded(services, bulk_id), within=90, every=0.2)
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    assert await notifications_of(services, bulk_id) == stored_by_the_dead  # replays, no second copy
    await assert_exactly_once(services, outbox, [n for _, n, _ in stored_by_the_dead])


async def test_a_bulk_request_expanded_while_redis_is_away_is_decided_once_it_is_back(
    on_own_redis: Services, own_redis: RedisServer
) -> None:
    services = on_own_redis
    users = [f"u_{i:02d}" for i in range(12)]
    bulk_id = await post_bulk(services, users)
    own_redis.kill()
    fanout = bulk_fanout(services, "w1", expand_backlog=1_000)
    stop_ = asyncio.Event()
    running = asyncio.create_task(fanout.run(stop_))
    await asyncio.sleep(1.5)  # it cannot read the queues' backlog: it waits, nothing half-done
    assert await notifications_of(services, bulk_id) == []
    own_redis.start()  # empty
    await eventually(lambda: _expanded(services, bulk_id), within=30)
    stop_.set()
    await running
    stored = await notifications_of(services, bulk_id)
    assert [user for user, _, _ in stored] == users and {s for _, _, s in stored} == {"decided"}


async def _expanded(services: Services, bulk_id: str) -> bool:
    progress = await services.bulk.progress(bulk_id)
    return progress is not None and progress.state == "expanded"
