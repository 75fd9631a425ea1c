"""Group commit of accepted intents: notification, deliveries and jobs in one transaction.

A request hands its rows to `IntakeWriter.submit()` and waits for *its* commit. One task
per process writes whatever has accumulated meanwhile in a single transaction (one row
per transaction costs ~1 ms on SQLite; a hundred rows cost barely more), so concurrent
intents share a commit without any being acknowledged before it.

Inside the transaction:
- idempotency keys are claimed with INSERT ... ON CONFLICT DO UPDATE ... WHERE the old
  claim has expired ... RETURNING: of two racing requests exactly one wins, the other is
  answered with the winner's notification id; duplicates within one batch are settled
  before the statement;
- queue jobs are formed across the whole batch, per tier: one job per delivery for
  `critical`, chunks of `jobs.chunk_size` deliveries for the others;
- the rows go in with executemany (SQLAlchemy Core: the ORM costs 2-3x here).
The jobs go to Redis after the commit (`gateway.queue.dispatch`); the outbox keeps them
until a worker has done them.
If the transaction fails, every request of the batch gets the error and nothing is stored.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ids import new_id
from gateway.store.bulk import insert_rows
from gateway.store.database import Database, Lane
from gateway.store.group_commit import GroupCommit
from gateway.store.sqlite_values import sqlite_time
from gateway.store.sqlite_writes import sqlite_driver
from gateway.store.tables import DeliveryRow, IdempotencyRow, JobRow, NotificationRow

notifications = NotificationRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
jobs = JobRow.__table__  # type: ignore[attr-defined]
idempotency = IdempotencyRow.__table__  # type: ignore[attr-defined]


# Built once, as a statement made per call costs more to construct than to run; `pairs`
# expands to the batch's (scope, key) pairs at execution.
_LOOKUP_KEYS = sa.select(
    idempotency.c.scope, idempotency.c.key, idempotency.c.notification_id, idempotency.c.created_at
).where(sa.tuple_(idempotency.c.scope, idempotency.c.key).in_(sa.bindparam("pairs", expanding=True)))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A delivery that needs a queue job, and how its tier wants jobs made."""

    delivery_id: str
    queue: str
    run_at: dt.datetime
    chunk_size: int
    priority: int


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    queue: str
    deliveries: list[str]
    run_at: dt.datetime
    priority: int


@dataclass(slots=True)
class Pending:
    """One intent's rows, waiting for the commit that stores them (the group commit's own
    future tells the intent when)."""

    notification: dict[str, Any]
    deliveries: list[dict[str, Any]]
    job_specs: list[JobSpec]
    idempotency: tuple[str, str] | None  # (scope, key)


@dataclass(frozen=True, slots=True)
class CommitResult:
    notification_id: str
    replay: bool  # the idempotency key was already claimed: this is the first notification's id
    jobs: tuple[NewJob, ...] = ()


class IntakeWriter:
    """Stores accepted intents through a group commit; see the module docstring."""

    def __init__(
        self,
        database: Database,
        *,
        idempotency_window: Callable[[], dt.timedelta],
        clock: Callable[[], dt.datetime],
        max_batch: int = 200,  # a commit in progress is what an urgent intent may wait for
        lane: Lane = "normal",  # of its ordinary commits; "background" in workers (bulk expansion)
    ) -> None:
        self.database = database
        self.idempotency_window = idempotency_window
        self.commit: GroupCommit[Pending, CommitResult] = GroupCommit(
            database, self._store, clock=clock, name="intake", max_batch=max_batch, lane=lane
        )
        # Urgent intents commit in a lane of their own: never in a batch behind ordinary ones,
        # and first at the write gate (`Database.begin`).
        self.urgent: GroupCommit[Pending, CommitResult] = GroupCommit(
            database, self._store, clock=clock, name="intake-urgent", max_batch=max_batch, lane="urgent"
        )

    async def start(self) -> None:
        await self.commit.start()
        await self.urgent.start()

    async def stop(self) -> None:
        await self.commit.stop()
        await self.urgent.stop()

    async def submit(self, pending: Pending, *, urgent: bool = False) -> CommitResult:
        return await (self.urgent if urgent else self.commit).submit(pending)

    async def _store(
        self, connection: AsyncConnection, batch: list[Pending], now: dt.datetime
    ) -> list[CommitResult]:
        replays = await self._claim_keys(connection, batch, now)
        stored = [p for i, p in enumerate(batch) if i not in replays]
        if stored:
            await insert_rows(connection, notifications, [p.notification for p in stored])
            await insert_rows(connection, deliveries, [row for p in stored for row in p.deliveries])
        new_jobs = form_jobs([spec for p in stored for spec in p.job_specs])
        await insert_jobs(connection, new_jobs, now)
        by_delivery = {d: job for job in new_jobs for d in job.deliveries}
        results = []
        for index, pending in enumerate(batch):
            if index in replays:
                results.append(CommitResult(replays[index], replay=True))
                continue
            own = {by_delivery[s.delivery_id].id: by_delivery[s.delivery_id] for s in pending.job_specs}
            results.append(CommitResult(pending.notification["id"], replay=False, jobs=tuple(own.values())))
        return results

    async def _claim_keys(
        self, connection: AsyncConnection, batch: list[Pending], now: dt.datetime
    ) -> dict[int, str]:
        """Claim idempotency keys; returns batch index -> the first notification's id, for replays."""
        first: dict[tuple[str, str], int] = {}
        followers: dict[int, tuple[str, str]] = {}
        for index, pending in enumerate(batch):
            if pending.idempotency is None:
                continue
            if pending.idempotency in first:
                followers[index] = pending.idempotency
            else:
                first[pending.idempotency] = index
        if not first:
            return {}
        claims = [(scope, key, batch[index].notification["id"]) for (scope, key), index in first.items()]
        winners = await _upsert_claims(connection, claims, now, now - self.idempotency_window())
        lost = [k for k in first if k not in winners]
        if lost:
            for row in await connection.execute(
                sa.select(idempotency.c.scope, idempotency.c.key, idempotency.c.notification_id).where(
                    sa.tuple_(idempotency.c.scope, idempotency.c.key).in_(lost)
                )
            ):
                winners[(row.scope, row.key)] = row.notification_id
        replays = {
            index: winners[key]
            for key, index in first.items()
            if winners[key] != batch[index].notification["id"]
        }
        replays.update({index: winners[key] for index, key in followers.items()})
        return replays

    async def committed(self, delivery_ids: Sequence[str]) -> set[str]:
        """Which of these deliveries were committed. A history reservation names its delivery
        id before the commit: this tells a reservation whose intent was stored from one left
        behind by a process that died before its commit."""
        if not delivery_ids:
            return set()
        async with self.database.connect() as connection:
            rows = await connection.execute(
                sa.select(deliveries.c.id).where(deliveries.c.id.in_(sorted(set(delivery_ids))))
            )
            return {r.id for r in rows}

    async def lookup_key(self, scope: str, key: str, now: dt.datetime) -> str | None:
        """The notification an unexpired idempotency key already names (a fast path for replays)."""
        return (await self.lookup_keys([(scope, key)], now)).get((scope, key))

    async def lookup_keys(
        self, pairs: Sequence[tuple[str, str]], now: dt.datetime
    ) -> dict[tuple[str, str], str]:
        """Of these (scope, key) pairs, the ones already claimed and unexpired, with their notification."""
        if not pairs:
            return {}
        since = now - self.idempotency_window()
        async with self.database.connect() as connection:
            if connection.dialect.name == "sqlite":
                driver = await sqlite_driver(connection)
                found = await driver.execute_fetchall(
                    _SQLITE_LOOKUP_KEYS, (msgspec.json.encode(list(pairs)).decode(), sqlite_time(since))
                )
                return {(scope, key): notification_id for scope, key, notification_id in found}
            rows = await connection.execute(_LOOKUP_KEYS, {"pairs": list(pairs)})
        return {(r.scope, r.key): str(r.notification_id) for r in rows if r.created_at >= since}


async def insert_jobs(
    connection: AsyncConnection,
    new_jobs: Sequence[NewJob],
    now: dt.datetime,
    *,
    created_at: dt.datetime | None = None,
) -> None:
    """Write queue jobs to the outbox, in the caller's transaction."""
    await insert_rows(
        connection,
        jobs,
        [
            {
                "id": j.id,
                "queue": j.queue,
                "deliveries": j.deliveries,
                "priority": j.priority,
                "run_at": j.run_at,
                "enqueued_at": None,
                "created_at": created_at or now,
            }
            for j in new_jobs
        ],
    )


def form_jobs(specs: list[JobSpec]) -> list[NewJob]:
    """Group deliveries into queue jobs: per queue, send time and tier, in chunks of the tier's size."""
    groups: dict[tuple[str, dt.datetime, int, int], list[str]] = defaultdict(list)
    for spec in specs:
        groups[(spec.queue, spec.run_at, spec.chunk_size, spec.priority)].append(spec.delivery_id)
    made = []
    for (queue, run_at, size, priority), ids in groups.items():
        for start in range(0, len(ids), max(1, size)):
            made.append(NewJob(new_id("j"), queue, ids[start : start + size], run_at, priority))
    return made


async def _upsert_claims(
    connection: AsyncConnection, claims: list[tuple[str, str, str]], now: dt.datetime, expired: dt.datetime
) -> dict[tuple[str, str], str]:
    """Claim each (scope, key) for its notification in one statement; returns the claims it
    won: inserted, or replacing one made before `expired`. A live claim of someone else's is
    left alone and not returned.

    On SQLite the statement is one fixed text with the claims as one JSON array: built and
    compiled per batch through SQLAlchemy, a hundred-row upsert (a bulk chunk's) cost about
    7 ms of CPU, spent while holding the database's one write lock."""
    if connection.dialect.name == "sqlite":
        driver = await sqlite_driver(connection)
        rows = await driver.execute_fetchall(
            _SQLITE_CLAIM, (msgspec.json.encode(claims).decode(), sqlite_time(now), sqlite_time(expired))
        )
        return {(scope, key): notification_id for scope, key, notification_id in rows}
    insert = postgresql.insert(idempotency)
    statement = (
        insert.values(
            [
                {"scope": scope, "key": key, "notification_id": nid, "created_at": now}
                for scope, key, nid in claims
            ]
        )
        .on_conflict_do_update(
            index_elements=[idempotency.c.scope, idempotency.c.key],
            set_={
                "notification_id": insert.excluded.notification_id,
                "created_at": insert.excluded.created_at,
            },
            where=idempotency.c.created_at < expired,
        )
        .returning(idempotency.c.scope, idempotency.c.key, idempotency.c.notification_id)
    )
    return {(row.scope, row.key): row.notification_id for row in await connection.execute(statement)}


# SQLite cannot take `(scope, key) IN (VALUES ...)` on the primary key: it read every
# claim in the table for each batch with two keys or more, a cost growing with the 24 hours
# of keys kept. The pairs as a JSON array, CROSS JOIN (SQLite's way of fixing the join
# order) making them the outer loop: one primary-key search per pair.
_SQLITE_LOOKUP_KEYS = """
SELECT i.scope, i."key", i.notification_id
  FROM json_each(?1) AS p CROSS JOIN idempotency_keys AS i
    ON i.scope = json_extract(p.value, '$[0]') AND i."key" = json_extract(p.value, '$[1]')
 WHERE i.created_at >= ?2
"""

# `WHERE true` lets SQLite's parser tell the SELECT's end from the upsert clause.
_SQLITE_CLAIM = """
INSERT INTO idempotency_keys (scope, "key", notification_id, created_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), ?2
  FROM json_each(?1) WHERE true
ON CONFLICT (scope, "key") DO UPDATE
   SET notification_id = excluded.notification_id, created_at = excluded.created_at
 WHERE idempotency_keys.created_at < ?3
RETURNING scope, "key", notification_id
"""
