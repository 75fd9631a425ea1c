"""A policy changed under a running `notigate serve` and `notigate worker` goes live; a broken one does not.

Real processes on a copy of the shipped bundle (without its suites, so each reload's check is
quick). A producer posts intents the whole time: not one may fail. After a good change, new
intents are decided and delivered under the new version (stored on each notification); after
a broken one, both processes refuse it (their logs, `/metrics`, `GET /v1/policy`) and keep
serving the last good version. One SQLite run: the store plays no part in a reload. 30-50 s on
a busy machine, nearly all of it the two processes starting; the reloads take a second each.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.redis_server import RedisServer, free_port
from gateway.services import Services
from tests.bundles import break_cel, copy_bundle, email_only
from tests.conftest import make_settings, open_services
from tests.faults.checks import all_final
from tests.faults.procs import Api, env_of, logs, stop, worker
from tests.harness import ADA, admin_key, eventually, store_user

PRODUCED_FOR = "u_steady"


@pytest.fixture
async def gateway(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    services = await open_services(make_settings(sqlite_url, redis_server.url, tmp_path))
    await services.start()
    yield services
    await services.close()


class Producer:
    """Posts an intent every few milliseconds until stopped, keeping every status code."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.codes: list[int] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            answer = await self.http.post("/v1/intents", json=intent(f"P-{n}", PRODUCED_FOR))
            self.codes.append(answer.status_code)
            await asyncio.sleep(0.02)


def intent(order: str, user: str = "u_ada") -> dict[str, Any]:
    return {"event": "order.shipped", "user_id": user, "data": {"order_id": order, "carrier": "UPS"}}


async def decided(http: httpx.AsyncClient, order: str) -> dict[str, Any]:
    answer = await http.post("/v1/intents", json=intent(order))
    assert answer.status_code == 202, answer.text
    found = await http.get(f"/v1/notifications/{answer.json()['notification_id']}")
    assert found.status_code == 200, found.text
    notification: dict[str, Any] = found.json()
    return notification


def channels(notification: dict[str, Any]) -> set[str]:
    return {d["channel"] for d in notification["deliveries"] if d["status"] != "suppressed"}


def info(text: str, name: str) -> str | None:
    found = re.search(rf'^{name}_info{{version="([^"]+)"}} 1\.0$', text, re.MULTILINE)
    return found.group(1) if found else None


async def test_a_policy_change_goes_live_under_serve_and_worker_and_a_broken_one_is_refused(
    gateway: Services, tmp_path: Path
) -> None:
    paths = copy_bundle(tmp_path / "bundle")
    await store_user(gateway, ADA)
    await store_user(gateway, {**ADA, "user_id": PRODUCED_FOR})  # the producer's own caps
    token = await admin_key(gateway)
    # A 6 s job timeout, not the fault tests' 2 s: on a loaded machine a job that outlives its
    # timeout between claim and send has its delivery reclaimed later (see docs/architecture.md).
    env = env_of(
        gateway, tmp_path / "outbox", NOTIGATE_POLICIES=str(paths.policies), NOTIGATE_JOB_TIMEOUT="6"
    )
    api = Api(env)
    port = free_port()
    while port == api.port:  # both were free a moment ago: not the same one twice
        port = free_port()
    consumer = worker({**env, "NOTIGATE_WORKER_METRICS_PORT": str(port)})
    headers = {"authorization": f"Bearer {token}"}
    try:
        api.start()
        http = httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10)
        async with http, running(http) as producer:

            async def worker_serves(name: str, version: str) -> bool:
                with contextlib.suppress(httpx.TransportError):
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    return info(text, name) == version
                return False

            first = await decided(http, "A-1")
            v1 = first["policy_version"]
            assert channels(first) == {"push", "email", "in_app"}
            await eventually(lambda: worker_serves("notigate_policy", v1), within=60, every=0.2)

            email_only(paths)  # a good change: order.* by email and in-app only
            await eventually(lambda: api_serves_other_than(http, v1), within=30, every=0.1)
            second = await decided(http, "A-2")
            v2 = second["policy_version"]
            assert v2 != v1 and channels(second) == {"email", "in_app"}
            # The worker checks the new bundle on the thread pool its dev-outbox writes share:
            # under the suite's load that may take as long as its start did (60 s above).
            await eventually(lambda: worker_serves("notigate_policy", v2), within=60, every=0.1)

            # The producer keeps posting meanwhile: wait for this notification, not for a lull.
            async def second_delivered() -> bool:
                status = (await http.get(f"/v1/notifications/{second['notification_id']}")).json()
                return {d["status"] for d in status["deliveries"]} == {"delivered"}

            await eventually(second_delivered, within=90, every=0.2)

            break_cel(paths)  # a broken change: refused by both, v2 keeps serving
            await eventually(lambda: refused_by_api(http), within=30, every=0.1)
            summary = (await http.get("/v1/policy")).json()
            assert summary["version"] == v2
            assert any("transactional.yaml:" in d for d in summary["reload"]["last_refused"]["diagnostics"])
            refused_version = summary["reload"]["last_refused"]["version"]
            await eventually(lambda: worker_serves("notigate_policy_refused", refused_version), within=60)
            assert await worker_serves("notigate_policy", v2)
            third = await decided(http, "A-3")
            assert third["policy_version"] == v2 and channels(third) == {"email", "in_app"}
            metrics = (await http.get("/metrics")).text
            refusals = r'^notigate_policy_reloads_total{outcome="refused"} [1-9]'
            assert re.search(refusals, metrics, re.MULTILINE)
        assert producer.codes and set(producer.codes) == {202}, sorted(set(producer.codes))
        await eventually(lambda: all_final(gateway), within=90, every=0.2)
    except BaseException:
        print(logs(tmp_path))
        raise
    finally:
        api.stop()
        stop(consumer)
    assert "refused bundle" in logs(tmp_path)


@contextlib.asynccontextmanager
async def running(http: httpx.AsyncClient) -> AsyncIterator[Producer]:
    producer = Producer(http)
    task = asyncio.create_task(producer.run())
    try:
        yield producer
    finally:
        producer.stopping.set()
        await task


async def api_serves_other_than(http: httpx.AsyncClient, version: str) -> bool:
    summary = (await http.get("/v1/policy")).json()
    return bool(summary["version"] != version)


async def refused_by_api(http: httpx.AsyncClient) -> bool:
    summary = (await http.get("/v1/policy")).json()
    return summary["reload"]["last_refused"] is not None
