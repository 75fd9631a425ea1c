"""Dead letters: deliveries whose retries are spent, listed for an operator and replayed.

A dead letter is written by the outcome that spends the last attempt (`gateway.store.outcomes`,
in the same transaction); a replay sends it again as a new delivery of the same notification.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from gateway.ids import new_id
from gateway.model import DeadLetter, DeadLetterPage
from gateway.store.claims import Claimed
from gateway.store.database import Database
from gateway.store.intake import NewJob, insert_jobs
from gateway.store.tables import DeadLetterRow, DeliveryRow

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
dead_letters = DeadLetterRow.__table__  # type: ignore[attr-defined]


def dead_letter_row(delivery: Claimed, error: str | None, now: dt.datetime) -> dict[str, Any]:
    """The dead letter of a claimed delivery whose last attempt failed, as an insertable row."""
    return {
        # Made at the outcome's time, not the wall clock's: dead letters page by id.
        "id": new_id("dl", clock=now.timestamp),
        "delivery_id": delivery.id,
        "notification_id": delivery.notification_id,
        "user_id": delivery.user_id,
        "channel": delivery.channel,
        "error": error,
        "attempts": delivery.attempts,
        "created_at": now,
        "replayed_at": None,
        "replay_delivery_id": None,
    }


class DeadLetterStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def dead_letters(self, limit: int, cursor: str | None, include_replayed: bool) -> DeadLetterPage:
        """Newest first; the cursor is the id of the last dead letter of the previous page."""
        query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit + 1)
        if cursor:
            query = query.where(dead_letters.c.id < cursor)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        async with self.database.connect() as connection:
            rows = list(await connection.execute(query))
        page = [dead_letter_of(r) for r in rows[:limit]]
        return DeadLetterPage(
            dead_letters=page, next_cursor=page[-1].dead_letter_id if len(rows) > limit else None
        )

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        async with self.database.connect() as connection:
            row = (
                await connection.execute(sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id))
            ).first()
        return dead_letter_of(row) if row is not None else None

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
        return dead_letter_of(letter), job


def dead_letter_of(row: Any) -> DeadLetter:
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
