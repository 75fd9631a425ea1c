"""Crash safety with real processes: nothing accepted is lost, nothing is delivered twice.

Workers are real `notigate worker` processes. They are killed (exit 137, no cleanup) at
each point of the delivery path through failpoints; Redis is stopped mid-intake and comes
back empty; a second worker races the first. Every test then checks, address by address,
that each accepted intent was delivered exactly once (the dev provider writes each delivery
once per address, as an .eml file or a JSON line, and would refuse to write a second), and
nothing is left pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.store.tables import InboxItemRow
from tests.conftest import REPO, make_settings, open_services
from tests.harness import (
    ADA,
    DELIVERIES,
    JOBS,
    NOTIFICATIONS,
    accept,
    admin_key,
    client,
    count,
    eventually,
    like,
    store_user,
)
from tests.providers.outbox import per_delivery

INBOX = InboxItemRow.__table__  # type: ignore[attr-defined]
FINAL = ("delivered", "suppressed", "failed", "dead", "expired")


def worker(settings_env: dict[str, str], failpoints: str = "") -> subprocess.Popen[bytes]:
    """A real worker process; its log goes to a file beside the outbox, for a failing test to show."""
    env = {**os.environ, **settings_env, "NOTIGATE_FAILPOINTS": failpoints}
    log = Path(settings_env["NOTIGATE_OUTBOX"]).parent / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def env_of(services: Services, outbox: Path) -> dict[str, str]:
    s = services.settings
    return {
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "NOTIGATE_REDIS_PREFIX": s.redis_prefix,
        "NOTIGATE_OUTBOX": str(outbox),
        "NOTIGATE_JOB_TIMEOUT": "2",
        "NOTIGATE_RELAY_RECONCILE": "0.5",
        "NOTIGATE_PROVIDER_PROFILE": "dev",
        "NOTIGATE_POLICIES": str(REPO / "policies"),
    }


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def accept_many(services: Services, count_: int, *, users: int = 5) -> list[str]:
    for i in range(users):
        await store_user(services, {**ADA, "user_id": f"u_{i}"})
    token = await admin_key(services, f"producer-{uuid.uuid4().hex[:8]}")
    async with client(services, token) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/v1/intents",
                    json={
                        "event": "order.shipped",
                        "user_id": f"u_{i % users}",
                        "data": {"order_id": f"A-{i}", "carrier": "UPS"},
                    },
                )
                for i in range(count_)
            )
        )
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    return [r.json()["notification_id"] for r in responses]


async def all_final(services: Services) -> bool:
    async with services.database.connect() as connection:
        open_ = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(DELIVERIES)
            .where(DELIVERIES.c.status.not_in(("standby", *FINAL)))
        )
        undecided = await connection.scalar(
            sa.select(sa.func.count()).select_from(NOTIFICATIONS).where(NOTIFICATIONS.c.status == "undecided")
        )
    return open_ == 0 and undecided == 0


async def assert_exactly_once(
    services: Services, outbox: Path, notification_ids: list[str]
) -> dict[str, int]:
    """Every delivery of every accepted notification went out once to each of its addresses.

    Returns the number of addresses of each delivery.
    """
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.id, DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.notification_id
                ).where(DELIVERIES.c.notification_id.in_(notification_ids))
            )
        )
    assert {r.notification_id for r in rows} == set(notification_ids)  # none lost
    sent = [r for r in rows if r.status not in ("suppressed", "standby")]
    assert all(r.status == "delivered" for r in sent), Counter(r.status for r in sent)
    files = await asyncio.to_thread(_written, outbox)
    # In-app messages go to the inbox table (one row per delivery, by its primary key).
    async with services.database.connect() as connection:
        inbox_rows = Counter(
            r.notification_id
            for r in await connection.execute(
                sa.select(INBOX.c.notification_id).where(INBOX.c.notification_id.in_(notification_ids))
            )
        )
    expected = {r.id: 2 if r.channel == "push" else 1 for r in sent if r.channel != "in_app"}  # two devices
    assert files == expected  # exactly once per address: no loss, no duplicate
    in_app = Counter(r.notification_id for r in sent if r.channel == "in_app")
    assert inbox_rows == in_app
    return {**expected, **{r.id: 1 for r in sent if r.channel == "in_app"}}


async def open_deliveries(services: Services) -> str:
    """What is still open, for a failing test to show."""
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.attempts, DELIVERIES.c.detail
                )
                .where(DELIVERIES.c.status.not_in(("standby", *FINAL)))
                .limit(20)
            )
        )
    return "still open: " + "; ".join(f"{r.channel} {r.status} after {r.attempts}: {r.detail}" for r in rows)


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(folder.glob("worker-*.log")))


def _written(outbox: Path) -> dict[str, int]:
    return per_delivery(outbox)


@pytest.mark.parametrize("point", ["delivery.claimed", "delivery.sent", "delivery.recorded", "job.finished"])
async def test_a_worker_killed_at_any_point_yields_exactly_one_delivery(
    services: Services, tmp_path: Path, point: str
) -> None:
    outbox = tmp_path / "outbox"
    ids = await accept_many(services, 12)
    doomed = worker(env_of(services, outbox), failpoints=f"{point}=exit")
    try:
        try:
            # Waited for off the event loop: this process's own background writes (the
            # dispatcher marking jobs pushed) must be able to commit meanwhile, or on SQLite
            # they hold the write lock the worker needs to reach its failpoint.
            code = await asyncio.to_thread(doomed.wait, 60)
        except subprocess.TimeoutExpired:
            code = None
        # It died at the failpoint, as kill -9 would leave it.
        assert code == 137, _logs(outbox.parent)
    finally:
        stop(doomed)
    survivor = worker(env_of(services, outbox))
    try:
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    await assert_exactly_once(services, outbox, ids)


@pytest.mark.parametrize("point", ["delivery.claimed", "delivery.sent"])
async def test_a_worker_killed_while_flushing_a_batch_sends_it_once_with_every_item(
    services: Services, tmp_path: Path, point: str
) -> None:
    """R11 under a crash: the group taken by the dead worker's claim is sent once, whole."""
    outbox = tmp_path / "outbox"
    await store_user(services, ADA)
    closed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=330)  # their window closed 30 s ago
    ids = await accept(services, [like(n) for n in range(7)], closed)
    doomed = worker(env_of(services, outbox), failpoints=f"{point}=exit")
    try:
        assert await asyncio.to_thread(doomed.wait, 60) == 137, _logs(outbox.parent)  # off the loop, as above
    finally:
        stop(doomed)
    survivor = worker(env_of(services, outbox))
    try:
        await eventually(lambda: all_final(services), within=60, every=0.2)
    finally:
        stop(survivor)
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.id, DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.grouped_into
                ).where(DELIVERIES.c.notification_id.in_(ids))
            )
        )
        titles = [r.title for r in await connection.execute(sa.select(INBOX.c.title))]
    assert len(rows) == 14 and {r.status for r in rows} == {"delivered"}  # 7 push + 7 in-app, none lost
    leaders = {
        channel: {r.grouped_into for r in rows if r.channel == channel} for channel in ("push", "in_app")
    }
    assert all(len(found) == 1 for found in leaders.values()), leaders  # one message per channel
    assert per_delivery(outbox) == {next(iter(leaders["push"])): 2}  # once to each device, never twice
    assert titles == ["7 people liked your post"]


async def test_two_workers_racing_deliver_each_message_once(services: Services, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    ids = await accept_many(services, 150, users=10)
    # A relay that pushed every job twice: the same deliveries sit in two jobs each.
    async with services.database.begin() as connection:
        rows = list(await connection.execute(sa.select(JOBS)))
        await connection.execute(
            sa.insert(JOBS), [{**row._asdict(), "id": row.id + "x", "enqueued_at": None} for row in rows]
        )
    first, second = worker(env_of(services, outbox)), worker(env_of(services, outbox))
    try:
        try:
            await eventually(lambda: all_final(services), within=90, every=0.2)
        except AssertionError:
            raise AssertionError(f"{await open_deliveries(services)}\n{_logs(outbox.parent)}") from None
    finally:
        stop(first)
        stop(second)
    addresses = await assert_exactly_once(services, outbox, ids)
    async with services.database.connect() as connection:
        attempts = await connection.scalar(
            sa.text("SELECT count(*) FROM attempts WHERE outcome = 'delivered'")
        )
    assert attempts == sum(addresses.values())  # one successful send per address, whoever won the claim


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def test_redis_stopped_and_restarted_during_intake_loses_nothing(
    database_url: str, own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(outbox))
    services = await open_services(make_settings(database_url, own_redis.url, tmp_path))
    await services.start()
    survivor = None
    try:
        before = await accept_many(services, 10)
        own_redis.kill()  # gone, and it keeps nothing on disk
        during = await accept_many(services, 10)
        assert await count(services, NOTIFICATIONS, NOTIFICATIONS.c.status == "undecided") == 10
        own_redis.start()  # back, empty: no history, no queues, no jobs
        survivor = worker(env_of(services, outbox))
        await eventually(lambda: all_final(services), within=60, every=0.2)
        await assert_exactly_once(services, outbox, before + during)
    finally:
        if survivor is not None:
            stop(survivor)
        await services.close()


async def test_with_the_database_unreachable_intake_answers_503_and_keeps_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from gateway.redis_server import free_port

    services = await open_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", redis_server.url, tmp_path)
    )
    token = await admin_key(services)
    await services.close()
    down = make_settings(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere",
        redis_server.url,
        tmp_path,
        redis_prefix=services.settings.redis_prefix,
    )
    broken = Services(down, policy=services.policy)
    await broken.start()
    try:
        # Keys are looked up in the database too: a valid token is refused with 503, not 401.
        async with client(broken, token) as http:
            response = await http.post(
                "/v1/intents",
                json={
                    "event": "order.shipped",
                    "user_id": "u_1",
                    "data": {"order_id": "A", "carrier": "UPS"},
                },
            )
            dry = await http.post(
                "/v1/dry-run",
                json={
                    "intent": {"event": "order.shipped", "user_id": "u_1"},
                    "user": {"user_id": "u_1"},
                    "history": [],
                },
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert dry.status_code == 503
        history = await broken.redis.keys(f"{down.redis_prefix}:history:*")
        assert history == []  # nothing reserved, nothing to undo
    finally:
        await broken.close()
