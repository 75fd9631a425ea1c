"""The Litestar application factory.

`create_app()` loads the policy through the checker's code path before anything is served:
a bundle `notigate check` rejects can never start a server. Built from settings, the app
has the whole gateway (intake, recipients, operations) behind API-key authentication; built
around a given `Gateway` without services, it serves the decision routes alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware

from gateway import heap
from gateway.api.activity_routes import activity_router
from gateway.api.auth import ApiKeyAuthentication
from gateway.api.bodies import GatewayRequest
from gateway.api.bundle_routes import bundle_router
from gateway.api.console_links import console_link_router, link_authenticator
from gateway.api.console_routes import console_router
from gateway.api.context import Gateway
from gateway.api.errors import EXCEPTION_HANDLERS
from gateway.api.health_routes import HealthRoutes
from gateway.api.inbox_routes import inbox_router
from gateway.api.intake_routes import intake_router
from gateway.api.openapi import assets_router, openapi_config
from gateway.api.ops_routes import ops_router
from gateway.api.policy_routes import policy_router
from gateway.api.schedule_routes import schedule_router
from gateway.api.status_routes import status_router
from gateway.api.tracking_routes import tracking_router
from gateway.api.users_routes import users_router
from gateway.errors import Unavailable
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate

log = logging.getLogger("gateway.api")


def app_from_env() -> Litestar:
    """The app as each of `notigate serve --processes N`'s processes builds it."""
    return create_app(Settings.from_env(), live=True)


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    services: Services | None = None,
    live: bool = False,
) -> Litestar:
    """Build the app; raises PolicyError (with every diagnostic) on a rejected policy bundle.

    `live` (what `notigate serve` builds) reloads the bundle on file changes and SIGHUP.
    """
    if gateway is None:
        settings = settings or Settings.from_env()
        services = services or Services(settings)
        gateway = Gateway(
            settings=settings,
            policy=services.policy,
            users=services.recipients,
            history=services.history,
            clock=services.clock,
            services=services,
        )
    # Most routes take an API key; the inbox's take a user's inbox token, the tracking
    # webhooks a provider's signature, health checks nothing: each says so in the OpenAPI.
    keyed: list[Any] = [
        policy_router(gateway),
        bundle_router(gateway.current_policy, gateway.settings.bundle_paths),
    ]
    handlers: list[Any] = [assets_router()]
    middleware: list[Any] = []
    on_startup: list[Callable[[], Awaitable[None]]] = []
    on_shutdown: list[Callable[[], Awaitable[None]]] = []
    if gateway.services is not None:
        full = gateway.services
        health = HealthRoutes(full)
        keyed += [intake_router(full), users_router(full), ops_router(full), schedule_router(full)]
        keyed += [activity_router(full), status_router(full), console_link_router(full)]
        handlers += [health.router, inbox_router(full), tracking_router(full), console_router()]
        middleware.append(
            DefineMiddleware(ApiKeyAuthentication, keys=full.api_keys, delegation=link_authenticator(full))
        )
        on_startup += [_schema_is_current(full), full.start]
        on_shutdown += [full.close, health.close]
        if live:
            on_startup += [_start_reloads(full), _settle_heap]
            on_shutdown.insert(0, full.bundle.stop)
    handlers.append(Router(path="/", route_handlers=keyed, security=[{"apiKey": []}]))
    return Litestar(
        route_handlers=handlers,
        cors_config=_cors(gateway.settings),
        middleware=middleware,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=GatewayRequest,
        request_max_body_size=gateway.settings.max_body_bytes,
        openapi_config=openapi_config(),
        # The process's logging is `notigate serve`'s (`cli.configure_logging`: the level of
        # NOTIGATE_LOG_LEVEL, one format). Litestar's default config would replace the root
        # logger's handlers and level when the app is built; unhandled errors are logged by
        # `internal_error` through the `gateway.api` logger.
        logging_config=None,
        debug=False,
    )


def _cors(settings: Settings) -> CORSConfig | None:
    """Browsers on the listed origins may call the API: meant for the inbox, whose tokens are
    made for browsers (API keys never belong in one). No origins listed, no CORS at all."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["authorization", "content-type", "last-event-id"],
        allow_credentials=False,  # tokens travel in a header or the query, never in cookies
        max_age=600,
    )


def _start_reloads(services: Services) -> Callable[[], Awaitable[None]]:
    async def start() -> None:
        services.bundle.start(services.settings.policy_reload)

    return start


async def _settle_heap() -> None:
    """Last at startup: what was built so far lives as long as the process (`gateway.heap`)."""
    heap.settle()


def _schema_is_current(services: Services) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        try:
            await migrate.require_current(services.database, "this gateway")
        except Unavailable:
            log.warning("the database is unreachable at startup; requests will get 503 until it is back")

    return check
