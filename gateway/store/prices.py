"""A provider's price reported after the send, recorded on the attempt that carried it.

Twilio prices an SMS only once it has left Twilio, so the attempt of a send usually stores
the configured cost (`cost_source = configured`); when the price comes later
(`gateway/tracking/twilio_price.py`), it replaces that cost on the delivered attempt whose
provider message id it names, and `cost_source` becomes `reported`. It is recorded once:
a compare-and-set on `cost_source`, so two callbacks racing for the same message (Twilio
calls for `sent` and `delivered`, and retries) cannot both count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from gateway.store.database import Database
from gateway.store.tables import AttemptRow, DeliveryRow

attempts = AttemptRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Repriced:
    """What a late price changed: the metrics add `price` and count `replaced` as replaced."""

    channel: str
    provider: str
    price: float
    replaced: float | None  # the cost the attempt held before (configured), if any


class PriceStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _delivered(self, message_id: str) -> sa.Select[tuple[int, str, float | None, str | None, str]]:
        return (
            sa.select(
                attempts.c.id,
                attempts.c.provider,
                attempts.c.cost,
                attempts.c.cost_source,
                deliveries.c.channel,
            )
            .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
            .where(attempts.c.provider_message_id == message_id, attempts.c.outcome == "delivered")
            .order_by(attempts.c.id)
            .limit(1)
        )

    async def unpriced(self, message_id: str) -> bool:
        """Whether a delivered attempt of ours carried `message_id` and has no reported price yet:
        only then is the provider asked."""
        async with self.database.connect() as connection:
            row = (await connection.execute(self._delivered(message_id))).first()
        return row is not None and row.cost_source != "reported"

    async def record(self, message_id: str, price: float) -> Repriced | None:
        """Set the reported price on the attempt that carried `message_id`; None when there is
        none, or its price was reported already."""
        async with self.database.begin() as connection:
            row = (await connection.execute(self._delivered(message_id))).first()
            if row is None or row.cost_source == "reported" or row.provider is None:
                return None
            changed = await connection.execute(
                sa.update(attempts)
                .where(
                    attempts.c.id == row.id,
                    sa.or_(attempts.c.cost_source.is_(None), attempts.c.cost_source != "reported"),
                )
                .values(cost=price, cost_source="reported")
            )
            if changed.rowcount != 1:
                return None
        return Repriced(row.channel, row.provider, price, row.cost)
