"""Reservations that outlive their intent: a process dies between reserving a message's
history entry in Redis and storing the intent. Its entry must never suppress the intent
that is stored in its place (a retry, or another worker's decision of the same intent).

The processes are real and die at the failpoint `intake.reserved`, as `kill -9` would leave
them: after the reservation script ran, before the commit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.faults.checks import accept_many, all_final, assert_exactly_once, open_deliveries
from tests.faults.procs import Api, env_of, logs, stop, worker
from tests.harness import DELIVERIES, NOTIFICATIONS, admin_key, eventually, store_user

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-7", "carrier": "UPS"}}


async def suppressed_reasons(services: Services, ids: list[str]) -> dict[str, str]:
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(DELIVERIES.c.channel, DELIVERIES.c.reason).where(
                DELIVERIES.c.notification_id.in_(ids), DELIVERIES.c.status == "suppressed"
            )
        )
        return {r.channel: r.reason for r in rows}


async def owners_gone(services: Services) -> bool:
    """No provisional entry of u_ada's names a process that still beats."""
    pending = await services.redis.hvals(services.keys.provisional("u_ada"))  # type: ignore[misc]
    owners = {value.decode().rsplit("|", 1)[0] for value in pending}
    return not any([await services.redis.exists(services.keys.owner(o)) for o in owners])


@pytest.mark.parametrize("keyed", [True, False], ids=["same-key", "no-key"])
async def test_a_retry_after_the_api_died_mid_request_is_not_its_own_duplicate(
    services: Services, tmp_path: Path, keyed: bool
) -> None:
    outbox = tmp_path / "outbox"
    await store_user(services)
    token = await admin_key(services)
    headers = {"authorization": f"Bearer {token}"}
    intent = {**SHIPPED, "idempotency_key": "ship-A-7"} if keyed else SHIPPED
    api = Api(env_of(services, outbox))
    api.start(failpoints="intake.reserved=exit")
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
            with pytest.raises(httpx.TransportError):  # it died with the request in flight
                await http.post("/v1/intents", json=intent)
        assert api.process is not None and api.process.wait(timeout=30) == 137
        assert await services.redis.hlen(services.keys.provisional("u_ada")) > 0  # type: ignore[misc]  # its reservations remain
        api.start()
        if not keyed:
            # Without a key a retry is a new intent; it may be held back as a duplicate only
            # while the dead process could still be committing: until its heartbeat lapses.
            await eventually(lambda: owners_gone(services), within=20, every=0.2)
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
            response = await http.post("/v1/intents", json=intent)
        assert response.status_code == 202, response.text
        retried = response.json()["notification_id"]
    finally:
        api.stop()
    survivor = worker(env_of(services, outbox))
    try:
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    assert await suppressed_reasons(services, [retried]) == {"sms": "opted_out"}  # not a duplicate
    await assert_exactly_once(services, outbox, [retried])


async def test_a_late_decision_cut_short_after_reserving_is_made_once_by_another_worker(
    on_own_redis: Services, own_redis: RedisServer, tmp_path: Path
) -> None:
    services, outbox = on_own_redis, tmp_path / "outbox"
    own_redis.kill()
    ids = await accept_many(services, 8, users=4)  # stored undecided
    own_redis.start()  # back, empty
    doomed = worker(env_of(services, outbox), failpoints="intake.reserved=exit")
    try:
        assert await asyncio.to_thread(doomed.wait, 60) == 137, logs(outbox.parent)
    finally:
        stop(doomed)
    survivor = worker(env_of(services, outbox))
    try:
        try:
            await eventually(lambda: all_final(services), within=60, every=0.2)
        except AssertionError:
            raise AssertionError(f"{await open_deliveries(services)}\n{logs(outbox.parent)}") from None
    finally:
        stop(survivor)
    reasons = await suppressed_reasons(services, ids)
    assert set(reasons.values()) == {"opted_out"}, reasons  # none is its own duplicate
    await assert_exactly_once(services, outbox, ids)
    async with services.database.connect() as connection:
        decided = await connection.scalar(
            sa.select(sa.func.count()).select_from(NOTIFICATIONS).where(NOTIFICATIONS.c.status == "decided")
        )
    assert decided == 8
