"""Claims: how a worker takes a delivery before it calls a provider, and what a job has left.

Exactly once per address starts here (docs/architecture.md, rules 7, 9 and 11):
- a worker *claims* a delivery with a compare-and-set (`pending|scheduled|retrying ->
  sending`, with a lease) before it calls a provider; a second worker's claim finds the
  row taken and skips it;
- a delivery left `sending` by a worker that died is reclaimed once its lease expires
  (`Claimed.reclaimed`), so the pipeline can send it again with the same idempotency key or
  record it `unknown`;
- an open delivery is claimable only once due: a job that arrives early gives it a job at
  its time instead (`Claims.requeue`);
- the first item of a batch claimed leads it and takes its waiting items in the same
  transaction (`gateway.store.grouping`).
How the outcome of a claim is stored: `gateway.store.outcomes`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ids import new_id
from gateway.model import UserState
from gateway.store.database import Database
from gateway.store.grouping import OPEN, Member, claimable_alone, gather, group_of, leads
from gateway.store.intake import NewJob, insert_jobs
from gateway.store.recipients import load_users
from gateway.store.sqlite_values import SqliteRows, sqlite_time
from gateway.store.sqlite_writes import sqlite_driver
from gateway.store.tables import DeliveryRow, NotificationRow, UTCDateTime, not_indexed

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]

# A job may wake a hair before its time (Redis scores are whole milliseconds): that is on time.
ON_TIME = dt.timedelta(milliseconds=10)


def _due_at(
    status: str, send_at: dt.datetime | None, next_attempt_at: dt.datetime | None
) -> dt.datetime | None:
    """When an open delivery may be sent: a retry after its backoff, anything else at its send time."""
    return next_attempt_at if status == "retrying" else send_at


def _due(now: Any) -> sa.ColumnElement[bool]:
    """The same rule in SQL, for the compare-and-set claim: an early job never sends early."""
    return sa.case(
        (
            deliveries.c.status == "retrying",
            sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        ),
        else_=sa.or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= now),
    )


# The claim's statements are built once, their values bound per call: a worker claims for
# every job, and building the expression (and its cache key) cost more than running it.
# Parameter names differ from the columns' (an UPDATE reserves those for its SET clause).
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
_NOW = sa.bindparam("claim_now", type_=UTCDateTime())
_TAKEN = {
    "status": "sending",
    "lease_owner": sa.bindparam("claim_owner", type_=sa.String()),
    "lease_until": sa.bindparam("claim_until", type_=UTCDateTime()),
    "attempts": deliveries.c.attempts + 1,
    "updated_at": _NOW,
}
# The open deliveries of the job that are due: the usual case, the one statement of a claim.
_CLAIM_OPEN = (
    sa.update(deliveries)
    .where(
        deliveries.c.id.in_(_IDS),
        not_indexed(deliveries.c.status).in_(OPEN),
        sa.or_(deliveries.c.grouped_into.is_(None), deliveries.c.grouped_into == deliveries.c.id),
        _due(sa.bindparam("due_by", type_=UTCDateTime())),
    )
    .values(**_TAKEN)
    .returning(*deliveries.c)
)
# `_CLAIM_OPEN` on SQLite in one hop to the driver, returning only what a claim and its
# grouping read (`_CLAIMED`), the ids as one JSON array: through SQLAlchemy the claim took
# four hops and a type processor per column of every row it returned. `status || ''` is
# `not_indexed`; the statuses are `grouping.OPEN`; the CASE is `_due`.
_CLAIMED = SqliteRows(
    "ClaimedRow",
    [
        deliveries.c[name]
        for name in (
            *("id", "notification_id", "user_id", "event", "channel", "tier", "queue", "template"),
            *("providers", "recipients", "chain_position", "attempts", "send_at", "expires_at"),
            *("fingerprint", "created_at", "grouped_into", "batch_key", "batch_max", "batch_closes_at"),
        )
    ],
)
_SQLITE_CLAIM_OPEN = (
    """
UPDATE deliveries
   SET status = 'sending', lease_owner = ?2, lease_until = ?3, attempts = deliveries.attempts + 1,
       updated_at = ?4
  FROM json_each(?1) AS j
 WHERE deliveries.id = j.value
   AND deliveries.status || '' IN ('pending', 'scheduled', 'retrying')
   AND (deliveries.grouped_into IS NULL OR deliveries.grouped_into = deliveries.id)
   AND CASE WHEN deliveries.status = 'retrying'
            THEN deliveries.next_attempt_at IS NULL OR deliveries.next_attempt_at <= ?5
            ELSE deliveries.send_at IS NULL OR deliveries.send_at <= ?5 END
RETURNING """
    + _CLAIMED.select  # the column names are this module's, never input
)


async def _claim_open(connection: AsyncConnection, ids: list[str], values: dict[str, Any]) -> Any:
    """`_CLAIM_OPEN`'s rows: the deliveries of `ids` it took."""
    if connection.dialect.name != "sqlite":
        return await connection.execute(_CLAIM_OPEN, {**values, "ids": ids})
    driver = await sqlite_driver(connection)
    found = await driver.execute_fetchall(
        _SQLITE_CLAIM_OPEN,
        (
            msgspec.json.encode(list(dict.fromkeys(ids))).decode(),
            values["claim_owner"],
            sqlite_time(values["claim_until"]),
            sqlite_time(values["claim_now"]),
            sqlite_time(values["due_by"]),
        ),
    )
    return [_CLAIMED.of(r) for r in found]


# Left `sending` by a worker whose lease is over: reclaimed, and said so.
_RECLAIM = (
    sa.update(deliveries)
    .where(deliveries.c.id.in_(_IDS), deliveries.c.status == "sending", deliveries.c.lease_until < _NOW)
    .values(**_TAKEN)
    .returning(*deliveries.c)
)


def is_expired(row: Any, now: dt.datetime) -> bool:
    """Past its tier's expiry: dropped as `expired`, never sent late (nor reopened)."""
    return row.expires_at is not None and now >= row.expires_at


def _orphaned(status: str, lease_until: dt.datetime | None, now: dt.datetime) -> bool:
    """Left `sending` by a worker whose lease is over: free to reclaim."""
    return status == "sending" and lease_until is not None and lease_until < now


@dataclass(frozen=True, slots=True)
class JobNotification:
    """What sending a delivery reads of its notification: the template's data and locale, and
    what was decided (priority, category, rule) and when it was accepted."""

    id: str
    event: str
    data: dict[str, Any] | None
    locale: str | None
    priority: str
    category: str | None
    rule: str | None
    created_at: dt.datetime | None  # NOT NULL in the table; typed as the read gives it


@dataclass(frozen=True, slots=True)
class Claimable:
    """What a job finds: deliveries to send now, and open ones it reached before their time;
    with the notifications and users behind those to send now, read at the same time."""

    now: list[tuple[str, str, str]]  # (delivery, notification, user)
    early: list[tuple[str, str, dt.datetime]]  # (delivery, queue, due at)
    notifications: dict[str, JobNotification] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)  # by id, as stored now


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    notification_id: str
    user_id: str
    event: str
    channel: str
    tier: str | None
    queue: str | None
    template: str | None
    providers: list[str]
    recipients: int
    chain_position: int | None
    attempts: int  # including this one
    send_at: dt.datetime | None
    expires_at: dt.datetime | None
    fingerprint: str | None
    owner: str
    reclaimed: bool  # a previous worker died while sending it
    members: tuple[Member, ...] = ()  # deliveries this one's message carries too (a batch, a digest)


class _JobRow(NamedTuple):
    """One delivery of a job, as the job read finds it, with its notification (if stored)."""

    id: str
    user_id: str
    status: str
    queue: str | None
    send_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    lease_until: dt.datetime | None
    grouped_into: str | None
    notification_id: str
    notification: JobNotification | None


_JOB_READ_COLUMNS = (
    deliveries.c.id,
    deliveries.c.user_id,
    deliveries.c.status,
    deliveries.c.queue,
    deliveries.c.send_at,
    deliveries.c.next_attempt_at,
    deliveries.c.lease_until,
    deliveries.c.grouped_into,
    deliveries.c.notification_id,
    notifications.c.id,
    notifications.c.event,
    notifications.c.data,
    notifications.c.locale,
    notifications.c.priority,
    notifications.c.category,
    notifications.c.rule,
    notifications.c.created_at,
)
# One read for a job: its deliveries beside what sending them reads of their notifications.
_JOB_READ = (
    sa.select(*_JOB_READ_COLUMNS)
    .select_from(deliveries.outerjoin(notifications, notifications.c.id == deliveries.c.notification_id))
    .where(deliveries.c.id.in_(_IDS))
)
# The same on SQLite in one hop to the driver, the ids as one JSON array (CROSS JOIN makes
# them the outer loop: one primary-key search each), read as SQLAlchemy would (`SqliteRows`).
# Through SQLAlchemy the read took four hops and a type processor per column of every row.
_JOB_READ_ROWS = SqliteRows("JobRead", _JOB_READ_COLUMNS)
_SQLITE_JOB_READ = (
    "SELECT "  # noqa: S608 (the column names are this module's, never input)
    + _JOB_READ_ROWS.select
    + """
  FROM json_each(?1) AS j CROSS JOIN deliveries ON deliveries.id = j.value
  LEFT JOIN notifications ON notifications.id = deliveries.notification_id
"""
)


async def _job_rows(connection: AsyncConnection, ids: Sequence[str]) -> list[_JobRow]:
    once = list(dict.fromkeys(ids))
    if connection.dialect.name == "sqlite":
        driver = await sqlite_driver(connection)
        found = await driver.execute_fetchall(_SQLITE_JOB_READ, (msgspec.json.encode(once).decode(),))
        return [_job_row(_JOB_READ_ROWS.values(r)) for r in found]
    return [_job_row(r) for r in await connection.execute(_JOB_READ, {"ids": once})]


def _job_row(r: Sequence[Any]) -> _JobRow:
    notified = None
    if r[9] is not None:
        notified = JobNotification(
            id=r[9],
            event=r[10],
            data=r[11],
            locale=r[12],
            priority=r[13],
            category=r[14],
            rule=r[15],
            created_at=r[16],
        )
    return _JobRow(
        id=r[0],
        user_id=r[1],
        status=r[2],
        queue=r[3],
        send_at=r[4],
        next_attempt_at=r[5],
        lease_until=r[6],
        grouped_into=r[7],
        notification_id=r[8],
        notification=notified,
    )


class Claims:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def claim(
        self,
        ids: Sequence[str],
        owner: str,
        lease: dt.timedelta,
        now: dt.datetime,
        *,
        digests: Collection[str] = (),
    ) -> list[Claimed]:
        """Take the deliveries that are free to send (or whose sender died); skip the rest."""
        async with self.database.begin() as connection:
            taken = await self.claim_in(connection, ids, owner, now + lease, now, digests=digests)
        return [c for c in taken if c is not None]

    async def claim_in(
        self,
        connection: AsyncConnection,
        ids: Sequence[str],
        owner: str,
        until: dt.datetime,
        now: dt.datetime,
        *,
        digests: Collection[str] = (),
    ) -> list[Claimed | None]:
        """Claim inside a (group) transaction; one result per id, None where the claim lost.

        `digests` are the events whose deliveries carry the messages folded into them
        (`overflow: digest`); a batched delivery claimed first gathers its batch
        (`gateway.store.grouping`), and an item another one gathered is left out.
        """
        if not ids:
            return []
        # One statement in the usual case: the open deliveries are taken by the first UPDATE,
        # and only what it left (taken by another worker, done, or orphaned) is tried again as
        # a reclaim. What the claims return is the row as claimed (RETURNING), never a read
        # from before: another worker may have claimed, grouped and released it meanwhile.
        values = {"claim_owner": owner, "claim_until": until, "claim_now": now}
        result = await _claim_open(connection, list(ids), {**values, "due_by": now + ON_TIME})
        taken: dict[str, Any] = {r.id: r for r in result}
        stale: set[str] = set()
        if left := [i for i in dict.fromkeys(ids) if i not in taken]:
            result = await connection.execute(_RECLAIM, {**values, "ids": left})
            reclaimed = {r.id: r for r in result}
            stale = set(reclaimed)
            taken.update(reclaimed)
        once = list(dict.fromkeys(ids))  # an id twice in one claim batch is claimed once
        groups = await _groups(connection, [taken[i] for i in once if i in taken], set(taken), now, digests)
        claimed: list[Claimed | None] = []
        for i in ids:
            r = taken.pop(i, None)
            if r is None or i not in groups:
                claimed.append(None)
                continue
            claimed.append(
                Claimed(
                    id=r.id,
                    notification_id=r.notification_id,
                    user_id=r.user_id,
                    event=r.event,
                    channel=r.channel,
                    tier=r.tier,
                    queue=r.queue,
                    template=r.template,
                    providers=list(r.providers or []),
                    recipients=r.recipients,
                    chain_position=r.chain_position,
                    attempts=r.attempts,  # already counting this claim
                    send_at=r.send_at,
                    expires_at=r.expires_at,
                    fingerprint=r.fingerprint,
                    owner=owner,
                    reclaimed=r.id in stale,
                    members=groups[r.id],
                )
            )
        return claimed

    async def claimable(self, ids: Sequence[str], now: dt.datetime) -> Claimable:
        """What a job still has to do: open deliveries that are due, and those it came too early for.

        A job can arrive early: a duplicate of a retry's job, a re-pushed or rescued job, or
        a clock a little ahead. Early deliveries are neither sent nor dropped.
        """
        if not ids:
            return Claimable([], [])
        async with self.database.connect() as connection:
            todo = Claimable([], [])
            for r in await _job_rows(connection, ids):
                if not claimable_alone(r.id, r.grouped_into):
                    continue  # its batch's leader sends it
                if r.status in OPEN:
                    due = _due_at(r.status, r.send_at, r.next_attempt_at)
                    if due is not None and due > now + ON_TIME:
                        todo.early.append((r.id, r.queue or "standard", due))
                        continue
                elif not _orphaned(r.status, r.lease_until, now):
                    continue  # settled, or another worker's lease still runs
                todo.now.append((r.id, r.notification_id, r.user_id))
                if r.notification is not None:
                    todo.notifications[r.notification.id] = r.notification
            if todo.now:  # then the users, on the same connection
                todo.users.update(await load_users(connection, [u for _, _, u in todo.now]))
            return todo

    async def requeue(self, early: Sequence[tuple[str, str, dt.datetime]], now: dt.datetime) -> list[NewJob]:
        """Give deliveries a job came too early for one at their time (a claim makes extras harmless)."""
        by_slot: dict[tuple[str, dt.datetime], list[str]] = {}
        for delivery_id, queue, due in early:
            by_slot.setdefault((queue, due), []).append(delivery_id)
        new_jobs = [NewJob(new_id("j"), queue, ids, due, 0) for (queue, due), ids in by_slot.items()]
        async with self.database.begin() as connection:
            await insert_jobs(connection, new_jobs, now)
        return new_jobs

    async def notifications(self, ids: Sequence[str]) -> dict[str, Any]:
        """The notifications (event data, locale, ...) behind claimed deliveries."""
        async with self.database.connect() as connection:
            return {
                r.id: r
                for r in await connection.execute(
                    sa.select(notifications).where(notifications.c.id.in_(list(set(ids))))
                )
            }


async def _groups(
    connection: AsyncConnection,
    claimed: Sequence[Any],
    taken: set[str],
    now: dt.datetime,
    digests: Collection[str],
) -> dict[str, tuple[Member, ...]]:
    """Each claimed delivery's group (mostly none); a claimed item another one took is left out."""
    groups: dict[str, tuple[Member, ...]] = {}
    absorbed: set[str] = set()
    # Oldest first, so the batch's first item leads when one job holds several of them.
    for row in sorted(claimed, key=lambda r: (r.created_at, r.id)):
        if row.id in absorbed:
            continue
        if row.grouped_into == row.id:
            groups[row.id] = await group_of(connection, row.id)
        elif leads(row, digests) and not is_expired(row, now):  # an expired one takes nobody down with it
            groups[row.id] = members = await gather(
                connection, row, now, claimed_here=taken - absorbed - {row.id}, digests=digests
            )
            absorbed |= {m.delivery_id for m in members}
        else:
            groups[row.id] = ()
    return groups
