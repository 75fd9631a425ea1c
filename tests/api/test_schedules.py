"""Schedules over HTTP: list, pause/resume (admin), list scheduled intents, cancel them."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from gateway.services import Services
from tests.harness import DELIVERIES, admin_key, client, store_user


async def test_schedules_are_listed_and_paused_and_resumed_by_admins_only(services: Services) -> None:
    admin = await admin_key(services)
    producer = await admin_key(services, "shop", admin=False, events=["order.*"])
    await store_user(services)  # Ada, in Paris
    async with client(services, admin) as http:
        listed = (await http.get("/v1/schedules")).json()["schedules"]
        (digest,) = listed
        assert digest["name"] == "weekly-digest-monday"
        assert digest["cron"] == "0 9 * * 1"
        assert digest["paused"] is False
        (paris,) = digest["zones"]
        assert paris["timezone"] == "Europe/Paris"
        assert paris["next_local"].endswith("T09:00:00+01:00") or paris["next_local"].endswith("+02:00")
        paused = await http.post("/v1/schedules/weekly-digest-monday/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True and paused.json()["paused_by"] == "admin"
        assert (await http.get("/v1/schedules/weekly-digest-monday")).json()["paused"] is True
        missing = await http.post("/v1/schedules/nope/pause")
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "name"
    async with client(services, producer) as http:
        refused = await http.post("/v1/schedules/weekly-digest-monday/resume")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_required"
    async with client(services, admin) as http:
        resumed = await http.post("/v1/schedules/weekly-digest-monday/resume")
        assert resumed.json()["paused"] is False


async def test_a_send_at_intent_is_listed_cancelled_once_and_never_sent(services: Services) -> None:
    admin = await admin_key(services)
    shop = await admin_key(services, "shop", admin=False, events=["order.*"])
    other = await admin_key(services, "other", admin=False, events=["order.*"])
    await store_user(services)
    send_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    intent = {
        "event": "order.shipped",
        "user_id": "u_ada",
        "data": {"order_id": "A-1", "carrier": "UPS"},
        "send_at": send_at.isoformat(),
    }
    async with client(services, shop) as http:
        accepted = await http.post("/v1/intents", json=intent)
        assert accepted.status_code == 202, accepted.text
        notification_id = accepted.json()["notification_id"]
        page = (await http.get("/v1/scheduled", params={"user_id": "u_ada"})).json()
        assert [n["notification_id"] for n in page["notifications"]] == [notification_id]
        assert page["notifications"][0]["waiting_deliveries"] >= 1
    async with client(services, other) as http:
        assert (await http.get("/v1/scheduled")).json()["notifications"] == []
        hidden = await http.post(f"/v1/notifications/{notification_id}/cancel")
        assert hidden.status_code == 404
        assert hidden.json()["error"]["field"] == "notification_id"
    async with client(services, shop) as http:
        cancelled = await http.post(
            f"/v1/notifications/{notification_id}/cancel", json={"reason": "order lost"}
        )
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["cancelled"]
        statuses = {d["status"] for d in body["notification"]["deliveries"]}
        assert "cancelled" in statuses
        assert statuses <= {"cancelled", "suppressed"}
        again = (await http.post(f"/v1/notifications/{notification_id}/cancel")).json()
        assert again["cancelled"] == []
        assert (await http.get("/v1/scheduled")).json()["notifications"] == []
    async with client(services, admin) as http:
        assert (await http.get(f"/v1/notifications/{notification_id}")).status_code == 200

    # The job fires at its time: the claim takes nothing, so nothing is sent.
    async with services.database.connect() as connection:
        ids = [
            r.id
            for r in await connection.execute(
                sa.select(DELIVERIES.c.id).where(DELIVERIES.c.notification_id == notification_id)
            )
        ]
    later = send_at + dt.timedelta(minutes=1)
    assert (await services.deliveries.claimable(ids, later)).now == []
    assert await services.deliveries.claim(ids, "worker", dt.timedelta(seconds=30), later) == []
    async with services.database.connect() as connection:
        reasons = {
            r.reason
            for r in await connection.execute(
                sa.select(DELIVERIES.c.reason).where(
                    DELIVERIES.c.notification_id == notification_id, DELIVERIES.c.status == "cancelled"
                )
            )
        }
    assert reasons == {"cancelled"}
