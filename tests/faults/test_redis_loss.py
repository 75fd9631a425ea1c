"""A worker rides out Redis going away and coming back empty, without being restarted.

The worker is a real process with its metrics port open; Redis is killed (it keeps nothing
on disk) and a fresh, empty one is started on the same port. Jobs queued before the loss,
intents accepted while Redis was away and intents accepted after it are all delivered once,
by the same worker process; while Redis is away, its metrics and the API's `/readyz` say so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import httpx
import sqlalchemy as sa

from gateway.redis_server import RedisServer, free_port
from gateway.services import Services
from tests.conftest import make_settings, open_services
from tests.faults.checks import accept_many, all_final, assert_exactly_once, open_deliveries
from tests.faults.procs import env_of, logs, stop, worker
from tests.harness import client, eventually


def metric(text: str, name: str, queue: str) -> float | None:
    found = re.search(rf'^{name}{{queue="{queue}"}} ([0-9.e+-]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=2.0) as http:
        return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


async def test_a_worker_keeps_consuming_after_redis_is_replaced_by_an_empty_one(
    on_own_redis: Services, own_redis: RedisServer, tmp_path: Path
) -> None:
    services, outbox = on_own_redis, tmp_path / "outbox"
    port = free_port()
    survivor = worker(env_of(services, outbox, NOTIGATE_WORKER_METRICS_PORT=str(port)))
    try:

        async def consuming(value: float) -> bool:
            try:
                text = await scrape(port)
            except httpx.TransportError:
                return False
            return metric(text, "notigate_worker_consuming", "standard") == value

        await eventually(lambda: consuming(1), within=60, every=0.2)
        # Jobs due in a few seconds wait in Redis's queue...
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).isoformat()
        before = await accept_many(services, 6, users=3, send_at=soon)
        own_redis.kill()  # ...and are lost with it
        during = await accept_many(services, 6, users=3, first=6)  # stored undecided
        await eventually(lambda: consuming(0), within=30, every=0.2)  # it says it is not consuming
        text = await scrape(port)
        assert "notigate_redis_up 0.0" in text
        assert (metric(text, "notigate_worker_consumer_restarts_total", "standard") or 0) >= 1
        async with client(services) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]

        own_redis.start()  # a fresh, empty Redis on the same port
        await eventually(lambda: consuming(1), within=60, every=0.2)
        after = await accept_many(services, 6, users=3, first=12)
        try:
            await eventually(lambda: all_final(services), within=90, every=0.2)
        except AssertionError:
            raise AssertionError(f"{await open_deliveries(services)}\n{logs(outbox.parent)}") from None
        assert survivor.poll() is None  # the same process did it all, never restarted
        await assert_exactly_once(services, outbox, before + during + after)
        async with client(services) as http:
            assert (await http.get("/readyz")).status_code == 200
    finally:
        stop(survivor)


async def test_a_worker_whose_part_fails_for_good_exits_non_zero(
    database_url: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    """A part that ends on its own for a reason other than Redis (here the relay, whose outbox
    table a botched migration dropped) ends the process with exit code 1, for its supervisor
    to restart, instead of leaving a worker up that no longer relays."""
    outbox = tmp_path / "outbox"
    services = await open_services(make_settings(database_url, own_redis.url, tmp_path))
    process = worker(env_of(services, outbox))
    try:
        await eventually(lambda: _logged(outbox.parent, "serving queues"), within=60, every=0.2)
        async with services.database.begin() as connection:
            await connection.execute(sa.text("DROP TABLE jobs"))
        assert await asyncio.to_thread(process.wait, 60) == 1, logs(outbox.parent)
        [log] = outbox.parent.glob("worker-*.log")
        assert re.search(r"CRITICAL .* ended unexpectedly \(\w+Error", log.read_text())
    finally:
        stop(process)
        await services.close()


async def _logged(folder: Path, text: str) -> bool:
    return text in logs(folder)
