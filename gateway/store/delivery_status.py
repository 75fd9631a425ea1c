"""The delivery status read model: a notification with its deliveries, attempts, provider
events and what it cost, as `GET /v1/notifications/{id}` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from gateway.model import AttemptRecord, ChannelCost, DeliveryStatus, NotificationStatus, TrackingEvent
from gateway.store.database import Database
from gateway.store.tables import AttemptRow, DeliveryEventRow, DeliveryRow, NotificationRow

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
attempts = AttemptRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]
delivery_events = DeliveryEventRow.__table__  # type: ignore[attr-defined]


class DeliveryStatusReader:
    def __init__(self, database: Database) -> None:
        self.database = database

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
