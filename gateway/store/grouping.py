"""Digests in the store: one delivery sends its whole batch, and a digest carries what was folded into it.

A batched delivery (`deferred: batched`) waits under its batch key (user, event or category,
channel). The first delivery of a batch that a worker claims becomes its *leader*: in the
same transaction as its claim it takes every waiting item of its batch (up to the policy's
`max`) by a compare-and-set on `grouped_into`, and the items it took are `sending` with no
lease of their own. The grouped message goes out under the leader's id, and its outcome is
recorded on every member in the leader's outcome transaction.

Two leaders of one batch claimed at once (PostgreSQL) never wait for each other: a leader
locks the items it takes with `FOR UPDATE SKIP LOCKED`, so an item another claim holds is
left to that claim rather than waited for (waiting both ways would deadlock). SQLite has
one writer at a time and needs no lock.

Crash safety follows from the delivery rules (`gateway.store.claims`, `gateway.store.outcomes`): the group is
fixed by the claim's commit, so a leader reclaimed after its worker died reads back the
same group (`group_of`) and sends the same message under the same idempotency key; items
already taken can be neither lost (the leader's lease expires and it is sent again) nor
sent twice (a member is claimable only through its leader). Nothing that was not taken
waits for anyone: it stays open and is sent by its own job.

A capped message the policy folds into a digest (`overflow: digest`) is a suppressed
delivery waiting under the digest's fold key; the user's next digest on that channel takes
it the same way, and its items follow the digest's own in `batch.items`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.tables import DeliveryRow

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]

OPEN = ("pending", "scheduled", "retrying")
# How many folded messages one digest carries at most; older ones first.
FOLD_LIMIT = 100


def fold_key(user_id: str, digest_event: str) -> str:
    """Where a message folded into `digest_event` waits for the user's next one."""
    return f"{user_id}:digest:{digest_event}"


@dataclass(frozen=True, slots=True)
class Member:
    """A delivery sent as part of another's message."""

    delivery_id: str
    notification_id: str
    folded: bool = False  # a capped message folded into a digest, not an item of a batch


def leads(row: Any, digests: Collection[str]) -> bool:
    """Whether claiming this delivery for the first time gathers a group."""
    return row.grouped_into is None and (row.batch_key is not None or row.event in digests)


def claimable_alone(delivery_id: str, grouped_into: str | None) -> bool:
    """A member of someone else's group is sent only through its leader."""
    return grouped_into is None or grouped_into == delivery_id


async def gather(
    connection: AsyncConnection,
    leader: Any,
    now: dt.datetime,
    *,
    claimed_here: Collection[str],
    digests: Collection[str],
) -> tuple[Member, ...]:
    """Take the leader's waiting batch items and folded messages, and mark the leader as such.

    `claimed_here` are deliveries this very claim just took (a job may hold several items of
    one batch): they may join the group like open ones.
    """
    members: list[Member] = []
    if leader.batch_key is not None:
        members += await _take_batch(connection, leader, now, claimed_here)
    if leader.event in digests:
        members += await _take_folded(connection, leader, now)
    await connection.execute(
        sa.update(deliveries).where(deliveries.c.id == leader.id).values(grouped_into=leader.id)
    )
    return tuple(members)


async def group_of(connection: AsyncConnection, leader_id: str) -> tuple[Member, ...]:
    """A leader's group exactly as its first claim took it (for a resend or a retry)."""
    rows = await connection.execute(
        sa.select(deliveries.c.id, deliveries.c.notification_id, deliveries.c.status)
        .where(deliveries.c.grouped_into == leader_id, deliveries.c.id != leader_id)
        .order_by(deliveries.c.created_at, deliveries.c.id)
    )
    return tuple(Member(r.id, r.notification_id, folded=r.status == "suppressed") for r in rows)


async def _take_batch(
    connection: AsyncConnection, leader: Any, now: dt.datetime, claimed_here: Collection[str]
) -> list[Member]:
    closes = leader.batch_closes_at
    # Items of this window and of earlier ones still waiting (held by quiet hours, say),
    # once they are due or their window has closed: a full batch goes before its window
    # closes and takes the items waiting for it.
    horizon = max(now, closes) if closes is not None else now
    waiting = sa.or_(
        deliveries.c.status.in_(OPEN),
        sa.and_(deliveries.c.status == "sending", deliveries.c.id.in_(list(claimed_here))),
    )
    query = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.batch_key == leader.batch_key,
            deliveries.c.id != leader.id,
            deliveries.c.grouped_into.is_(None),
            waiting,
            sa.or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= horizon),
            sa.or_(deliveries.c.expires_at.is_(None), deliveries.c.expires_at > now),
        )
        .order_by(deliveries.c.created_at, deliveries.c.id)
        .limit(max((leader.batch_max or 1) - 1, 0))
        .with_for_update(skip_locked=True)
    )
    if closes is not None:
        query = query.where(
            sa.or_(deliveries.c.batch_closes_at.is_(None), deliveries.c.batch_closes_at <= closes)
        )
    ids = [r.id for r in await connection.execute(query)]
    if not ids:
        return []
    taken = await connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.grouped_into.is_(None), waiting)
        .values(
            status="sending",
            grouped_into=leader.id,
            lease_owner=None,
            lease_until=None,
            detail=f"grouped into delivery {leader.id}",
            updated_at=now,
        )
        .returning(deliveries.c.id, deliveries.c.notification_id, deliveries.c.created_at)
    )
    return [Member(r.id, r.notification_id) for r in sorted(taken, key=lambda r: (r.created_at, r.id))]


def folded_query(user_id: str, event: str, channel: str) -> sa.Select[tuple[str]]:
    """The messages folded for a digest, oldest first (on `ix_deliveries_batch_key_status`)."""
    return (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.batch_key == fold_key(user_id, event),
            deliveries.c.channel == channel,
            deliveries.c.status == "suppressed",
            deliveries.c.grouped_into.is_(None),
        )
        .order_by(deliveries.c.created_at, deliveries.c.id)
        .limit(FOLD_LIMIT)
        .with_for_update(skip_locked=True)
    )


async def _take_folded(connection: AsyncConnection, leader: Any, now: dt.datetime) -> list[Member]:
    ids = [r.id for r in await connection.execute(folded_query(leader.user_id, leader.event, leader.channel))]
    if not ids:
        return []
    taken = await connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.grouped_into.is_(None))
        .values(grouped_into=leader.id, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.notification_id, deliveries.c.created_at)
    )
    return [
        Member(r.id, r.notification_id, folded=True)
        for r in sorted(taken, key=lambda r: (r.created_at, r.id))
    ]
