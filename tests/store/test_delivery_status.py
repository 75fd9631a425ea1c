"""The status read model, and timestamps read back as aware UTC whatever offset they had."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from gateway.ids import new_id
from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from gateway.store.outcomes import Outcome, Try
from tests.store.lifecycle import (
    INDIA,
    LEASE,
    PACIFIC,
    TOKYO,
    apply,
    aware_utc,
    claim_one,
    delivery,
    one,
    seed,
)
from tests.store.rows import (
    ATTEMPTS,
    DELIVERIES,
    NOTIFICATIONS,
    T0,
    count,
    insert,
    notification_row,
)


async def test_status_lists_deliveries_with_their_attempts_in_order(
    database: Database, store: DeliveryStore
) -> None:
    suppressed = delivery("sms", status="suppressed", reason="opted_out", detail="user opted out")
    push = delivery("push", chain_position=0)
    email = delivery("email", status="standby", chain_position=1, tier="standard")
    in_app = delivery("in_app")
    notification_id = await seed(database, suppressed, push, email, in_app, fallback=["push", "email"])

    claimed = await claim_one(store, push["id"], "w1", T0)
    first_try = T0 + dt.timedelta(seconds=1)
    await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "retrying",
                tries=[Try("apns", "retryable", error="503")],
                retry_at=first_try,
                error="503",
            )
        ],
        first_try,
    )
    claimed = await claim_one(store, push["id"], "w2", first_try)
    second_try = T0 + dt.timedelta(seconds=2)
    await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "delivered",
                tries=[
                    Try("apns", "retryable", error="timeout"),
                    Try("fcm", "delivered", provider_message_id="m-9"),
                ],
                provider="fcm",
                provider_message_id="m-9",
            )
        ],
        second_try,
    )

    status = await store.status(notification_id)
    assert status is not None
    assert (status.notification_id, status.event, status.user_id, status.created_at) == (
        notification_id,
        "order.shipped",
        "u_ada",
        T0,
    )
    assert status.fallback == ["push", "email"]
    # The chain first, in chain order; then the rest by id.
    off_chain = sorted([(suppressed["id"], "sms", "suppressed"), (in_app["id"], "in_app", "pending")])
    assert [(d.channel, d.status) for d in status.deliveries] == [
        ("push", "delivered"),
        ("email", "standby"),
        *((c, s) for _, c, s in off_chain),
    ]
    by_channel = {d.channel: d for d in status.deliveries}
    assert [
        (a.at, a.provider, a.outcome, a.error, a.provider_message_id) for a in by_channel["push"].attempts
    ] == [
        (first_try, "apns", "retryable", "503", None),
        (second_try, "apns", "retryable", "timeout", None),
        (second_try, "fcm", "delivered", None, "m-9"),
    ]
    assert by_channel["push"].provider == "fcm"
    assert (by_channel["sms"].reason, by_channel["sms"].detail, by_channel["sms"].attempts) == (
        "opted_out",
        "user opted out",
        [],
    )
    assert await store.status("n_missing") is None


# --- time -------------------------------------------------------------------------------------


async def test_timestamps_come_back_as_aware_utc_whatever_offset_they_were_stored_with(
    database: Database, store: DeliveryStore
) -> None:
    send_at = dt.datetime(2026, 11, 21, 18, 30, 0, 250_000, tzinfo=INDIA)  # 13:00:00.25 UTC
    expires_at = dt.datetime(2026, 11, 22, 4, 0, tzinfo=PACIFIC)  # 12:00 UTC the next day
    row = delivery("email", send_at=send_at, expires_at=expires_at, created_at=send_at, updated_at=send_at)
    notification_id = await seed(database, row, created_at=expires_at)

    async with database.connect() as connection:
        stored = (
            await connection.execute(
                sa.select(DELIVERIES.c.send_at, DELIVERIES.c.expires_at, DELIVERIES.c.created_at)
            )
        ).one()
    for value in stored:
        assert aware_utc(value), value
    assert tuple(stored) == (send_at, expires_at, send_at)
    assert stored.send_at.hour == 13 and stored.send_at.microsecond == 250_000
    assert stored.expires_at.day == 22 and stored.expires_at.hour == 12

    # 22:00:00 in Tokyo is 250 ms before its send time: too early to claim, due a second later.
    assert await store.claim([row["id"]], "w1", LEASE, dt.datetime(2026, 11, 21, 22, 0, tzinfo=TOKYO)) == []
    claimed = await claim_one(store, row["id"], "w1", dt.datetime(2026, 11, 21, 22, 0, 1, tzinfo=TOKYO))
    assert aware_utc(claimed.send_at) and claimed.send_at == send_at
    assert aware_utc(claimed.expires_at) and claimed.expires_at == expires_at
    lease = await one(database, row["id"])
    assert (
        aware_utc(lease.lease_until)
        and lease.lease_until == dt.datetime(2026, 11, 21, 13, 0, 1, tzinfo=dt.UTC) + LEASE
    )

    await apply(
        database,
        store,
        [Outcome(claimed, "dead", tries=[Try("p", "permanent")], error="x")],
        dt.datetime(2026, 11, 21, 9, 0, tzinfo=PACIFIC),
    )
    status = await store.status(notification_id)
    assert status is not None
    assert aware_utc(status.created_at) and status.created_at == expires_at
    (item,) = status.deliveries
    assert aware_utc(item.send_at) and item.send_at == send_at
    assert aware_utc(item.expires_at) and item.expires_at == expires_at
    (attempt,) = item.attempts
    assert aware_utc(attempt.at) and attempt.at == dt.datetime(2026, 11, 21, 17, tzinfo=dt.UTC)
    (letter,) = (await store.dead_letters(10, None, include_replayed=True)).dead_letters
    assert aware_utc(letter.created_at) and letter.created_at == dt.datetime(2026, 11, 21, 17, tzinfo=dt.UTC)


async def test_a_naive_datetime_is_refused(database: Database) -> None:
    row = delivery("email", send_at=dt.datetime(2026, 11, 21, 12, 0))
    notification_id = new_id("n")
    await insert(database, NOTIFICATIONS, notification_row(notification_id))
    with pytest.raises(sa.exc.StatementError, match="aware datetimes only"):
        await insert(database, DELIVERIES, {**row, "notification_id": notification_id})
    assert await count(database, DELIVERIES) == 0
    assert await count(database, ATTEMPTS) == 0
