"""What the fault tests check after a crash: every accepted intent delivered once per address."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from gateway.services import Services
from gateway.store.tables import InboxItemRow
from tests.harness import ADA, DELIVERIES, NOTIFICATIONS, admin_key, client, store_user
from tests.providers.outbox import per_delivery

INBOX = InboxItemRow.__table__  # type: ignore[attr-defined]
FINAL = ("delivered", "suppressed", "failed", "dead", "expired", "unknown")


async def accept_many(
    services: Services, count_: int, *, users: int = 5, first: int = 0, **extra: object
) -> list[str]:
    """Accept `count_` distinct order.shipped intents (orders A-<first>...) for `users` users."""
    for i in range(users):
        await store_user(services, {**ADA, "user_id": f"u_{i}"})
    token = await admin_key(services, f"producer-{uuid.uuid4().hex[:8]}")
    async with client(services, token) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/v1/intents",
                    json={
                        "event": "order.shipped",
                        "user_id": f"u_{i % users}",
                        "data": {"order_id": f"A-{first + i}", "carrier": "UPS"},
                        **extra,
                    },
                )
                for i in range(count_)
            )
        )
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    return [r.json()["notification_id"] for r in responses]


async def all_final(services: Services) -> bool:
    async with services.database.connect() as connection:
        open_ = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(DELIVERIES)
            .where(DELIVERIES.c.status.not_in(("standby", *FINAL)))
        )
        undecided = await connection.scalar(
            sa.select(sa.func.count()).select_from(NOTIFICATIONS).where(NOTIFICATIONS.c.status == "undecided")
        )
    return open_ == 0 and undecided == 0


async def assert_exactly_once(
    services: Services, outbox: Path, notification_ids: list[str]
) -> dict[str, int]:
    """Every delivery of every accepted notification went out once to each of its addresses.

    Returns the number of addresses of each delivery.
    """
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.id, DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.notification_id
                ).where(DELIVERIES.c.notification_id.in_(notification_ids))
            )
        )
    assert {r.notification_id for r in rows} == set(notification_ids)  # none lost
    sent = [r for r in rows if r.status not in ("suppressed", "standby")]
    assert all(r.status == "delivered" for r in sent), Counter(r.status for r in sent)
    files = await asyncio.to_thread(per_delivery, outbox)
    # In-app messages go to the inbox table (one row per delivery, by its primary key).
    async with services.database.connect() as connection:
        inbox_rows = Counter(
            r.notification_id
            for r in await connection.execute(
                sa.select(INBOX.c.notification_id).where(INBOX.c.notification_id.in_(notification_ids))
            )
        )
    expected = {r.id: 2 if r.channel == "push" else 1 for r in sent if r.channel != "in_app"}  # two devices
    # Exactly once per address: no loss, no duplicate (the message names the deliveries off).
    off = {d: (files.get(d, 0), expected.get(d, 0)) for d in files.keys() | expected.keys()}
    assert files == expected, {d: f"written {w}, expected {e}" for d, (w, e) in off.items() if w != e}
    in_app = Counter(r.notification_id for r in sent if r.channel == "in_app")
    assert inbox_rows == in_app
    return {**expected, **{r.id: 1 for r in sent if r.channel == "in_app"}}


async def open_deliveries(services: Services) -> str:
    """What is still open, for a failing test to show."""
    async with services.database.connect() as connection:
        rows = list(
            await connection.execute(
                sa.select(
                    DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.attempts, DELIVERIES.c.detail
                )
                .where(DELIVERIES.c.status.not_in(("standby", *FINAL)))
                .limit(20)
            )
        )
    return "still open: " + "; ".join(f"{r.channel} {r.status} after {r.attempts}: {r.detail}" for r in rows)
