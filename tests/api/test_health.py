"""`/healthz`, `/readyz` and `/metrics` over HTTP, against real databases and Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.api.app import create_app
from gateway.redis_server import RedisServer, free_port
from gateway.services import Services
from tests.conftest import make_settings, open_services
from tests.harness import admin_key, client, delivery_statuses, eventually, running_worker, store_user

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-7", "carrier": "UPS"}}


def raw(services: Services) -> httpx.AsyncClient:
    """A client that sends no API key: the probes are open."""
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
    return sum(s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items())


async def test_healthz_answers_without_a_key(services: Services) -> None:
    async with raw(services) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_store_redis_and_policy(services: Services) -> None:
    async with raw(services) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "store": True,
        "redis": True,
        "policy": True,
    }
    assert body["checks"]["policy"]["detail"] == f"version {services.policy.version}"


async def test_readyz_names_redis_when_it_is_unreachable(sqlite_url: str, tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    services = await open_services(make_settings(sqlite_url, closed, tmp_path))
    try:
        async with raw(services) as http:
            response = await http.get("/readyz")
            metrics = await http.get("/metrics")
    finally:
        await services.close()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unready"
    failed = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failed == {"redis"}
    assert body["checks"]["redis"]["detail"]
    # a scrape still answers, saying Redis did not
    assert metrics.status_code == 200
    assert value(metrics.text, "notigate_redis_up") == 0


async def test_readyz_names_the_store_when_the_database_is_unreachable(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/notigate"
    services = Services(make_settings(nowhere, redis_server.url, tmp_path))
    try:
        async with raw(services) as http:
            response = await http.get("/readyz")
    finally:
        await services.close()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unready"
    failed = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failed == {"store"}


async def test_metrics_count_intake_decisions_deliveries_and_queues(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services)
    async with raw(services) as http:
        before = (await http.get("/metrics")).text
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json=SHIPPED)
        assert response.status_code == 202, response.text
        notification_id = response.json()["notification_id"]

        async def queued() -> bool:  # the dispatcher hands the job to Redis just after the 202
            text = (await http.get("/metrics")).text
            return sum(s.value for s in samples(text) if s.name == "notigate_queue_depth") >= 1

        await eventually(queued)
        async with running_worker(services):

            async def delivered() -> bool:
                return (await delivery_statuses(services, notification_id)).get("email") == "delivered"

            await eventually(delivered)
        after = await http.get("/metrics")  # the key is not needed, but does no harm either
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    assert after.headers["content-type"].count("charset") == 1  # Litestar once added a second
    text = after.text

    def grew(name: str, **labels: str) -> float:
        return value(text, name, **labels) - value(before, name, **labels)

    assert grew("notigate_intents_accepted_total", priority="normal") == 1
    assert grew("notigate_policy_evaluation_seconds_count") >= 1
    assert grew("notigate_deliveries_total", channel="email", provider="sendgrid", outcome="delivered") == 1
    assert grew("notigate_accept_to_delivered_seconds_count") >= 1
    # each tier's queue has a depth, read from Redis when scraped: the worker has emptied them
    queues = sorted({t.queue for t in services.policy.tiers.values()})
    depth = {s.labels["queue"]: s.value for s in samples(text) if s.name == "notigate_queue_depth"}
    assert sorted(depth) == queues
    assert all(v == 0 for v in depth.values()), depth
    assert value(text, "notigate_redis_up") == 1


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_are_outside_the_api_schema_security(services: Services, path: str) -> None:
    """A wrong key is ignored rather than refused: probers send none."""
    async with raw(services) as http:
        response = await http.get(path, headers={"authorization": "Bearer k_unknown.secret"})
    assert response.status_code == 200, response.text
