"""Deliveries as workers see them: claim, record the outcome, fall back, dead-letter, read.

Exactly once per address rests on three rules:
1. A worker *claims* a delivery with a compare-and-set (`pending|scheduled|retrying ->
   sending`, with a lease) before it calls a provider; a second worker's claim finds the
   row taken and skips it.
2. It *records* the outcome (and any follow-up: a retry job, the next fallback channel, a
   dead letter) in one transaction, guarded by its lease, before the queue job ends.
3. A delivery left `sending` by a worker that died is reclaimed once its lease expires and
   sent again with the same idempotency key (the delivery id), which providers that
   support one use to drop the repeat; for a provider without one, the delivery is
   recorded `unknown` (reason `outcome_unknown`) instead of risking a second message, as
   when such a provider times out after the request went out.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ids import new_id
from gateway.model import (
    AttemptRecord,
    ChannelCost,
    CostSource,
    DeadLetter,
    DeadLetterPage,
    DeliveryStatus,
    NotificationStatus,
    TrackingEvent,
)
from gateway.store.bulk import insert_rows
from gateway.store.database import Database
from gateway.store.grouping import Member, claimable_alone, gather, group_of, leads
from gateway.store.intake import NewJob, insert_jobs
from gateway.store.tables import (
    AttemptRow,
    DeadLetterRow,
    DeliveryEventRow,
    DeliveryRow,
    JobRow,
    NotificationRow,
)

log = logging.getLogger(__name__)

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
attempts = AttemptRow.__table__  # type: ignore[attr-defined]
jobs = JobRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]
dead_letters = DeadLetterRow.__table__  # type: ignore[attr-defined]
delivery_events = DeliveryEventRow.__table__  # type: ignore[attr-defined]

OPEN = ("pending", "scheduled", "retrying")
# A job may wake a hair before its time (Redis scores are whole milliseconds): that is on time.
ON_TIME = dt.timedelta(milliseconds=10)


def _due_at(
    status: str, send_at: dt.datetime | None, next_attempt_at: dt.datetime | None
) -> dt.datetime | None:
    """When an open delivery may be sent: a retry after its backoff, anything else at its send time."""
    return next_attempt_at if status == "retrying" else send_at


def _due(now: dt.datetime) -> sa.ColumnElement[bool]:
    """The same rule in SQL, for the compare-and-set claim: an early job never sends early."""
    return sa.case(
        (
            deliveries.c.status == "retrying",
            sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        ),
        else_=sa.or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= now),
    )


def _expired(row: Any, now: dt.datetime) -> bool:
    return row.expires_at is not None and now >= row.expires_at


def _orphaned(row: Any, now: dt.datetime) -> bool:
    """Left `sending` by a worker whose lease is over: free to reclaim."""
    return row.status == "sending" and row.lease_until is not None and row.lease_until < now


@dataclass(frozen=True, slots=True)
class Claimable:
    """What a job finds: deliveries to send now, and open ones it reached before their time."""

    now: list[tuple[str, str, str]]  # (delivery, notification, user)
    early: list[tuple[str, str, dt.datetime]]  # (delivery, queue, due at)


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


@dataclass(frozen=True, slots=True)
class Try:
    """One call to one provider."""

    provider: str | None
    outcome: str  # delivered, retryable, permanent, expired, skipped, unknown (superseded when stored)
    error: str | None = None
    provider_message_id: str | None = None
    duration_ms: float | None = None
    at: dt.datetime | None = None  # when the call was made; None: when the outcome is recorded
    segments: int | None = None
    cost: float | None = None  # USD, for a delivered try: reported by the provider, else configured
    cost_source: CostSource | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a claimed delivery, and what must follow."""

    delivery: Claimed
    status: str  # delivered, retrying, dead, failed, expired, unknown
    tries: Sequence[Try] = ()
    provider: str | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    error: str | None = None
    retry_at: dt.datetime | None = None
    fall_back: bool = False
    # Nothing was sent: every provider was paused, open or saturated. The claim's attempt
    # is given back, so waiting on a provider never spends the tier's max_attempts.
    waited: bool = False


@dataclass
class Applied:
    jobs: list[NewJob] = field(default_factory=list)
    activated: list[str] = field(default_factory=list)  # standby deliveries now pending


class DeliveryStore:
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
        rows = {
            r.id: r for r in await connection.execute(sa.select(deliveries).where(deliveries.c.id.in_(ids)))
        }
        fresh = [i for i, r in rows.items() if r.status in OPEN and claimable_alone(r)]
        stale = [i for i, r in rows.items() if _orphaned(r, now)]
        # What the claims return is the row as claimed, not as first read: between the two,
        # another worker may have claimed, grouped and released it.
        taken: dict[str, Any] = {}
        values = {
            "status": "sending",
            "lease_owner": owner,
            "lease_until": until,
            "attempts": deliveries.c.attempts + 1,
            "updated_at": now,
        }
        alone = sa.or_(deliveries.c.grouped_into.is_(None), deliveries.c.grouped_into == deliveries.c.id)
        if fresh:
            result = await connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.id.in_(fresh), deliveries.c.status.in_(OPEN), alone, _due(now + ON_TIME))
                .values(**values)
                .returning(*deliveries.c)
            )
            taken.update((r.id, r) for r in result)
        if stale:
            result = await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.id.in_(stale),
                    deliveries.c.status == "sending",
                    deliveries.c.lease_until < now,
                )
                .values(**values)
                .returning(*deliveries.c)
            )
            taken.update((r.id, r) for r in result)
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
            rows = await connection.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.notification_id,
                    deliveries.c.user_id,
                    deliveries.c.status,
                    deliveries.c.queue,
                    deliveries.c.send_at,
                    deliveries.c.next_attempt_at,
                    deliveries.c.lease_until,
                    deliveries.c.grouped_into,
                ).where(deliveries.c.id.in_(ids))
            )
            todo = Claimable([], [])
            for r in rows:
                if not claimable_alone(r):
                    continue  # its batch's leader sends it
                if r.status in OPEN:
                    due = _due_at(r.status, r.send_at, r.next_attempt_at)
                    if due is not None and due > now + ON_TIME:
                        todo.early.append((r.id, r.queue or "standard", due))
                        continue
                elif not _orphaned(r, now):
                    continue
                todo.now.append((r.id, r.notification_id, r.user_id))
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

    async def apply(
        self, connection: AsyncConnection, outcomes: Sequence[Outcome], now: dt.datetime
    ) -> list[Applied]:
        """Record outcomes with their follow-ups; runs inside a (group) transaction. One result each."""
        results = [Applied() for _ in outcomes]
        rows: list[dict[str, Any]] = []
        for outcome, applied in zip(outcomes, results, strict=True):
            claimed = outcome.delivery
            values: dict[str, Any] = {
                "status": outcome.status,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": now,
            }
            if outcome.status in ("delivered", "unknown"):
                values.update(provider=outcome.provider, provider_message_id=outcome.provider_message_id)
            if outcome.status != "delivered":
                values.update(reason=outcome.reason, detail=outcome.error)
            if outcome.status == "retrying":
                values["next_attempt_at"] = outcome.retry_at
            if outcome.waited:
                values["attempts"] = deliveries.c.attempts - 1
            recorded = await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.id == claimed.id,
                    deliveries.c.status == "sending",
                    deliveries.c.lease_owner == claimed.owner,
                )
                .values(**values)
            )
            if not recorded.rowcount:
                # Our lease ran out and another worker took the delivery over: its outcome
                # stands. Our tries are kept for the audit, marked superseded, so a provider
                # call is never hidden and never counted as a second delivery.
                log.warning("delivery %s: lease lost before its outcome was stored", claimed.id)
                rows.extend(_attempt_row(claimed.id, t, now, superseded=True) for t in outcome.tries)
                continue
            rows.extend(_attempt_row(claimed.id, t, now, superseded=False) for t in outcome.tries)
            if claimed.members:
                await _mirror(connection, claimed, values)
            if outcome.status == "retrying" and outcome.retry_at is not None and claimed.queue:
                applied.jobs.append(NewJob(new_id("j"), claimed.queue, [claimed.id], outcome.retry_at, 1))
            if outcome.status == "dead":
                await connection.execute(
                    sa.insert(dead_letters).values(
                        id=new_id("dl"),
                        delivery_id=claimed.id,
                        notification_id=claimed.notification_id,
                        user_id=claimed.user_id,
                        channel=claimed.channel,
                        error=outcome.error,
                        attempts=claimed.attempts,
                        created_at=now,
                    )
                )
            if outcome.fall_back:
                # Each grouped item belongs to its own notification, whose chain moves on too.
                for notification_id in [
                    claimed.notification_id,
                    *(m.notification_id for m in claimed.members if not m.folded),
                ]:
                    await self._activate_next(connection, notification_id, claimed.channel, now, applied)
        await insert_rows(connection, attempts, rows)
        await insert_jobs(connection, [job for applied in results for job in applied.jobs], now)
        return results

    async def _activate_next(
        self,
        connection: AsyncConnection,
        notification_id: str,
        failed_channel: str,
        now: dt.datetime,
        applied: Applied,
    ) -> None:
        """The channel failed for good: wake the next standby channel of the fallback chain."""
        standby = (
            await connection.execute(
                sa.select(deliveries.c.id, deliveries.c.queue)
                .where(deliveries.c.notification_id == notification_id, deliveries.c.status == "standby")
                .order_by(deliveries.c.chain_position)
                .limit(1)
            )
        ).first()
        if standby is None:
            return
        woken = await connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == standby.id, deliveries.c.status == "standby")
            .values(status="pending", send_at=None, updated_at=now, detail=f"fallback after {failed_channel}")
        )
        if woken.rowcount and standby.queue:
            applied.activated.append(standby.id)
            applied.jobs.append(NewJob(new_id("j"), standby.queue, [standby.id], now, 0))

    async def resend_undelivered(
        self,
        delivery_id: str,
        provider_message_id: str,
        retry_at: Callable[[str | None, int], dt.datetime | None],
        reason: str,
        now: dt.datetime,
    ) -> NewJob | None:
        """A provider took the message but the carrier could not hand it over for now (Twilio
        30003): the delivery is open again, on its tier's retry schedule; None when it is not.

        Only the message the delivery last sent counts (a late report about an earlier one
        changes nothing), and only while the tier allows another attempt before the expiry.
        `retry_at(tier, attempts)` is the retry schedule.
        """
        async with self.database.begin() as connection:
            row = (
                await connection.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
            ).first()
            if (
                row is None
                or row.status != "delivered"
                or row.provider_message_id != provider_message_id
                or row.grouped_into not in (None, row.id)
                or not row.queue
                or _expired(row, now)
            ):
                return None
            at = retry_at(row.tier, row.attempts)
            if at is None or (row.expires_at is not None and at >= row.expires_at):
                return None
            reopened = await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == "delivered",
                    deliveries.c.provider_message_id == provider_message_id,
                )
                .values(status="retrying", next_attempt_at=at, reason=reason, detail=None, updated_at=now)
            )
            if not reopened.rowcount:
                return None
            job = NewJob(new_id("j"), row.queue, [row.id], at, 1)
            await insert_jobs(connection, [job], now)
            return job

    async def finish_job(self, job_id: str) -> None:
        async with self.database.begin() as connection:
            await connection.execute(sa.delete(jobs).where(jobs.c.id == job_id))

    async def status(self, notification_id: str) -> NotificationStatus | None:
        async with self.database.connect() as connection:
            note = (
                await connection.execute(
                    sa.select(notifications).where(notifications.c.id == notification_id)
                )
            ).first()
            if note is None:
                return None
            rows = list(
                await connection.execute(
                    sa.select(deliveries)
                    .where(deliveries.c.notification_id == notification_id)
                    .order_by(
                        deliveries.c.chain_position.is_(None), deliveries.c.chain_position, deliveries.c.id
                    )
                )
            )
            tries: dict[str, list[AttemptRecord]] = {r.id: [] for r in rows}
            reported: dict[str, list[TrackingEvent]] = {r.id: [] for r in rows}
            if rows:
                for e in await connection.execute(
                    sa.select(delivery_events)
                    .where(delivery_events.c.delivery_id.in_(list(reported)))
                    .order_by(delivery_events.c.occurred_at, delivery_events.c.id)
                ):
                    reported[e.delivery_id].append(
                        TrackingEvent(type=e.type, at=e.occurred_at, provider=e.provider, detail=e.detail)
                    )
                for a in await connection.execute(
                    sa.select(attempts).where(attempts.c.delivery_id.in_(list(tries))).order_by(attempts.c.id)
                ):
                    tries[a.delivery_id].append(
                        AttemptRecord(
                            at=a.at,
                            provider=a.provider,
                            outcome=a.outcome,
                            error=a.error,
                            provider_message_id=a.provider_message_id,
                            segments=a.segments,
                            cost=a.cost,
                            cost_source=a.cost_source,
                        )
                    )
        return NotificationStatus(
            notification_id=note.id,
            event=note.event,
            user_id=note.user_id,
            created_at=note.created_at,
            policy_version=note.policy_version,
            priority=note.priority,
            status=note.status,
            category=note.category,
            tier=note.tier,
            rule=note.rule,
            fallback=list(note.fallback or []),
            costs=costs_of([(r.channel, tries[r.id]) for r in rows]),
            deliveries=[
                DeliveryStatus(
                    delivery_id=r.id,
                    channel=r.channel,
                    status=r.status,
                    send_at=r.send_at,
                    provider=r.provider,
                    attempts=tries[r.id],
                    reason=r.reason,
                    detail=r.detail,
                    tier=r.tier,
                    expires_at=r.expires_at,
                    grouped_into=r.grouped_into if r.grouped_into != r.id else None,
                    events=reported[r.id],
                )
                for r in rows
            ],
        )

    async def producer_of(self, notification_id: str) -> str | None:
        async with self.database.connect() as connection:
            return await connection.scalar(
                sa.select(notifications.c.producer).where(notifications.c.id == notification_id)
            )

    async def dead_letters(self, limit: int, cursor: str | None, include_replayed: bool) -> DeadLetterPage:
        """Newest first; the cursor is the id of the last dead letter of the previous page."""
        query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit + 1)
        if cursor:
            query = query.where(dead_letters.c.id < cursor)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        async with self.database.connect() as connection:
            rows = list(await connection.execute(query))
        page = [_dead_letter(r) for r in rows[:limit]]
        return DeadLetterPage(
            dead_letters=page, next_cursor=page[-1].dead_letter_id if len(rows) > limit else None
        )

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        async with self.database.connect() as connection:
            row = (
                await connection.execute(sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id))
            ).first()
        return _dead_letter(row) if row is not None else None

    async def replay(self, dead_letter_id: str, now: dt.datetime) -> tuple[DeadLetter, NewJob] | None:
        """Send a dead-lettered delivery again, as a new delivery of the same notification.

        The new delivery starts with a fresh retry budget; the dead one stays, for the record.
        Replaying twice returns None the second time (the dead letter is marked replayed).
        """
        async with self.database.begin() as connection:
            letter = (
                await connection.execute(sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id))
            ).first()
            if letter is None:
                return None
            dead = (
                await connection.execute(sa.select(deliveries).where(deliveries.c.id == letter.delivery_id))
            ).first()
            replay_id = new_id("d")
            marked = await connection.execute(
                sa.update(dead_letters)
                .where(dead_letters.c.id == dead_letter_id, dead_letters.c.replayed_at.is_(None))
                .values(replayed_at=now, replay_delivery_id=replay_id)
            )
            if not marked.rowcount or dead is None:
                return None
            copy = {c.name: getattr(dead, c.name) for c in deliveries.columns}
            copy.update(
                # A group's message is replayed whole: the replay leads the dead one's group.
                grouped_into=replay_id if dead.grouped_into == dead.id else None,
                id=replay_id,
                status="pending",
                attempts=0,
                reason=None,
                detail=f"replay of {dead.id}",
                provider=None,
                provider_message_id=None,
                next_attempt_at=None,
                lease_owner=None,
                lease_until=None,
                send_at=None,
                created_at=now,
                updated_at=now,
                expires_at=None,
                chain_position=None,
            )
            await connection.execute(sa.insert(deliveries).values(**copy))
            if dead.grouped_into == dead.id:
                await connection.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.grouped_into == dead.id, deliveries.c.id != dead.id)
                    .values(
                        grouped_into=replay_id,
                        status=sa.case((deliveries.c.status == "suppressed", "suppressed"), else_="sending"),
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                )
            job = NewJob(new_id("j"), dead.queue or "standard", [replay_id], now, 0)
            await insert_jobs(connection, [job], now)
            letter = (
                await connection.execute(sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id))
            ).first()
        return _dead_letter(letter), job


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
        elif leads(row, digests) and not _expired(row, now):  # an expired one takes nobody down with it
            groups[row.id] = members = await gather(
                connection, row, now, claimed_here=taken - absorbed - {row.id}, digests=digests
            )
            absorbed |= {m.delivery_id for m in members}
        else:
            groups[row.id] = ()
    return groups


async def _mirror(connection: AsyncConnection, leader: Claimed, values: dict[str, Any]) -> None:
    """A group's members share their leader's outcome: one message carried them all.

    Folded messages stay `suppressed` (they were not sent on their own; `grouped_into`
    names the digest that carried them), and a member cancelled while its group waited
    for a retry stays `cancelled`.
    """
    mirrored = dict(values)
    if values["status"] == "delivered":
        mirrored["detail"] = f"sent within delivery {leader.id}"
    elif values["status"] in ("failed", "dead", "expired"):
        # The digest did not go: what was folded into it waits for the next one.
        await connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.grouped_into == leader.id, deliveries.c.status == "suppressed")
            .values(grouped_into=None)
        )
    await connection.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.grouped_into == leader.id,
            deliveries.c.id != leader.id,
            deliveries.c.status.not_in(("suppressed", "cancelled")),
        )
        .values(**mirrored)
    )


def costs_of(channels: Sequence[tuple[str, Sequence[AttemptRecord]]]) -> list[ChannelCost]:
    """Each channel's and provider's actual cost: the sum over its delivered attempts."""
    sums: dict[tuple[str, str], tuple[int, int | None, float]] = {}
    for channel, records in channels:
        for a in records:
            if a.cost is None or a.provider is None:
                continue
            messages, segments, cost = sums.get((channel, a.provider), (0, None, 0.0))
            if a.segments is not None:
                segments = (segments or 0) + a.segments
            sums[(channel, a.provider)] = (messages + 1, segments, cost + a.cost)
    return [
        ChannelCost(channel=channel, provider=provider, messages=n, segments=segments, cost=round(cost, 6))
        for (channel, provider), (n, segments, cost) in sums.items()
    ]


def _attempt_row(delivery_id: str, attempt: Try, now: dt.datetime, *, superseded: bool) -> dict[str, Any]:
    outcome, error = attempt.outcome, attempt.error
    if superseded:
        outcome, error = (
            "superseded",
            f"{outcome} after this worker's lease ran out" + (f": {error}" if error else ""),
        )
    return {
        "delivery_id": delivery_id,
        "at": attempt.at or now,
        "provider": attempt.provider,
        "outcome": outcome,
        "error": error,
        "provider_message_id": attempt.provider_message_id,
        "duration_ms": attempt.duration_ms,
        "segments": attempt.segments,
        "cost": attempt.cost,
        "cost_source": attempt.cost_source,
    }


def _dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=row.id,
        delivery_id=row.delivery_id,
        notification_id=row.notification_id,
        user_id=row.user_id,
        channel=row.channel,
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
        replay_delivery_id=row.replay_delivery_id,
    )
