"""A notification's timeline (`GET /v1/notifications/{id}/timeline`) after real worker runs:
every provider attempt, the dead letter and its replay, in time order."""

from __future__ import annotations

from pathlib import Path

from gateway.services import Services
from tests.delivery.conftest import registry
from tests.harness import ADA, admin_key, client, delivery_statuses, eventually, running_worker, store_user
from tests.stub_http import Reply, stub_server

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "T-1", "carrier": "UPS"}}


async def test_the_timeline_tells_attempts_the_dead_letter_and_its_replay(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, {**ADA, "contacts": {"email": "ada@example.com"}})
    token = await admin_key(quick_services, "ops")
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(502))
        smtp.reply(Reply(502))
        async with client(quick_services, token) as http:
            notification_id = (await http.post("/v1/intents", json=SHIPPED)).json()["notification_id"]

            async def dead() -> bool:
                return (await delivery_statuses(quick_services, notification_id)).get("email") == "dead"

            adapters = registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp)
            async with running_worker(quick_services, registry=adapters):
                await eventually(dead)
                story = (await http.get(f"/v1/notifications/{notification_id}/timeline")).json()
                email = next(d for d in story["deliveries"] if d["channel"] == "email")
                kinds = [e["kind"] for e in email["entries"]]
                assert kinds == ["accepted", *["attempt"] * 6, "dead_letter"]
                assert [e["summary"] for e in email["entries"][1:3]] == [
                    "sendgrid: retryable",
                    "smtp: retryable",
                ]
                times = [e["at"] for e in email["entries"]]
                assert times == sorted(times)
                letter = email["dead_letter"]
                assert letter["delivery_id"] == email["delivery_id"] and letter["replayed_at"] is None
                assert email["entries"][-1]["summary"] == "dead-lettered after 3 attempts"

                sendgrid.reply(Reply(200))
                replay = await http.post(f"/v1/dead-letters/{letter['dead_letter_id']}/replay")
                assert replay.status_code == 202
                replayed = replay.json()["delivery_id"]

                async def delivered() -> bool:
                    states = await quick_services.deliveries.status(notification_id)
                    return states is not None and any(
                        d.delivery_id == replayed and d.status == "delivered" for d in states.deliveries
                    )

                await eventually(delivered)
                story = (await http.get(f"/v1/notifications/{notification_id}/timeline")).json()
    by_id = {d["delivery_id"]: d for d in story["deliveries"]}
    dead_one = by_id[email["delivery_id"]]
    assert dead_one["entries"][-1] == {
        **dead_one["entries"][-1],
        "kind": "replayed",
        "summary": f"replayed as {replayed}",
    }
    assert [e["summary"] for e in by_id[replayed]["entries"] if e["kind"] == "attempt"] == [
        "sendgrid: delivered"
    ]
