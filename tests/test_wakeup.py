"""Workers are woken by the jobs queued for them, not by polling (real Redis, real arq loop).

Each worker here rests a whole minute between looks of its own (`idle_poll=60`): a message
that goes out within the test's bounds went because a wake-up, or its own due time, ended
the rest. How fast that is, is measured in bench/, not here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools

import pytest
from arq.connections import RedisSettings, create_pool
from arq.constants import in_progress_key_prefix
from arq.worker import func

from gateway.metrics import REGISTRY
from gateway.queue.wakeup import WakeableWorker, rest
from gateway.services import Services
from tests.harness import ADA, admin_key, client, delivery_statuses, eventually, running_worker, store_user

OTP = {
    "event": "security.otp",
    "user_id": "u_ada",
    "priority": "urgent",
    "data": {"code": "123456", "minutes": 10},
}
SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1", "carrier": "UPS"}}


async def sent(services: Services, notification_id: str) -> bool:
    statuses = await delivery_statuses(services, notification_id)
    return bool(statuses) and "delivered" in statuses.values()


async def test_a_resting_worker_is_woken_by_the_job_queued_for_it(services: Services) -> None:
    await store_user(services, ADA)
    async with client(services, await admin_key(services)) as http, running_worker(services, idle_poll=60):
        await eventually(lambda: _consuming(services), within=30)  # resting now: nothing is queued
        for intent in (OTP, SHIPPED):
            response = await http.post("/v1/intents", json=intent)
            assert response.status_code == 202, response.text
            notification_id = response.json()["notification_id"]
            await eventually(functools.partial(sent, services, notification_id), within=20)


async def test_a_resting_worker_takes_a_scheduled_job_when_it_is_due(services: Services) -> None:
    await store_user(services, ADA)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).isoformat()
    async with client(services, await admin_key(services)) as http, running_worker(services, idle_poll=60):
        response = await http.post("/v1/intents", json={**SHIPPED, "send_at": soon})
        assert response.status_code == 202, response.text
        # Queued in the future: its wake-up came early, so only the rest's own deadline (the
        # job's due time) can make the worker look again in time.
        await eventually(lambda: sent(services, response.json()["notification_id"]), within=20)


async def _consuming(services: Services) -> bool:
    return all(
        REGISTRY.get_sample_value("notigate_worker_consuming", {"queue": queue}) == 1
        for queue in ("critical", "standard")
    )


async def test_a_stop_that_arrives_as_a_wake_up_does_still_stops_the_poll_loop() -> None:
    """The race that hung worker stops: a job ends (its slot's wake-up is set) and, in the same
    turn of the loop, the worker cancels its poll loop. The rest must end cancelled, or the
    loop, which runs until cancelled, runs on."""
    for turns in range(3):  # where the wake-up's waiter stands when the cancellation lands
        wake = asyncio.Event()
        resting = asyncio.create_task(rest(wake, 10))
        for _ in range(turns):
            await asyncio.sleep(0)
        wake.set()
        resting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resting


async def _never(ctx: dict[str, object]) -> None:
    raise AssertionError("no job of this test is run")


async def test_a_job_this_worker_is_running_is_not_asked_about_nor_started_again(services: Services) -> None:
    """The job is due in its queue with no in-progress mark (it expired while the job ran), as
    arq's loop reads it again after every job's end; arq alone would start it a second time."""
    queue = services.keys.queue("standard")
    pool = await create_pool(RedisSettings.from_dsn(services.settings.redis_url))
    running = asyncio.create_task(asyncio.sleep(60))
    try:
        await pool.zadd(queue, {"j_running": 1})
        worker = WakeableWorker(
            wake=asyncio.Event(),
            idle=60,
            functions=[func(_never, name="never")],
            queue_name=queue,
            redis_pool=pool,
            handle_signals=False,
        )
        worker.tasks["j_running"] = running
        await worker.start_jobs([b"j_running"])
        assert worker.tasks == {"j_running": running}
        assert worker.job_counter == 0
        assert await pool.exists(in_progress_key_prefix + "j_running") == 0
    finally:
        running.cancel()
        await pool.delete(queue, in_progress_key_prefix + "j_running")
        await pool.aclose()
