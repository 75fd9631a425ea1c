"""The rows an accepted intent becomes, built where the tables are known.

One notification row, and one delivery row per channel the decision named: to send now or
later, on standby for a fallback chain, or suppressed with its reason. `delivery_row` is the
one place a delivery row gets its columns, whatever it is for; the orchestration hands over
a decision and gets a `Pending` back, ready for the writer's group commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.ids import new_id
from gateway.model import Decision, Intent, Suppression
from gateway.policy.compiled import CompiledPolicy
from gateway.store.grouping import fold_key
from gateway.store.intake import JobSpec, Pending


def notification_row(
    intent: Intent, notification_id: str, producer: str, now: dt.datetime, decision: Decision | None
) -> dict[str, Any]:
    """An accepted intent; `decision` None stores it `undecided` (Redis was away)."""
    return {
        "id": notification_id,
        "event": intent.event,
        "user_id": intent.user_id,
        "priority": intent.priority,
        "data": intent.data,
        "channels": intent.channels,
        "locale": intent.locale,
        "send_at": intent.send_at,
        "idempotency_key": intent.idempotency_key,
        "producer": producer,
        "status": "decided" if decision is not None else "undecided",
        "category": decision.category if decision else None,
        "tier": decision.tier if decision else None,
        "rule": decision.rule if decision else None,
        "policy_version": decision.policy_version if decision else None,
        "fallback": decision.fallback if decision else None,
        "created_at": now,
        "decided_at": now if decision else None,
        "decide_owner": None,
        "decide_until": None,
        "bulk_id": None,
    }


def delivery_row(
    intent: Intent, notification_id: str, now: dt.datetime, *, channel: str, status: str, **values: Any
) -> dict[str, Any]:
    """A delivery row: every column, at its starting value unless given."""
    unknown = values.keys() - _DELIVERY_START.keys()
    if unknown:
        raise TypeError(f"deliveries have no column {sorted(unknown)[0]!r}")
    row = _DELIVERY_START.copy()  # one C-level copy, then only what differs
    row["id"] = values.pop("id", None) or new_id("d")
    row["notification_id"] = notification_id
    row["user_id"] = intent.user_id
    row["event"] = intent.event
    row["channel"] = channel
    row["status"] = status
    row["created_at"] = row["updated_at"] = now
    row.update(values)
    return row


# Every column of a delivery row at its starting value; `delivery_row` fills in the rest.
_DELIVERY_START: dict[str, Any] = {
    "id": None,
    "notification_id": None,
    "user_id": None,
    "event": None,
    "channel": None,
    "status": None,
    "reason": None,
    "detail": None,
    "rule": None,
    "tier": None,
    "queue": None,
    "template": None,
    "providers": None,
    "chain_position": None,
    "recipients": 0,
    "estimated_cost": 0.0,
    "fingerprint": None,
    "batch_key": None,
    "batch_max": None,
    "batch_closes_at": None,
    "grouped_into": None,
    "send_at": None,
    "expires_at": None,
    "attempts": 0,
    "next_attempt_at": None,
    "lease_owner": None,
    "lease_until": None,
    "provider": None,
    "provider_message_id": None,
    "created_at": None,
    "updated_at": None,
}


def decided(
    intent: Intent,
    decision: Decision,
    notification_id: str,
    producer: str,
    now: dt.datetime,
    policy: CompiledPolicy,
    ids: dict[str, str],
) -> Pending:
    """A decided intent's rows and the queue jobs its deliveries need; `ids` fixes each
    channel's delivery id (the history reservations already name them)."""
    tier = policy.tiers[decision.tier]
    rank = policy.tier_rank(decision.tier)
    chain = {channel: i for i, channel in enumerate(decision.fallback)}
    rows: list[dict[str, Any]] = []
    specs: list[JobSpec] = []
    for group, standby in ((decision.deliveries, False), (decision.standby, True)):
        for delivery in group:
            delivery_id = ids[delivery.channel]
            batch = delivery.batch
            status = "standby" if standby else "scheduled" if delivery.send_at is not None else "pending"
            rows.append(
                delivery_row(
                    intent,
                    notification_id,
                    now,
                    id=delivery_id,
                    channel=delivery.channel,
                    status=status,
                    rule=delivery.rule,
                    tier=delivery.tier,
                    queue=delivery.queue,
                    template=delivery.template,
                    providers=delivery.providers,
                    chain_position=chain.get(delivery.channel),
                    recipients=delivery.recipients,
                    estimated_cost=delivery.estimated_cost,
                    fingerprint=delivery.fingerprint,
                    batch_key=batch.key if batch else None,
                    batch_max=batch.max_size if batch else None,
                    batch_closes_at=batch.closes_at if batch else None,
                    send_at=delivery.send_at,
                    expires_at=delivery.expires_at,
                )
            )
            if not standby:
                specs.append(
                    JobSpec(delivery_id, delivery.queue, delivery.send_at or now, tier.chunk_size, rank)
                )
    rows.extend(suppressed_row(s, intent, notification_id, now) for s in decision.suppressed)
    return Pending(
        notification=notification_row(intent, notification_id, producer, now, decision),
        deliveries=rows,
        job_specs=specs,
        idempotency=(producer, intent.idempotency_key) if intent.idempotency_key else None,
    )


def suppressed_row(
    suppression: Suppression, intent: Intent, notification_id: str, now: dt.datetime
) -> dict[str, Any]:
    folded = suppression.digest and "folded" not in suppression.detail
    return delivery_row(
        intent,
        notification_id,
        now,
        channel=suppression.channel,
        status="suppressed",
        reason=suppression.reason,
        detail=suppression.detail + (f"; folded into the next {suppression.digest}" if folded else ""),
        rule=suppression.rule,
        # A capped message the policy folds into a digest waits under the digest's key,
        # where the user's next digest of that channel picks it up (`Claims.claim_in`).
        batch_key=fold_key(intent.user_id, suppression.digest) if suppression.digest else None,
    )


def undecided(intent: Intent, notification_id: str, producer: str, now: dt.datetime) -> Pending:
    """An intent stored without a decision (Redis is away): decided later (`Intake.decide_pending`)."""
    return Pending(
        notification=notification_row(intent, notification_id, producer, now, None),
        deliveries=[],
        job_specs=[],
        idempotency=(producer, intent.idempotency_key) if intent.idempotency_key else None,
    )


def unroutable(intent: Intent, notification_id: str, producer: str, now: dt.datetime, why: str) -> Pending:
    """An intent that can no longer be decided (its rule was removed meanwhile): say so."""
    note = notification_row(intent, notification_id, producer, now, None)
    note["status"] = "decided"
    why_row = suppressed_row(
        Suppression(channel="*", reason="policy", detail=why, rule="none"), intent, notification_id, now
    )
    return Pending(notification=note, deliveries=[why_row], job_specs=[], idempotency=None)
