"""Provider events, normalized, and the store that records them once and acts on them.

A webhook module (`sendgrid.py`, `twilio.py`) turns a provider's report into
`ProviderEvent`s; `EventRecorder.record` stores them in `delivery_events` with
`INSERT ... ON CONFLICT (dedup_key) DO NOTHING`, so a provider retrying a webhook it thinks
failed adds nothing, and only the events stored for the first time have effects:

- `suppress` set (hard bounce, spam complaint, STOP): the address is marked through
  `SqlRecipients.mark_contact`, the same marking the delivery pipeline uses when a provider
  refuses an address at send time, so later decisions suppress the channel as `no_address`;
- `opt_out` set (the recipient unsubscribed through the provider): the notification's
  category is turned off for email, as a one-click unsubscribe does;
- a delivery left `unknown` (the provider may have taken it, see docs/providers.md) is
  settled by the first event that says what became of it: `delivered` once the provider
  reports it handled the message, `failed` when it bounced or failed. It does not fall back:
  the next channel would arrive long after the fact.
- `resend` set (the carrier could not hand the message over for now, Twilio 30003): the
  delivery is opened again on its tier's retry schedule (`Outcomes.resend_undelivered`)
  and its job handed to the queue, so a phone that was switched off gets the message later.

An event is tied to our delivery by the id the adapter sent along (SendGrid's custom arg
`delivery_id`), else by the provider's message id stored on the delivery or its attempts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.delivery.retry import next_attempt
from gateway.errors import ClientError
from gateway.policy.compiled import CompiledPolicy
from gateway.redact import redact
from gateway.store.database import Database
from gateway.store.intake import NewJob
from gateway.store.outcomes import Outcomes
from gateway.store.recipients import SqlRecipients
from gateway.store.tables import AttemptRow, DeliveryEventRow, DeliveryRow, NotificationRow
from gateway.tracking import unsubscribe

log = logging.getLogger("gateway.tracking")

EventType = Literal[
    "sent",  # the provider handed it on (SendGrid `processed`, Twilio `sent`)
    "delivered",  # the receiving server or handset took it
    "opened",
    "clicked",
    "bounced",  # refused for good: the address does not work
    "soft_bounced",  # refused for now (SendGrid `blocked`): the address is kept
    "failed",  # not delivered for another reason (SendGrid `dropped`, Twilio `failed`)
    "complained",  # marked as spam
    "unsubscribed",
    "deferred",  # the receiving server asked to try later; the provider retries
]
# How a contact is marked: `load_users` leaves out every contact that is not `active`.
# `opted_out`: the recipient texted STOP; texting START makes the phone `active` again.
Suppression = Literal["bounced", "complained", "invalid", "opted_out"]
# What an event proves about a delivery whose outcome was unknown.
SETTLES: dict[EventType, Literal["delivered", "failed"]] = {
    "sent": "delivered",
    "delivered": "delivered",
    "opened": "delivered",
    "clicked": "delivered",
    "complained": "delivered",
    "bounced": "failed",
    "failed": "failed",
}

events_table = DeliveryEventRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
attempts = AttemptRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider: str
    dedup_key: str  # unique per provider event: `<provider>:<the provider's event id>`
    type: EventType
    occurred_at: dt.datetime
    address_kind: Literal["email", "phone"]
    address: str | None = None  # the recipient as the provider names it; logged masked only
    delivery_id: str | None = None  # as the provider echoed it back
    provider_message_id: str | None = None
    detail: str | None = None
    suppress: Suppression | None = None
    opt_out: bool = False
    resend: bool = False  # a temporary carrier failure: send the delivery again


@dataclass(frozen=True, slots=True)
class Recorded:
    stored: int = 0  # new events
    duplicates: int = 0  # seen before: stored once, nothing done again
    unmatched: int = 0  # stored, but tied to no delivery of ours
    marked: int = 0  # addresses marked unusable
    opted_out: int = 0  # categories turned off
    resent: int = 0  # deliveries opened again after a temporary carrier failure


@dataclass(frozen=True, slots=True)
class _Target:
    delivery_id: str
    user_id: str
    channel: str
    category: str | None


class EventRecorder:
    def __init__(
        self,
        database: Database,
        recipients: SqlRecipients,
        policy: Callable[[], CompiledPolicy],
        clock: Callable[[], dt.datetime],
        dispatch: Callable[[Sequence[NewJob]], None] | None = None,
    ) -> None:
        self.database = database
        self.recipients = recipients
        self.policy = policy
        self.clock = clock
        self.dispatch = dispatch  # hands a resent delivery's job to the queue at once
        self.outcomes = Outcomes(database)

    async def record(self, events: Sequence[ProviderEvent]) -> Recorded:
        """Store the events not seen before and apply their effects; what was done."""
        if not events:
            return Recorded()
        now = self.clock()
        async with self.database.begin() as connection:
            targets = await _targets(connection, events)
            rows = []
            for event in events:
                target = _target_of(event, targets)
                rows.append(
                    {
                        "dedup_key": event.dedup_key,
                        "delivery_id": target.delivery_id if target else None,
                        "provider": event.provider,
                        "provider_message_id": event.provider_message_id,
                        "type": event.type,
                        "detail": _masked(event),
                        "occurred_at": event.occurred_at,
                        "received_at": now,
                    }
                )
            insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(
                events_table
            )
            written = {
                row.dedup_key
                for row in await connection.execute(
                    insert.values(rows)
                    .on_conflict_do_nothing(index_elements=[events_table.c.dedup_key])
                    .returning(events_table.c.dedup_key)
                )
            }
            await _settle_unknown(connection, events, targets, now)
        stored = duplicates = unmatched = marked = opted_out = resent = 0
        done: set[str] = set()
        for event in events:
            # A repeat is not stored again, but its effects are applied again (both are
            # idempotent): had they failed the first time, the provider's retry is their
            # only second chance, since the event itself was already committed.
            new = event.dedup_key in written and event.dedup_key not in done
            if new:
                done.add(event.dedup_key)
                stored += 1
            else:
                duplicates += 1
            target = _target_of(event, targets)
            if target is None:
                unmatched += int(new)
                if new and (event.suppress or event.opt_out):
                    log.warning(
                        "%s reported %s for %s on a message we cannot tie to a delivery; nothing marked",
                        event.provider,
                        event.type,
                        redact(event.address_kind, event.address or ""),
                    )
                continue
            if event.suppress and event.address:
                await self.recipients.mark_contact(
                    target.user_id, event.address_kind, event.address, event.suppress, _reason(event), now
                )
                if new:
                    log.info(
                        "%s reported %s for %s: marked %s",
                        event.provider,
                        event.type,
                        redact(event.address_kind, event.address),
                        event.suppress,
                    )
                    marked += 1
            if event.opt_out and target.category and await self._opt_out(target.user_id, target.category):
                opted_out += 1
            if event.resend and event.provider_message_id:  # idempotent: only the last message counts
                resent += await self._resend(target.delivery_id, event.provider_message_id, event, now)
        return Recorded(stored, duplicates, unmatched, marked, opted_out, resent)

    async def _resend(self, delivery_id: str, message_id: str, event: ProviderEvent, now: dt.datetime) -> int:
        """Open the delivery again on its tier's retry schedule; 1 when it was."""
        policy = self.policy()

        def retry_at(tier: str | None, attempts: int) -> dt.datetime | None:
            found = policy.tiers.get(tier or "")
            return next_attempt(found.retry, attempts, now, None) if found is not None else None

        job = await self.outcomes.resend_undelivered(delivery_id, message_id, retry_at, "carrier_retry", now)
        if job is None:
            return 0
        log.info("%s could not reach the handset for now (%s): sending again", event.provider, event.detail)
        if self.dispatch is not None:
            self.dispatch([job])
        return 1

    async def _opt_out(self, user_id: str, category: str) -> bool:
        """Turn the category's email off; a category the policy no longer has is only logged,
        since refusing the webhook would make the provider retry a batch already stored."""
        try:
            return await unsubscribe.opt_out(self.recipients, self.policy(), user_id, category)
        except ClientError as exc:
            log.warning("an unsubscribe event could not be applied: %s", exc.message)
            return False

    async def record_unsubscribe(self, user_id: str, category: str) -> None:
        """Note a one-click unsubscribe that changed the user's preferences among the events."""
        now = self.clock()
        dedup_key = f"notigate:unsubscribe:{user_id}:{category}:{now.isoformat()}"[:200]
        async with self.database.begin() as connection:
            insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(
                events_table
            )
            await connection.execute(
                insert.values(
                    dedup_key=dedup_key,
                    delivery_id=None,
                    provider="notigate",
                    provider_message_id=None,
                    type="unsubscribed",
                    detail=f"one-click unsubscribe from {category} email (user {user_id})",
                    occurred_at=now,
                    received_at=now,
                ).on_conflict_do_nothing(index_elements=[events_table.c.dedup_key])
            )


async def _settle_unknown(
    connection: AsyncConnection,
    events: Sequence[ProviderEvent],
    targets: dict[str, _Target],
    now: dt.datetime,
) -> None:
    """Deliveries recorded `unknown` take the outcome their provider's events prove."""
    for event in events:
        status = SETTLES.get(event.type)
        target = _target_of(event, targets)
        if status is None or target is None:
            continue
        await connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == target.delivery_id, deliveries.c.status == "unknown")
            .values(
                status=status,
                reason=None if status == "delivered" else event.type,
                detail=f"settled by {event.provider}'s {event.type} event",
                updated_at=now,
            )
        )


async def _targets(connection: AsyncConnection, events: Sequence[ProviderEvent]) -> dict[str, _Target]:
    """Our deliveries the events name, keyed by delivery id and by provider message id."""
    ids = {e.delivery_id for e in events if e.delivery_id}
    message_ids = {e.provider_message_id for e in events if e.provider_message_id}
    columns = (deliveries.c.id, deliveries.c.user_id, deliveries.c.channel, notifications.c.category)
    joined = deliveries.join(notifications, notifications.c.id == deliveries.c.notification_id)
    found: dict[str, _Target] = {}
    if ids:
        for row in await connection.execute(
            sa.select(*columns).select_from(joined).where(deliveries.c.id.in_(ids))
        ):
            found[row.id] = _Target(row.id, row.user_id, row.channel, row.category)
    if message_ids:
        by_delivery = (
            sa.select(*columns, deliveries.c.provider_message_id.label("message_id"))
            .select_from(joined)
            .where(deliveries.c.provider_message_id.in_(message_ids))
        )
        by_attempt = (
            sa.select(*columns, attempts.c.provider_message_id.label("message_id"))
            .select_from(joined.join(attempts, attempts.c.delivery_id == deliveries.c.id))
            .where(attempts.c.provider_message_id.in_(message_ids))
        )
        for statement in (by_delivery, by_attempt):
            for row in await connection.execute(statement):
                found.setdefault(
                    f"msg:{row.message_id}", _Target(row.id, row.user_id, row.channel, row.category)
                )
    return found


def _target_of(event: ProviderEvent, targets: dict[str, _Target]) -> _Target | None:
    if event.delivery_id and event.delivery_id in targets:
        return targets[event.delivery_id]
    if event.provider_message_id:
        return targets.get(f"msg:{event.provider_message_id}")
    return None


def _masked(event: ProviderEvent) -> str | None:
    """Providers quote the recipient in their reasons; the store keeps it masked."""
    if event.detail is None:
        return None
    detail = event.detail
    if event.address:
        detail = detail.replace(event.address, redact(event.address_kind, event.address))
    return detail[:1000]


def _reason(event: ProviderEvent) -> str:
    return f"{event.provider} {event.type}" + (f": {_masked(event)}" if event.detail else "")
