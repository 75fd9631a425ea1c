"""A notification's story per delivery, in time order: what the console's activity view draws.

`timeline()` is a pure function of what the store already answers (the notification's
status with its attempts and tracking events, and its dead letters), so the story can never
disagree with `GET /v1/notifications/{id}`. The gateway does not record when a worker
claimed a delivery (only its lease, which is overwritten), so a timeline shows each
provider attempt but no separate "claimed" entry.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from gateway.model import DeadLetter, DeliveryStatus, NotificationStatus

EntryKind = Literal[
    "accepted",  # the intent was stored (202)
    "suppressed",  # the policy decided not to send on this channel
    "standby",  # kept for the fallback chain, sent only if an earlier channel fails
    "scheduled",  # held until its send time (quiet hours, a batch window, `send_at`)
    "attempt",  # one provider call, with its outcome
    "event",  # what the provider reported later (delivered, bounced, opened, ...)
    "dead_letter",  # out of retries
    "replayed",  # a dead letter sent again as a new delivery
    "grouped",  # carried by another delivery's message (a batch or a digest)
]


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime | None  # None: not yet (a send time still ahead is given as `at` anyway)
    kind: EntryKind
    summary: str
    provider: str | None = None
    outcome: str | None = None
    detail: str | None = None


class DeliveryTimeline(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    channel: str
    status: str
    provider: str | None
    dead_letter: DeadLetter | None
    entries: list[TimelineEntry]


class NotificationTimeline(msgspec.Struct, frozen=True, kw_only=True):
    notification: NotificationStatus
    deliveries: list[DeliveryTimeline]


def timeline(status: NotificationStatus, letters: list[DeadLetter]) -> NotificationTimeline:
    by_delivery = {letter.delivery_id: letter for letter in letters}
    return NotificationTimeline(
        notification=status,
        deliveries=[_delivery(status, d, by_delivery.get(d.delivery_id)) for d in status.deliveries],
    )


def _delivery(
    status: NotificationStatus, delivery: DeliveryStatus, letter: DeadLetter | None
) -> DeliveryTimeline:
    entries = [TimelineEntry(at=status.created_at, kind="accepted", summary=f"{status.event} accepted")]
    if delivery.status == "suppressed":
        entries.append(
            TimelineEntry(
                at=status.created_at,
                kind="suppressed",
                summary=f"suppressed: {delivery.reason or 'policy'}",
                detail=delivery.detail,
            )
        )
    elif delivery.status == "standby":
        entries.append(
            TimelineEntry(at=status.created_at, kind="standby", summary="on standby in the fallback chain")
        )
    if delivery.send_at is not None:
        entries.append(
            TimelineEntry(at=delivery.send_at, kind="scheduled", summary="due", detail=delivery.detail)
        )
    for attempt in delivery.attempts:
        entries.append(
            TimelineEntry(
                at=attempt.at,
                kind="attempt",
                summary=f"{attempt.provider or 'no provider'}: {attempt.outcome}",
                provider=attempt.provider,
                outcome=attempt.outcome,
                detail=attempt.error,
            )
        )
    for event in delivery.events:
        entries.append(
            TimelineEntry(
                at=event.at,
                kind="event",
                summary=f"{event.provider} reported {event.type}",
                provider=event.provider,
                outcome=event.type,
                detail=event.detail,
            )
        )
    if delivery.grouped_into is not None:
        entries.append(
            TimelineEntry(at=None, kind="grouped", summary=f"sent in the message of {delivery.grouped_into}")
        )
    if letter is not None:
        entries.append(
            TimelineEntry(
                at=letter.created_at,
                kind="dead_letter",
                summary=f"dead-lettered after {letter.attempts} attempts",
                detail=letter.error,
            )
        )
        if letter.replayed_at is not None:
            entries.append(
                TimelineEntry(
                    at=letter.replayed_at,
                    kind="replayed",
                    summary=f"replayed as {letter.replay_delivery_id}",
                )
            )
    return DeliveryTimeline(
        delivery_id=delivery.delivery_id,
        channel=delivery.channel,
        status=delivery.status,
        provider=delivery.provider,
        dead_letter=letter,
        entries=sorted(entries, key=_when),
    )


_NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


def _when(entry: TimelineEntry) -> dt.datetime:
    """Time order, entries without a time last; `sorted` keeps the order of equal times."""
    return entry.at if entry.at is not None else _NEVER
