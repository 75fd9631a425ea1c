"""Prometheus metrics: every metric the gateway exports, defined in one place.

The metrics live on this module's own `REGISTRY` (not prometheus_client's global one), so
tests read exact values and nothing a library registers leaks into `/metrics`. Each process
counts what it did itself: the API process its intake, a worker process its deliveries; the
API serves `GET /metrics`, a worker its own port (NOTIGATE_WORKER_METRICS_PORT).

Queue depth is not counted but read from Redis when scraped (`Scrape`), so it is the same
whichever process answers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from gateway.redis_keys import Keys
from gateway.store.outcomes import Outcome

log = logging.getLogger("gateway.metrics")

REGISTRY = CollectorRegistry()

INTAKE_SHED = Counter(
    "notigate_intake_shed",
    "Intents and bulk requests answered 429 because deliveries are behind (admission control), by kind.",
    ["kind"],
    registry=REGISTRY,
)
BULK_EXPANDED = Counter(
    "notigate_bulk_recipients_expanded",
    "Recipients of bulk requests expanded into notifications (stored, replayed or refused).",
    registry=REGISTRY,
)
INTENTS_ACCEPTED = Counter(
    "notigate_intents_accepted",
    "Intents accepted and stored (replays of an idempotency key not counted), by priority.",
    ["priority"],
    registry=REGISTRY,
)
POLICY_EVALUATION = Histogram(
    "notigate_policy_evaluation_seconds",
    "Time to decide one intent against the compiled policy (decide(), no I/O).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "notigate_deliveries",
    "Delivery attempts recorded, by channel, provider and outcome "
    "(delivered, retrying, failed, dead, expired, unknown). provider is `none` when no provider "
    "was called.",
    ["channel", "provider", "outcome"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "notigate_delivery_retries",
    "Deliveries scheduled for another attempt, by channel.",
    ["channel"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "notigate_dead_letters",
    "Deliveries that ran out of retries and were dead-lettered.",
    registry=REGISTRY,
)
PROVIDER_CONFIGURATION_FAILURES = Counter(
    "notigate_provider_configuration_failures",
    "Provider calls refused for our configuration (credentials, permissions, unverified sender), "
    "by provider and code: alert on any increase, the provider's breaker opened at once.",
    ["provider", "code"],
    registry=REGISTRY,
)
WEBHOOK_EVENTS_SKIPPED = Counter(
    "notigate_webhook_events_skipped",
    "Records of a signed provider webhook that could not be read (a time out of range, a field "
    "of the wrong type) and were skipped while the rest of the batch was stored, by provider.",
    ["provider"],
    registry=REGISTRY,
)
DELIVERY_COST = Counter(
    "notigate_delivery_cost_usd",
    "What delivered messages cost, in USD, by channel and provider: the provider's reported "
    "price where it gives one (Twilio), else the configured unit cost (per SMS segment); a price "
    "reported later is added here when it arrives, and the configured cost it replaces is "
    "counted in notigate_delivery_cost_replaced_usd: spend is this minus that.",
    ["channel", "provider"],
    registry=REGISTRY,
)
DELIVERY_COST_REPLACED = Counter(
    "notigate_delivery_cost_replaced_usd",
    "Configured costs counted in notigate_delivery_cost_usd at send time and since replaced by "
    "the price the provider reported later (Twilio's status callbacks), by channel and provider.",
    ["channel", "provider"],
    registry=REGISTRY,
)
ACCEPT_TO_DELIVERED = Histogram(
    "notigate_accept_to_delivered_seconds",
    "From the intent's acceptance (the notification's created_at) to its delivery, by tier.",
    ["tier"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=REGISTRY,
)

WORKER_CONSUMING = Gauge(
    "notigate_worker_consuming",
    "1 while this worker's loop for the queue runs on a connected Redis, 0 while it is reconnecting.",
    ["queue"],
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "notigate_worker_consumer_restarts",
    "Times a queue's consuming loop ended on a Redis failure and was started again.",
    ["queue"],
    registry=REGISTRY,
)

POLICY_RELOADS = Counter(
    "notigate_policy_reloads",
    "Policy reloads (file change or SIGHUP), by outcome: loaded (a new version is in force), "
    "unchanged (same version), refused (the bundle failed check; the last good one keeps serving).",
    ["outcome"],
    registry=REGISTRY,
)
POLICY_LOADED = Info(
    "notigate_policy", "The policy bundle version in force in this process.", registry=REGISTRY
)
POLICY_LOADED_AT = Gauge(
    "notigate_policy_loaded_timestamp_seconds",
    "When the policy version in force was loaded (start-up or the last successful reload).",
    registry=REGISTRY,
)
POLICY_REFUSED = Info(
    "notigate_policy_refused", "The last policy bundle version a reload refused.", registry=REGISTRY
)
POLICY_REFUSED_AT = Gauge(
    "notigate_policy_refused_timestamp_seconds",
    "When a reload last refused a bundle; 0 if none was refused since start.",
    registry=REGISTRY,
)


def set_policy_loaded(version: str, at: dt.datetime) -> None:
    POLICY_LOADED.info({"version": version})
    POLICY_LOADED_AT.set(at.timestamp())


def set_policy_refused(version: str, at: dt.datetime) -> None:
    POLICY_REFUSED.info({"version": version})
    POLICY_REFUSED_AT.set(at.timestamp())


def record_outcome(outcome: Outcome, accepted_at: dt.datetime | None, now: dt.datetime) -> None:
    """Count a recorded delivery outcome; `accepted_at` is its notification's creation time."""
    claimed = outcome.delivery
    provider = outcome.provider or next((t.provider for t in reversed(outcome.tries) if t.provider), None)
    DELIVERIES.labels(claimed.channel, provider or "none", outcome.status).inc()
    for attempt in outcome.tries:
        if attempt.cost and attempt.provider:
            DELIVERY_COST.labels(claimed.channel, attempt.provider).inc(attempt.cost)
    if outcome.status == "retrying":
        RETRIES.labels(claimed.channel).inc()
    elif outcome.status == "dead":
        DEAD_LETTERS.inc()
    elif outcome.status == "delivered" and accepted_at is not None:
        if accepted_at.tzinfo is None:
            accepted_at = accepted_at.replace(tzinfo=dt.UTC)
        seconds = (now - accepted_at).total_seconds()
        ACCEPT_TO_DELIVERED.labels(claimed.tier or "none").observe(max(seconds, 0.0))


class Scrape(Collector):
    """What one scrape exports: this process's metrics plus the queue depths read from Redis now.

    Reads Redis with its own blocking client and short timeouts: the worker's metrics
    server calls it on its own thread, the API through `asyncio.to_thread`. A Redis that
    does not answer gives `notigate_redis_up 0` and no depths, never a failed scrape.
    """

    def __init__(self, redis_url: str, keys: Keys, queues: Sequence[str]) -> None:
        self.keys = keys
        self.queues = list(queues)
        self.redis: Redis = Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=1.0)

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        up = GaugeMetricFamily("notigate_redis_up", "1 if Redis answered this scrape's queue reads.")
        try:
            depths = self._depths()
        except (RedisError, OSError) as exc:
            log.warning("metrics: could not read queue depths from Redis: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "notigate_queue_depth", "Jobs waiting in each tier's queue (due or scheduled).", labels=["queue"]
        )
        for queue, value in depths.items():
            depth.add_metric([queue], value)
        yield depth

    def _depths(self) -> dict[str, int]:
        pipe: Any = self.redis.pipeline(transaction=False)
        for queue in self.queues:
            pipe.zcard(self.keys.queue(queue))
        return {q: int(n) for q, n in zip(self.queues, pipe.execute(), strict=True)}

    def close(self) -> None:
        self.redis.close()
