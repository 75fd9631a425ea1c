"""Helpers for tests that run the whole gateway in-process: HTTP client, keys, workers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import sqlalchemy as sa
from litestar import Litestar

from gateway.api.app import create_app
from gateway.fanout import BulkFanout
from gateway.model import UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.queue.worker import WorkerProcess
from gateway.services import Services
from gateway.settings import Settings
from gateway.store.claims import Claimed
from gateway.store.tables import DeliveryRow, JobRow, NotificationRow

ADA = {
    "user_id": "u_ada",
    "timezone": "Europe/Paris",
    "quiet_hours": {"start": "00:00", "end": "00:00"},
    "contacts": {
        "email": "ada@example.com",
        "phone": "+33612345678",
        "devices": [
            {"platform": "ios", "token": "ios-token-ada-0001"},
            {"platform": "android", "token": "android-token-ada-0002"},
        ],
    },
}


async def admin_key(services: Services, name: str = "admin", **options: Any) -> str:
    _, token = await services.api_keys.create(
        name,
        options.pop("events", ["*"]),
        admin=options.pop("admin", True),
        rate=options.pop("rate", 10_000.0),
        burst=options.pop("burst", 20_000),
        now=dt.datetime.now(dt.UTC),
    )
    return token


# The app each Services serves, with the settings and policy it was built from.
_apps: weakref.WeakKeyDictionary[Services, tuple[Settings, CompiledPolicy, Litestar]] = (
    weakref.WeakKeyDictionary()
)


def app_of(services: Services) -> Litestar:
    """The gateway's app over `services`, built once and served to every client, as one
    process serves one app. Building one costs ~60 ms of CPU (Litestar registers every route
    and its OpenAPI models); tests open ~1,300 clients a run. A test that replaces the
    settings or the policy gets a new app; one that wants its own calls `create_app`."""
    built = _apps.get(services)
    if built is None or built[0] is not services.settings or built[1] is not services.policy:
        built = (services.settings, services.policy, create_app(services.settings, services=services))
        _apps[services] = built
    return built[2]


@contextlib.asynccontextmanager
async def client(services: Services, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    app = app_of(services)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as http:
        yield http


async def store_user(services: Services, user: dict[str, Any] | None = None) -> None:
    import msgspec

    await services.recipients.put_user(msgspec.convert(user or ADA, UserState), dt.datetime.now(dt.UTC))


@contextlib.asynccontextmanager
async def running_worker(services: Services, **options: Any) -> AsyncIterator[WorkerProcess]:
    """A worker with its own connections (as another process would have), run as a task."""
    own = Services(services.settings, policy=services.policy, clock=services.clock)
    process = WorkerProcess(services.settings, services=own, **options)
    task = asyncio.create_task(process.run())
    try:
        yield process
    finally:
        process.stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0, every: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


async def delivery_statuses(services: Services, notification_id: str) -> dict[str, str]:
    table = DeliveryRow.__table__  # type: ignore[attr-defined]
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(table.c.channel, table.c.status).where(table.c.notification_id == notification_id)
        )
        return {r.channel: r.status for r in rows}


async def count(services: Services, table: Any, *where: Any) -> int:
    async with services.database.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)


NOTIFICATIONS = NotificationRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
JOBS = JobRow.__table__  # type: ignore[attr-defined]


def like(n: int) -> dict[str, Any]:
    """The n-th like of Ada's post, from a different fan each time."""
    return {
        "event": "social.like",
        "user_id": "u_ada",
        "data": {
            "actor_id": f"u_fan{n}",
            "actor_name": f"Fan {n}",
            "post_title": "My first marathon",
            "post_url": "https://social.example.com/p/9",
        },
    }


async def accept(services: Services, intents: list[dict[str, Any]], at: dt.datetime | None) -> list[str]:
    """Accept intents one after another, as of `at` (None: now)."""
    services.clock.now = at  # type: ignore[attr-defined]
    try:
        token = await admin_key(services, f"producer-{uuid.uuid4().hex[:8]}")
        ids = []
        async with client(services, token) as http:
            for intent in intents:
                response = await http.post("/v1/intents", json=intent)
                assert response.status_code == 202, response.text
                ids.append(response.json()["notification_id"])
        return ids
    finally:
        services.clock.now = None  # type: ignore[attr-defined]


def bulk_fanout(
    services: Services, owner: str = "test", *, expand_backlog: int = 100_000, chunk: int = 100
) -> BulkFanout:
    """A worker's bulk expander on the test's services (`BulkFanout.expand_one` to run it once)."""
    return BulkFanout(
        store=services.bulk,
        intake=services.intake,
        redis=services.redis,
        keys=services.keys,
        queues=lambda: [t.queue for t in services.policy.tiers.values()],
        owner=owner,
        clock=services.clock,
        lease=dt.timedelta(seconds=30),
        expand_backlog=expand_backlog,
        chunk=chunk,
        idle=0.05,
    )


def a_claim(**fields: Any) -> Claimed:
    """A claimed email delivery as a worker holds it, with `fields` changed: for tests of
    what is decided from a claim (outcomes, metrics) without a database."""
    claim: dict[str, Any] = {
        "id": "d_1",
        "notification_id": "n_1",
        "user_id": "u_ada",
        "event": "order.shipped",
        "channel": "email",
        "tier": "standard",
        "queue": "default",
        "template": None,
        "providers": ["sendgrid", "smtp"],
        "recipients": 1,
        "chain_position": None,
        "attempts": 1,
        "send_at": None,
        "expires_at": None,
        "fingerprint": None,
        "owner": "test",
        "reclaimed": False,
    }
    return Claimed(**(claim | fields))
