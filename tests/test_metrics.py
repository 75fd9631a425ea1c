"""The metrics module: what an outcome counts, queue depths from Redis, the worker's own port."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import ConfigError
from gateway.metrics import REGISTRY, Scrape, record_outcome
from gateway.redis_keys import Keys
from gateway.redis_server import RedisServer, free_port
from gateway.services import Services
from gateway.settings import Settings
from gateway.store.claims import Claimed
from gateway.store.outcomes import Outcome, Try
from tests.conftest import make_settings, open_services
from tests.harness import a_claim, eventually, running_worker

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def claimed(channel: str = "email", tier: str | None = "standard") -> Claimed:
    return a_claim(channel=channel, tier=tier)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_delivered_outcome_counts_and_times_from_acceptance() -> None:
    labels = {"channel": "webpush-test", "provider": "p1", "outcome": "delivered"}
    before = sample("notigate_deliveries_total", **labels)
    latency = sample("notigate_accept_to_delivered_seconds_sum", tier="tier-test")
    outcome = Outcome(claimed("webpush-test", "tier-test"), "delivered", provider="p1")
    record_outcome(outcome, NOW - dt.timedelta(seconds=3), NOW)
    assert sample("notigate_deliveries_total", **labels) == before + 1
    assert sample("notigate_accept_to_delivered_seconds_sum", tier="tier-test") == pytest.approx(latency + 3)


def test_a_naive_acceptance_time_is_read_as_utc() -> None:
    latency = sample("notigate_accept_to_delivered_seconds_sum", tier="naive-test")
    outcome = Outcome(claimed("email", "naive-test"), "delivered", provider="p1")
    record_outcome(outcome, (NOW - dt.timedelta(seconds=2)).replace(tzinfo=None), NOW)
    assert sample("notigate_accept_to_delivered_seconds_sum", tier="naive-test") == pytest.approx(latency + 2)


def test_retries_and_dead_letters_are_counted_with_the_last_provider_tried() -> None:
    retries = sample("notigate_delivery_retries_total", channel="retry-test")
    dead = sample("notigate_dead_letters_total")
    tries = [Try("sendgrid", "retryable", "503"), Try("smtp", "retryable", "421")]
    record_outcome(Outcome(claimed("retry-test"), "retrying", tries=tries), None, NOW)
    record_outcome(Outcome(claimed("retry-test"), "dead", tries=tries), None, NOW)
    assert sample("notigate_delivery_retries_total", channel="retry-test") == retries + 1
    assert sample("notigate_dead_letters_total") == dead + 1
    for outcome in ("retrying", "dead"):
        assert (
            sample("notigate_deliveries_total", channel="retry-test", provider="smtp", outcome=outcome) >= 1
        )


def test_an_outcome_without_any_provider_call_is_labelled_none() -> None:
    before = sample("notigate_deliveries_total", channel="expired-test", provider="none", outcome="expired")
    record_outcome(
        Outcome(claimed("expired-test"), "expired", tries=[Try(None, "expired", "late")]), None, NOW
    )
    after = sample("notigate_deliveries_total", channel="expired-test", provider="none", outcome="expired")
    assert after == before + 1


def test_queue_depths_are_read_from_redis_at_scrape_time(redis_server: RedisServer) -> None:
    import redis

    keys = Keys("metrics-test")
    direct = redis.Redis.from_url(redis_server.url)
    direct.delete(keys.queue("critical"), keys.queue("bulk"))
    direct.zadd(keys.queue("bulk"), {"j1": 1, "j2": 2})
    scrape = Scrape(redis_server.url, keys, ["bulk", "critical"])
    try:
        families = {f.name: f for f in scrape.collect()}
    finally:
        scrape.close()
        direct.delete(keys.queue("bulk"))
        direct.close()
    depth = {s.labels["queue"]: s.value for s in families["notigate_queue_depth"].samples}
    assert depth == {"bulk": 2, "critical": 0}
    assert families["notigate_redis_up"].samples[0].value == 1
    assert "notigate_deliveries" in families  # the process's own metrics come with it


def test_an_unreachable_redis_gives_redis_up_zero_and_no_depths() -> None:
    scrape = Scrape(f"redis://127.0.0.1:{free_port()}/0", Keys("x"), ["bulk"])
    try:
        families = {f.name: f for f in scrape.collect()}
    finally:
        scrape.close()
    assert "notigate_queue_depth" not in families
    assert families["notigate_redis_up"].samples[0].value == 0


def test_the_worker_metrics_port_is_a_validated_setting() -> None:
    assert Settings.from_env({}).worker_metrics_port is None
    assert Settings.from_env({"NOTIGATE_WORKER_METRICS_PORT": "9464"}).worker_metrics_port == 9464
    for bad in ("0", "70000", "metrics"):
        with pytest.raises(ConfigError, match=f"NOTIGATE_WORKER_METRICS_PORT='{bad}'"):
            Settings.from_env({"NOTIGATE_WORKER_METRICS_PORT": bad})


async def test_a_worker_serves_its_metrics_over_http(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    port = free_port()
    services: Services = await open_services(
        make_settings(sqlite_url, redis_server.url, tmp_path, worker_metrics_port=port)
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with running_worker(services), httpx.AsyncClient() as http:

            async def serving() -> bool:
                try:
                    return (await http.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(serving)
            response = await http.get(url)
    finally:
        await services.close()
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"notigate_deliveries", "notigate_queue_depth", "notigate_redis_up"} <= names
    queues = {t.queue for t in services.policy.tiers.values()}
    depth = {
        s.labels["queue"]
        for f in text_string_to_metric_families(response.text)
        for s in f.samples
        if s.name == "notigate_queue_depth"
    }
    assert depth == queues
    # stopped with the worker
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.TransportError):
            await http.get(url)
