"""The fault drill, as tests: real processes under load, one fault each, nothing lost or doubled.

Each drill runs a real API (`notigate serve`) and two real workers on the test's database
(SQLite and PostgreSQL) and a Redis of its own, offers unique intents at a steady rate
(`tests/faults/load.py`, retrying unanswered POSTs with the same idempotency key), stages
its fault in the middle of the load, waits for every delivery to settle, and counts:

- every accepted key names exactly one stored notification (the one its answer named);
- every delivery of every accepted notification was written exactly once per address
  (the dev providers write one file or line per delivery and address, and refuse a
  second), and recorded `delivered` once per address;
- no delivery was suppressed as `duplicate` or `frequency_capped` (the intents are unique
  and under every cap): only SMS, which these users never opted into (R1).

The load is small (40 intents/s for a few seconds: `NOTIGATE_DRILL_SECONDS` makes it
longer) so that the suite stays fast; the faults are the drill's, at full strength.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.conftest import make_settings, open_services
from tests.faults.checks import all_final, assert_exactly_once, open_deliveries
from tests.faults.load import Load
from tests.faults.procs import Api, env_of, logs, stop, worker
from tests.harness import ADA, DELIVERIES, NOTIFICATIONS, admin_key, eventually, store_user

SECONDS = float(os.environ.get("NOTIGATE_DRILL_SECONDS", "4"))
RATE = 40.0
USERS = 100  # a few intents each: under every cap


@dataclass
class Drill:
    services: Services
    redis: RedisServer
    outbox: Path
    api: Api
    workers: list[subprocess.Popen[bytes]]

    env_extra: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return env_of(self.services, self.outbox, **self.env_extra)

    def restart_worker(self, index: int) -> None:
        self.workers[index] = worker(self.env)


@contextlib.asynccontextmanager
async def drill(
    database_url: str, redis: RedisServer, tmp_path: Path, **env_extra: str
) -> AsyncIterator[Drill]:
    outbox = tmp_path / "outbox"
    services = await open_services(make_settings(database_url, redis.url, tmp_path))
    for n in range(USERS):
        await store_user(services, {**ADA, "user_id": f"u_{n}"})
    env = env_of(services, outbox, **env_extra)
    ready = Drill(services, redis, outbox, Api(env), [worker(env), worker(env)], env_extra)
    try:
        await asyncio.to_thread(ready.api.start)
        yield ready
    finally:
        ready.api.stop()
        for process in ready.workers:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
            stop(process)
        await services.close()


async def run(d: Drill, fault: Callable[[Drill], Awaitable[None]]) -> Load:
    """Offer the load, stage the fault meanwhile, and wait for every delivery to settle."""
    load = Load(lambda: d.api.url, await admin_key(d.services), USERS, RATE, SECONDS)
    offered = asyncio.create_task(load.run())
    await asyncio.sleep(SECONDS / 3)
    await fault(d)
    await offered
    try:
        await eventually(lambda: all_final(d.services), within=120, every=0.5)
    except AssertionError:
        raise AssertionError(f"{await open_deliveries(d.services)}\n{logs(d.outbox.parent)}") from None
    return load


async def assert_none_lost_or_doubled(d: Drill, load: Load, also: Sequence[str] = ()) -> None:
    """`also`: more notifications (not the load's) that must have gone out exactly once."""
    assert load.refused == []
    assert len(load.accepted) == int(RATE * SECONDS)  # every intent was answered in the end
    ids = list(load.accepted.values())
    async with d.services.database.connect() as connection:
        stored = {
            r.idempotency_key: r.id
            for r in await connection.execute(
                sa.select(NOTIFICATIONS.c.idempotency_key, NOTIFICATIONS.c.id).where(
                    NOTIFICATIONS.c.idempotency_key.is_not(None), NOTIFICATIONS.c.bulk_id.is_(None)
                )
            )
        }
        reasons = Counter(
            (r.channel, r.reason)
            for r in await connection.execute(
                sa.select(DELIVERIES.c.channel, DELIVERIES.c.reason)
                .join(NOTIFICATIONS, NOTIFICATIONS.c.id == DELIVERIES.c.notification_id)
                .where(DELIVERIES.c.status == "suppressed", NOTIFICATIONS.c.bulk_id.is_(None))
            )
        )
        delivered_attempts = Counter(
            r.delivery_id
            for r in await connection.execute(
                sa.text("SELECT delivery_id FROM attempts WHERE outcome = 'delivered'")
            )
        )
    assert stored == load.accepted  # one notification per key, the one its answer named
    assert reasons == {("sms", "opted_out"): len(ids)}  # nobody's duplicate, nobody capped
    # Written once per address (the outbox holds every message of the drill: `also`'s too).
    addresses = await assert_exactly_once(d.services, d.outbox, [*ids, *also])
    assert dict(delivered_attempts) == addresses  # and recorded delivered once per address


async def test_redis_replaced_by_an_empty_one_mid_load(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    async def replace_redis(d: Drill) -> None:
        d.redis.kill()
        await asyncio.sleep(SECONDS / 3)  # intake stores intents undecided meanwhile
        d.redis.start()  # same port, nothing in it

    async with drill(database_url, own_redis, tmp_path) as d:
        load = await run(d, replace_redis)
        exits = [p.poll() for p in d.workers]
        assert exits == [None] * len(d.workers), f"worker exit codes {exits}"  # both rode it out
        await assert_none_lost_or_doubled(d, load)


async def test_the_api_killed_mid_load_with_producers_retrying(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    async def kill_api(d: Drill) -> None:
        d.api.kill()
        await asyncio.to_thread(d.api.start)  # a supervisor's restart; unanswered POSTs retry

    async with drill(database_url, own_redis, tmp_path) as d:
        load = await run(d, kill_api)
        assert load.retries > 0  # the fault was felt
        await assert_none_lost_or_doubled(d, load)


async def test_workers_killed_again_and_again_mid_load(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    async def keep_killing(d: Drill) -> None:
        for round_ in range(4):
            index = round_ % 2
            d.workers[index].send_signal(signal.SIGKILL)
            await asyncio.to_thread(d.workers[index].wait, 10)
            d.restart_worker(index)
            await asyncio.sleep(SECONDS / 6)

    async with drill(database_url, own_redis, tmp_path) as d:
        await assert_none_lost_or_doubled(d, await run(d, keep_killing))


async def test_a_worker_paused_past_its_leases_then_resumed(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    async def pause(d: Drill) -> None:
        d.workers[0].send_signal(signal.SIGSTOP)
        await asyncio.sleep(5)  # its leases (NOTIGATE_JOB_TIMEOUT=2) run out; the other takes over
        d.workers[0].send_signal(signal.SIGCONT)

    async with drill(database_url, own_redis, tmp_path) as d:
        await assert_none_lost_or_doubled(d, await run(d, pause))


async def test_urgent_codes_sent_during_a_bulk_campaign_all_go_out(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    """The urgent lane under load: bulk requests are being expanded and sent while one-time
    codes are posted; every code is delivered once, every bulk recipient gets one message."""
    codes: list[str] = []
    campaigns: list[str] = []

    async def campaign(d: Drill) -> None:
        token = await admin_key(d.services, "campaigns")
        headers = {"authorization": f"Bearer {token}"}
        users = [f"u_{n}" for n in range(USERS)]
        async with httpx.AsyncClient(base_url=d.api.url, headers=headers, timeout=30) as http:
            for k in range(2):
                bulk = await http.post(
                    "/v1/intents/bulk",
                    json={
                        "event": "order.shipped",
                        "user_ids": users,
                        "channels": ["in_app"],  # under every cap
                        "data": {"order_id": f"B-{k}", "carrier": "UPS"},
                    },
                )
                assert bulk.status_code == 202, bulk.text
                campaigns.append(bulk.json()["bulk_id"])
            for n in range(int(SECONDS * 3)):  # one-time codes at 6/s meanwhile
                otp = {"event": "security.otp", "user_id": f"u_{n % USERS}", "priority": "urgent"}
                sent = await http.post(
                    "/v1/intents", json={**otp, "data": {"code": f"{n:06d}", "minutes": 10}}
                )
                assert sent.status_code == 202, sent.text
                codes.append(sent.json()["notification_id"])
                await asyncio.sleep(1 / 6)

    # Jobs get 6 s here, not 2: on a loaded machine a job that outlives its timeout between
    # claim and send is cancelled and its delivery reclaimed later, again and again.
    async with drill(database_url, own_redis, tmp_path, NOTIGATE_JOB_TIMEOUT="6") as d:
        load = await run(d, campaign)
        await eventually(lambda: _expanded(d.services, campaigns), within=60, every=0.5)
        await eventually(lambda: all_final(d.services), within=60, every=0.5)
        async with d.services.database.connect() as connection:
            bulk_rows = list(
                await connection.execute(
                    sa.select(NOTIFICATIONS.c.id, NOTIFICATIONS.c.bulk_id).where(
                        NOTIFICATIONS.c.bulk_id.in_(campaigns)
                    )
                )
            )
        assert Counter(r.bulk_id for r in bulk_rows) == {bulk_id: USERS for bulk_id in campaigns}
        await assert_none_lost_or_doubled(d, load, also=[*codes, *(r.id for r in bulk_rows)])


async def _expanded(services: Services, bulk_ids: list[str]) -> bool:
    for bulk_id in bulk_ids:
        progress = await services.bulk.progress(bulk_id)
        if progress is None or progress.state != "expanded":
            return False
    return True
