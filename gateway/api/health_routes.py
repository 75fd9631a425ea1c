"""Probes and metrics for whatever runs the gateway: `/healthz`, `/readyz`, `/metrics`.

All three are open (no API key: their router is marked `opt=PUBLIC`, see
`gateway.api.auth`) and outside `/v1`.
`/healthz` says the process answers and does no I/O, so a slow database never gets a live
process restarted; `/readyz` says whether it can serve intake now (store, Redis, a loaded
policy), so a load balancer stops sending work while a dependency is down. Neither raises:
a failed check is a 503 naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import msgspec
from litestar import Response, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.auth import PUBLIC
from gateway.metrics import Scrape
from gateway.services import Services

# Litestar appends `; charset=utf-8` to every text/ type: given prometheus_client's own
# CONTENT_TYPE_LATEST, which names it already, the header would carry it twice.
EXPOSITION = CONTENT_TYPE_LATEST.split("; charset=")[0]
CHECK_TIMEOUT = 2.0  # seconds per check: a probe must answer before the prober gives up


class Check(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    detail: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # ready, unready
    checks: dict[str, Check]


class HealthRoutes:
    """The routes, and the blocking Redis client `/metrics` reads queue depths with."""

    def __init__(self, services: Services) -> None:
        self.services = services
        queues = sorted({t.queue for t in services.policy.tiers.values()})
        self.scrape = Scrape(services.settings.redis_url, services.keys, queues)
        self.router = Router(
            path="/",
            tags=["operations"],
            route_handlers=[self._healthz(), self._readyz(), self._metrics()],
            security=[{}],
            opt=PUBLIC,
        )

    async def close(self) -> None:
        self.scrape.close()

    def _healthz(self) -> HTTPRouteHandler:
        @get(
            "/healthz",
            summary="Liveness: the process answers (no I/O)",
            description='Always `{"status": "ok"}` while the process serves: a slow database '
            "never gets a live process restarted. Open, no key.",
            cache=False,
        )
        async def healthz() -> Health:
            return Health(status="ok")

        return healthz

    def _readyz(self) -> HTTPRouteHandler:
        services = self.services

        @get(
            "/readyz",
            summary="Readiness: store, Redis and policy",
            description="200 when the process can serve intake now; 503 with the same body, naming "
            f"each failed check, otherwise (each check answers within {CHECK_TIMEOUT:g} s). Open, no key.",
            cache=False,
            responses={503: ResponseSpec(data_container=Readiness, description="A check failed")},
        )
        async def readyz() -> Response[Readiness]:
            checks = dict(
                zip(
                    ("store", "redis", "policy"),
                    await asyncio.gather(_store(services), _redis(services), _policy(services)),
                    strict=True,
                )
            )
            ready = all(c.ok for c in checks.values())
            return Response(
                Readiness(status="ready" if ready else "unready", checks=checks),
                status_code=200 if ready else 503,
            )

        return readyz

    def _metrics(self) -> HTTPRouteHandler:
        scrape = self.scrape

        @get(
            "/metrics",
            summary="Prometheus metrics (text exposition format)",
            description="The API process's counters and histograms, and the queues' depths read "
            "from Redis, in Prometheus' text format. Open, no key: serve it on a private network.",
            cache=False,
            media_type=EXPOSITION,
        )
        async def metrics() -> Response[bytes]:
            body = await asyncio.to_thread(generate_latest, scrape)
            return Response(body, media_type=EXPOSITION)

        return metrics


async def _timed(name: str, probe: Awaitable[object]) -> Check | object:
    try:
        return await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except TimeoutError:
        return Check(ok=False, detail=f"{name} did not answer within {CHECK_TIMEOUT:g}s")
    except Exception as exc:  # a probe reports, it never raises
        return Check(ok=False, detail=f"{name} unreachable ({type(exc).__name__})")


async def _store(services: Services) -> Check:
    answer = await _timed("the database", services.database.ping())
    if isinstance(answer, Check):
        return answer
    if answer is True:
        return Check(ok=True, detail="ok")
    return Check(ok=False, detail="the database is unreachable")


async def _redis(services: Services) -> Check:
    answer = await _timed("Redis", services.redis.ping())
    if isinstance(answer, Check):
        return answer
    return Check(ok=True, detail="ok")


async def _policy(services: Services) -> Check:
    try:
        version = services.current_policy().version
    except Exception as exc:  # a probe reports, it never raises
        return Check(ok=False, detail=f"no policy loaded ({type(exc).__name__})")
    if not version:
        return Check(ok=False, detail="no policy loaded")
    return Check(ok=True, detail=f"version {version}")
