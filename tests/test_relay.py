"""The relay gives work back to Redis when a job ended without finishing it (real arq, real store)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from arq.connections import RedisSettings
from arq.worker import Worker, func

from gateway.queue.enqueue import DELIVER, deserialize, serialize
from gateway.queue.relay import Relay
from gateway.services import Services
from tests.harness import (
    ADA,
    JOBS,
    admin_key,
    client,
    delivery_statuses,
    eventually,
    running_worker,
    store_user,
)

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-9", "carrier": "UPS"}}


async def test_a_job_that_failed_in_arq_is_queued_again_under_a_new_id(
    services: Services, tmp_path: Path
) -> None:
    await store_user(services, ADA)
    async with client(services, await admin_key(services)) as http:
        notification_id = (await http.post("/v1/intents", json=SHIPPED)).json()["notification_id"]
    await eventually(lambda: _all_marked_enqueued(services))  # the intake's push runs after its 202
    async with services.database.connect() as connection:
        before = {r.id for r in await connection.execute(sa.select(JOBS.c.id))}
    assert before

    async def broken(ctx: dict[str, Any], job_id: str, delivery_ids: list[str]) -> int:
        raise RuntimeError("the store went away mid-job")

    # A real arq worker ends every job of the queue with a failure, as a crash-free bug would.
    failing = Worker(
        functions=[func(broken, name=DELIVER)],
        queue_name=services.keys.queue("standard"),
        redis_settings=RedisSettings.from_dsn(services.settings.redis_url),
        burst=True,
        handle_signals=False,
        job_serializer=serialize,
        job_deserializer=deserialize,
        keep_result=60,
        max_tries=1,
    )
    await failing.async_run()
    await failing.close()
    assert failing.jobs_failed == len(before)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    relay = Relay(services.database, services.redis, services.keys, services.enqueuer, lambda: later)
    await services.redis.set(services.keys.epoch(), "now")  # Redis has not lost its data
    assert await relay.reconcile() == len(before)
    async with services.database.connect() as connection:
        after = {r.id for r in await connection.execute(sa.select(JOBS.c.id))}
    assert after and not after & before  # the same deliveries, under new job ids

    async with running_worker(services):  # its relay pushes them; it delivers them
        await eventually(lambda: _delivered(services, notification_id), within=30)


async def _all_marked_enqueued(services: Services) -> bool:
    await services.dispatcher.flush()
    async with services.database.connect() as connection:
        rows = list(await connection.execute(sa.select(JOBS.c.enqueued_at)))
    return bool(rows) and all(r.enqueued_at is not None for r in rows)


async def _delivered(services: Services, notification_id: str) -> bool:
    statuses = await delivery_statuses(services, notification_id)
    return {c: s for c, s in statuses.items() if c != "sms"} == {
        c: "delivered" for c in ("push", "email", "in_app")
    }
