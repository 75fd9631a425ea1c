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
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.conftest import make_settings, open_services
from tests.faults.checks import all_final, assert_exactly_once, open_deliveries
from tests.faults.load import Load
from tests.faults.procs import Api, env_of, logs, stop, worker
from tests.harness import ADA, DELIVERIES, NOTIFICATIONS, admin_key, eventually, store_user

SECONDS = float(os.environ.get("NOTIGATE_DRILL_SECONDS", "6"))
RATE = 40.0
USERS = 100  # a few intents each: under every cap


@dataclass
class Drill:
    services: Services
    redis: RedisServer
    outbox: Path
    api: Api
    workers: list[subprocess.Popen[bytes]]

    @property
    def env(self) -> dict[str, str]:
        return env_of(self.services, self.outbox)

    def restart_worker(self, index: int) -> None:
        self.workers[index] = worker(self.env)


@contextlib.asynccontextmanager
async def drill(database_url: str, redis: RedisServer, tmp_path: Path) -> AsyncIterator[Drill]:
    outbox = tmp_path / "outbox"
    services = await open_services(make_settings(database_url, redis.url, tmp_path))
    for n in range(USERS):
        await store_user(services, {**ADA, "user_id": f"u_{n}"})
    env = env_of(services, outbox)
    ready = Drill(services, redis, outbox, Api(env), [worker(env), worker(env)])
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


async def assert_none_lost_or_doubled(d: Drill, load: Load) -> None:
    assert load.refused == []
    assert len(load.accepted) == int(RATE * SECONDS)  # every intent was answered in the end
    ids = list(load.accepted.values())
    async with d.services.database.connect() as connection:
        stored = {
            r.idempotency_key: r.id
            for r in await connection.execute(
                sa.select(NOTIFICATIONS.c.idempotency_key, NOTIFICATIONS.c.id).where(
                    NOTIFICATIONS.c.idempotency_key.is_not(None)
                )
            )
        }
        reasons = Counter(
            (r.channel, r.reason)
            for r in await connection.execute(
                sa.select(DELIVERIES.c.channel, DELIVERIES.c.reason).where(
                    DELIVERIES.c.status == "suppressed"
                )
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
    addresses = await assert_exactly_once(d.services, d.outbox, ids)  # written once per address
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
