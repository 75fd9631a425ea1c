"""A job cancelled between a delivery's claim and its first provider call (arq's job timeout,
a worker's stop) gives the claim back: the delivery is due again at once and is sent once,
even through a provider that cannot drop a repeat. Left `sending`, it would come back after
its lease as a delivery that may have been sent, and such a provider would never send it.

The jobs run on a real worker's pipeline (its own connections, Redis and guard), driven
directly and cancelled as arq cancels a job that outlives its timeout. That worker consumes
only the critical queue, so the standard queue's jobs wait for the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.delivery.outcome import GIVEN_BACK
from gateway.delivery.pipeline import DeliveryPipeline
from gateway.providers.registry import ProviderRegistry
from gateway.services import Services
from tests.delivery.conftest import registry
from tests.delivery.test_guarded import guarded, shipped
from tests.delivery.test_pipeline import EMAIL_ONLY, _settled, _status
from tests.harness import DELIVERIES, admin_key, client, eventually, running_worker, store_user
from tests.stub_http import stub_server


@asynccontextmanager
async def idle_pipeline(services: Services, reg: ProviderRegistry) -> AsyncIterator[DeliveryPipeline]:
    """A running worker's pipeline, with nobody taking the standard queue's jobs."""
    async with running_worker(services, registry=reg, queues=["critical"], relay=False) as worker:
        await eventually(lambda: _true(worker.pipeline is not None))
        assert worker.pipeline is not None
        yield worker.pipeline


async def _true(value: bool) -> bool:
    return value


async def _row(services: Services, delivery_id: str) -> Any:
    async with services.database.connect() as connection:
        return (await connection.execute(sa.select(DELIVERIES).where(DELIVERIES.c.id == delivery_id))).one()


async def _emails(services: Services, count: int) -> list[tuple[str, str]]:
    """`count` orders shipped: each one's notification and its email delivery."""
    token = await admin_key(services)
    found = []
    async with client(services, token) as http:
        for n in range(count):
            response = await http.post("/v1/intents", json=shipped(n))
            assert response.status_code == 202, response.text
            notification_id = response.json()["notification_id"]
            found.append((notification_id, (await _status(services, notification_id))["email"].delivery_id))
    return found


async def _cancelled(job: asyncio.Task[int]) -> None:
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job


async def _assert_given_back(services: Services, delivery_id: str) -> None:
    row = await _row(services, delivery_id)
    assert (row.status, row.reason, row.attempts) == ("retrying", GIVEN_BACK, 0)
    assert (row.lease_owner, row.lease_until) == (None, None)


async def test_a_job_cancelled_while_a_send_waits_for_its_provider_gives_the_claim_back(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid:
        limited = guarded(
            registry(tmp_path / "outbox", sendgrid=sendgrid), rate_limit={"rate": 1, "per": "1h", "burst": 1}
        )
        limited.adapters["sendgrid"].idempotent = False  # a repeat would reach the user twice
        (first, spent), (second, waiting) = await _emails(quick_services, 2)
        async with idle_pipeline(quick_services, limited) as pipeline:
            pipeline.rate_wait = 7200.0  # wait for sendgrid's next token rather than fail over
            assert await pipeline.run("j-first", [spent], lane="standard") == 1  # the hour's one token
            job = asyncio.create_task(pipeline.run("j-second", [waiting], lane="standard"))
            await eventually(lambda: _claimed(quick_services, waiting))
            await _cancelled(job)  # as arq's job timeout does, while the send waits for a token
            await _assert_given_back(quick_services, waiting)
        assert len(sendgrid.requests) == 1
        # A worker with a free provider sends it once: not `unknown`, not twice.
        async with running_worker(quick_services, registry=registry(tmp_path / "outbox", sendgrid=sendgrid)):
            await eventually(lambda: _settled(quick_services, second, "email", "delivered"))
    email = (await _status(quick_services, second))["email"]
    assert [(a.provider, a.outcome) for a in email.attempts] == [("sendgrid", "delivered")]
    assert sorted(r.json()["notification_id"] for r in sendgrid.requests) == sorted([first, second])
    assert (await _row(quick_services, waiting)).attempts == 1


async def test_a_claim_that_lands_after_its_job_was_cancelled_is_given_back(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid:
        adapters = registry(tmp_path / "outbox", sendgrid=sendgrid)
        adapters.adapters["sendgrid"].idempotent = False
        [(notification_id, email)] = await _emails(quick_services, 1)
        async with idle_pipeline(quick_services, adapters) as pipeline:
            submitted = pipeline.claims.batcher.submitted
            # Hold the delivery's row (and, on SQLite, the worker's write gate) so the claim's
            # commit waits; the job is cancelled meanwhile, then the claim commits.
            async with pipeline.store.database.begin() as held:
                await held.execute(
                    sa.update(DELIVERIES)
                    .where(DELIVERIES.c.id == email)
                    .values(updated_at=DELIVERIES.c.updated_at)
                )
                job = asyncio.create_task(pipeline.run("j-1", [email], lane="standard"))
                await eventually(lambda: _true(pipeline.claims.batcher.submitted > submitted))
                await _cancelled(job)
            await eventually(lambda: _has_reason(quick_services, email, GIVEN_BACK))
            await _assert_given_back(quick_services, email)
        assert sendgrid.requests == []
        async with running_worker(quick_services, registry=adapters):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "delivered"))
    assert len(sendgrid.requests) == 1


async def _claimed(services: Services, delivery_id: str) -> bool:
    return bool((await _row(services, delivery_id)).status == "sending")


async def _has_reason(services: Services, delivery_id: str, reason: str) -> bool:
    return bool((await _row(services, delivery_id)).reason == reason)
