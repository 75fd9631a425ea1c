"""Outcomes: what a claimed delivery came to, stored with its follow-up under the claim's lease.

Exactly once per address ends here (docs/architecture.md, rules 8 and 10): a worker
*records* the outcome and its follow-up (a retry job, the next fallback channel, a dead
letter; the same outcome on every member of a group) in one transaction, guarded by its
lease (`status = 'sending' AND lease_owner = me`), before its queue job ends. A worker whose
lease ran out matches no row: its provider calls are stored as `superseded` attempts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ids import new_id
from gateway.model import CostSource
from gateway.store.bulk import insert_rows
from gateway.store.claims import Claimed, is_expired
from gateway.store.database import Database
from gateway.store.dead_letters import dead_letter_row, dead_letters
from gateway.store.intake import NewJob, insert_jobs
from gateway.store.sqlite_values import sqlite_time
from gateway.store.sqlite_writes import sqlite_driver
from gateway.store.tables import AttemptRow, DeliveryRow, JobRow, not_indexed

log = logging.getLogger(__name__)

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
attempts = AttemptRow.__table__  # type: ignore[attr-defined]
jobs = JobRow.__table__  # type: ignore[attr-defined]

# Built once, the ids bound per call (as the claim's statements in store/claims.py).
_FINISHED_JOBS = sa.delete(jobs).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))


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
    recipient: str | None = None  # the address's tag (`Address.tag`) when a provider was called


# What an attempt can leave a delivery as: the statuses of `DeliveryStatusName` a worker writes.
OutcomeStatus = Literal["delivered", "retrying", "dead", "failed", "expired", "unknown"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a claimed delivery, and what must follow."""

    delivery: Claimed
    status: OutcomeStatus
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


class Outcomes:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def reached(self, delivery_id: str) -> dict[str, tuple[str | None, str | None]]:
        """The addresses earlier attempts of this delivery got through to, by `Address.tag`:
        (provider, its message id). A retry of a push sends only to the other devices."""
        async with self.database.connect() as connection:
            rows = await connection.execute(
                sa.select(attempts.c.recipient, attempts.c.provider, attempts.c.provider_message_id).where(
                    attempts.c.delivery_id == delivery_id,
                    attempts.c.outcome == "delivered",
                    attempts.c.recipient.is_not(None),
                )
            )
            return {r.recipient: (r.provider, r.provider_message_id) for r in rows}

    async def apply(
        self, connection: AsyncConnection, outcomes: Sequence[Outcome], now: dt.datetime
    ) -> list[Applied]:
        """Record outcomes with their follow-ups; runs inside a (group) transaction. One result each.

        Every outcome's row is written by one guarded UPDATE for the whole batch (`_record`),
        and attempts, dead letters and jobs by one INSERT each; only groups and fallbacks,
        which read other rows, take statements of their own.
        """
        results = [Applied() for _ in outcomes]
        changes = [row_values(outcome, now) for outcome in outcomes]
        recorded = await _record(
            connection, [(o.delivery, values) for o, values in zip(outcomes, changes, strict=True)]
        )
        rows: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        for outcome, values, applied, ours in zip(outcomes, changes, results, recorded, strict=True):
            claimed = outcome.delivery
            if not ours:
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
                letters.append(dead_letter_row(claimed, outcome.error, now))
            if outcome.fall_back:
                # Each grouped item belongs to its own notification, whose chain moves on too.
                for notification_id in [
                    claimed.notification_id,
                    *(m.notification_id for m in claimed.members if not m.folded),
                ]:
                    await self._activate_next(connection, notification_id, claimed.channel, now, applied)
        await insert_rows(connection, attempts, rows)
        await insert_rows(connection, dead_letters, letters)
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
                or is_expired(row, now)
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

    async def finish_jobs(
        self, connection: AsyncConnection, job_ids: list[str], now: dt.datetime
    ) -> list[None]:
        """Delete the outbox rows of jobs whose deliveries are all settled, inside a (group)
        transaction: a job's row goes only after its outcomes are stored (rule 8)."""
        await connection.execute(_FINISHED_JOBS, {"ids": job_ids})
        return [None] * len(job_ids)


def row_values(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    """What a claimed delivery's row becomes with this outcome (the lease given up)."""
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
    return values


async def _record(
    connection: AsyncConnection, changes: Sequence[tuple[Claimed, dict[str, Any]]]
) -> list[bool]:
    """Write each claimed row's new values where the claim is still its owner's; per change,
    whether it was written (False: the lease was lost to another worker).

    One UPDATE per owner for the whole batch, each column a `CASE id WHEN ...` over the rows
    that set it (the rest keep theirs; on SQLite one fixed text over a JSON array of the
    rows, `_SQLITE_RECORD`), guarded by `status = 'sending' AND lease_owner = owner` and
    returning the ids it wrote. A delivery twice in one batch is written once per round,
    in order, so its later outcome finds the row no longer `sending`, as it would one by one.
    """
    written = [False] * len(changes)
    pending = list(range(len(changes)))
    while pending:
        this_round: dict[tuple[str, str], int] = {}
        later: list[int] = []
        for k in pending:
            key = (changes[k][0].owner, changes[k][0].id)
            if key in this_round:
                later.append(k)
            else:
                this_round[key] = k
        by_owner: dict[str, list[int]] = {}
        for (owner, _), k in this_round.items():
            by_owner.setdefault(owner, []).append(k)
        for owner, ks in by_owner.items():
            owned = [(changes[k][0].id, changes[k][1]) for k in ks]
            if connection.dialect.name == "sqlite":
                done = await _sqlite_update_many(connection, owner, owned)
            else:
                done = {row.id for row in await connection.execute(_update_many(owner, owned))}
            for k in ks:
                written[k] = changes[k][0].id in done
        pending = later
    return written


def _update_many(owner: str, changes: Sequence[tuple[str, dict[str, Any]]]) -> sa.Update:
    ids = [delivery_id for delivery_id, _ in changes]
    sets: dict[str, Any] = {}
    for name in dict.fromkeys(column for _, values in changes for column in values):
        column = deliveries.c[name]
        given = [(delivery_id, values[name]) for delivery_id, values in changes if name in values]
        first = given[0][1]
        if len(given) == len(changes) and all(_same(value, first) for _, value in given):
            sets[name] = first
        else:
            sets[name] = sa.case(
                {delivery_id: _bound(column, value) for delivery_id, value in given},
                value=deliveries.c.id,
                else_=column,
            )
    return (
        sa.update(deliveries)
        .where(
            deliveries.c.id.in_(ids),
            not_indexed(deliveries.c.status) == "sending",
            deliveries.c.lease_owner == owner,
        )
        .values(**sets)
        .returning(deliveries.c.id)
    )


# `_update_many` on SQLite as one fixed text, each row's values a JSON array (`_sqlite_row`):
# built and compiled per batch, a `CASE` per column over the batch cost the worker's event
# loop more than the statement costs SQLite, and took four hops to the driver's thread.
# A column a row does not set keeps its value; `+status` keeps SQLite on the primary key.
_SQLITE_RECORD = """
UPDATE deliveries
   SET status = json_extract(r.value, '$[1]'),
       lease_owner = NULL,
       lease_until = NULL,
       updated_at = ?3,
       provider = iif(json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), deliveries.provider),
       provider_message_id = iif(json_extract(r.value, '$[2]'), json_extract(r.value, '$[4]'),
                                 deliveries.provider_message_id),
       reason = iif(json_extract(r.value, '$[5]'), json_extract(r.value, '$[6]'), deliveries.reason),
       detail = iif(json_extract(r.value, '$[5]'), json_extract(r.value, '$[7]'), deliveries.detail),
       next_attempt_at = iif(json_extract(r.value, '$[8]'), json_extract(r.value, '$[9]'),
                             deliveries.next_attempt_at),
       attempts = deliveries.attempts - json_extract(r.value, '$[10]')
  FROM json_each(?1) AS r
 WHERE deliveries.id = json_extract(r.value, '$[0]')
   AND +deliveries.status = 'sending'
   AND deliveries.lease_owner = ?2
RETURNING deliveries.id
"""

# The columns `row_values` writes: what `_SQLITE_RECORD` knows how to set.
_SQLITE_COLUMNS = frozenset(
    {"status", "lease_owner", "lease_until", "updated_at", "provider", "provider_message_id"}
    | {"reason", "detail", "next_attempt_at", "attempts"}
)


async def _sqlite_update_many(
    connection: AsyncConnection, owner: str, changes: Sequence[tuple[str, dict[str, Any]]]
) -> set[str]:
    """`_update_many` through `_SQLITE_RECORD`; the ids it wrote."""
    now = changes[0][1]["updated_at"]
    if any(
        values.keys() - _SQLITE_COLUMNS or values["updated_at"] != now or values["lease_owner"] is not None
        for _, values in changes
    ):
        raise ValueError("an outcome's row values are not those row_values writes")
    rows = msgspec.json.encode([_sqlite_row(delivery_id, values) for delivery_id, values in changes]).decode()
    driver = await sqlite_driver(connection)
    return {row[0] for row in await driver.execute_fetchall(_SQLITE_RECORD, (rows, owner, sqlite_time(now)))}


def _sqlite_row(delivery_id: str, values: dict[str, Any]) -> list[Any]:
    sent = "provider" in values
    said = "reason" in values
    retry = "next_attempt_at" in values
    return [
        delivery_id,
        values["status"],
        int(sent),
        values.get("provider"),
        values.get("provider_message_id"),
        int(said),
        values.get("reason"),
        values.get("detail"),
        int(retry),
        sqlite_time(values["next_attempt_at"]) if retry else None,
        int("attempts" in values),  # given back (`Outcome.waited`): the claim's attempt is not spent
    ]


def _same(value: Any, other: Any) -> bool:
    if isinstance(value, sa.ColumnElement) or isinstance(other, sa.ColumnElement):
        return value is other
    return bool(value == other)


def _bound(column: sa.Column[Any], value: Any) -> Any:
    """A value for a CASE branch, bound with its column's type (aware datetimes, JSON)."""
    if isinstance(value, sa.ColumnElement):
        return value
    return sa.null() if value is None else sa.literal(value, column.type)


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
        "recipient": attempt.recipient,
    }
