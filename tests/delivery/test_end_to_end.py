"""Intents posted to the running app reach real provider SDKs through arq workers.

Every provider of the shipped providers.yaml runs its live adapter (twilio, sendgrid,
aiosmtplib, firebase-admin, the inbox) with credentials from an environment made here, and
talks to a local server speaking that provider's wire format: Google's token endpoint and
FCM v1, Twilio's Messages API, SendGrid's v3 mail/send, and a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.providers.base import AdapterDeps
from gateway.providers.registry import ProviderRegistry
from gateway.services import Services
from gateway.store import inbox
from gateway.store.tables import DeviceRow
from tests.conftest import REPO
from tests.harness import ADA, admin_key, client, delivery_statuses, eventually, running_worker, store_user
from tests.providers import wire_apns, wire_fcm, wire_sendgrid, wire_twilio
from tests.providers.test_smtp import Scripted, listening, smtp_server
from tests.stub_h2 import H2StubServer, h2_stub_server
from tests.stub_http import Reply, Request, StubServer, stub_server

FRAUD = {
    "event": "security.fraud_alert",
    "user_id": "u_ada",
    "priority": "urgent",
    "data": {
        "merchant": "ACME",
        "amount": "899.00",
        "currency": "USD",
        "review_url": "https://bank.example/r/1",
    },
}
FINAL = ("delivered", "failed", "dead", "expired", "unknown", "suppressed", "standby")


@dataclass
class Providers:
    google: StubServer  # the OAuth token endpoint and FCM v1
    twilio: StubServer
    sendgrid: StubServer
    smtp: Scripted
    apple: H2StubServer  # APNs, HTTP/2 only
    registry: ProviderRegistry

    def fcm_sends(self) -> list[Request]:
        return [r for r in self.google.requests if r.path == wire_fcm.SEND_PATH]


def twilio(request: Request) -> Reply:
    """Twilio's Messages API: its magic invalid number is refused with 21211."""
    if wire_twilio.form(request).get("To") == wire_twilio.INVALID:
        return wire_twilio.error(400, 21211, "The 'To' number is not a valid phone number.")
    return Reply(201, wire_twilio.message_resource(request))


@pytest.fixture
async def providers(quick_services: Services) -> AsyncIterator[Providers]:
    """Every live adapter of providers.yaml, pointed at the local endpoints."""
    scripted = Scripted()
    async with (
        stub_server(wire_fcm.google) as google_server,
        stub_server(twilio) as twilio_server,
        stub_server() as sendgrid_server,
        listening(smtp_server(scripted)) as smtp_port,
        h2_stub_server(wire_apns.accepted) as apple,
    ):
        sendgrid_server.reply(Reply(503, "Service Unavailable"))  # so email fails over to SMTP
        account = wire_fcm.service_account(google_server.url + wire_fcm.TOKEN_PATH)
        environ = {
            "FIREBASE_SERVICE_ACCOUNT_JSON": json.dumps(account),
            "FIREBASE_PROJECT_ID": wire_fcm.PROJECT,
            "FCM_BASE_URL": google_server.url,
            "TWILIO_ACCOUNT_SID": wire_twilio.ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": wire_twilio.AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": wire_twilio.SENDER,
            "TWILIO_BASE_URL": twilio_server.url,
            "SENDGRID_API_KEY": wire_sendgrid.API_KEY,
            "SENDGRID_BASE_URL": sendgrid_server.url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_STARTTLS": "false",
            "WEBHOOK_SIGNING_SECRET": "whsec-e2e",
            **wire_apns.ENVIRON,
            "APNS_KEY_ID": wire_apns.KEY_ID,
            "APNS_TEAM_ID": wire_apns.TEAM_ID,
            "APNS_TOPIC": wire_apns.TOPIC,
            "APNS_BASE_URL": apple.url,
        }
        registry = ProviderRegistry.load(
            REPO / "providers.yaml", "live", environ, deps=AdapterDeps(database=quick_services.database)
        )
        yield Providers(google_server, twilio_server, sendgrid_server, scripted, apple, registry)


async def post_and_settle(services: Services, providers: Providers, intent: dict[str, Any]) -> dict[str, Any]:
    """Post through the API, let a worker settle every delivery, read the status back."""
    token = await admin_key(services)
    async with client(services, token) as http:
        accepted = await http.post("/v1/intents", json=intent)
        assert accepted.status_code == 202, accepted.text
        notification_id = accepted.json()["notification_id"]

        async def settled() -> bool:
            statuses = await delivery_statuses(services, notification_id)
            return bool(statuses) and all(s in FINAL for s in statuses.values()) and "pending" not in statuses

        async with running_worker(services, registry=providers.registry):
            await eventually(settled, within=30)
        status = await http.get(f"/v1/notifications/{notification_id}")
    assert status.status_code == 200
    body: dict[str, Any] = status.json()
    return body


def attempts(status: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        d["channel"]: [(a["provider"], a["outcome"]) for a in d["attempts"]] for d in status["deliveries"]
    }


def received_email(scripted: Scripted) -> EmailMessage:
    [envelope] = scripted.received
    assert envelope.rcpt_tos == ["ada@example.com"]
    return message_from_bytes(envelope.original_content or b"")


async def test_an_urgent_alert_falls_back_channel_by_channel_and_fails_over_providers(
    quick_services: Services, providers: Providers
) -> None:
    """R13: push fails for good (unregistered device), then sms (invalid number), then email
    is tried: SendGrid answers 503, SMTP delivers. Every attempt shows in the status."""
    user = {
        **ADA,
        "contacts": {
            "email": "ada@example.com",
            "phone": wire_twilio.INVALID,
            "devices": [{"platform": "android", "token": wire_fcm.UNREGISTERED_TOKEN}],
        },
    }
    await store_user(quick_services, user)
    status = await post_and_settle(quick_services, providers, FRAUD)

    assert attempts(status) == {
        "push": [("fcm", "permanent")],
        "sms": [("twilio", "permanent")],
        "email": [("sendgrid", "retryable"), ("smtp", "delivered")],
        "in_app": [("inbox", "delivered")],
    }
    by_channel = {d["channel"]: d for d in status["deliveries"]}
    assert {c: d["status"] for c, d in by_channel.items()} == {
        "push": "failed",
        "sms": "failed",
        "email": "delivered",
        "in_app": "delivered",
    }
    assert by_channel["email"]["provider"] == "smtp"
    errors = [a["error"] or "" for d in status["deliveries"] for a in d["attempts"]]
    assert not any("ada@example.com" in e or wire_twilio.INVALID in e for e in errors)

    # What went over each wire, rendered from templates/security.fraud_alert/
    [fcm] = providers.fcm_sends()
    assert fcm.json()["message"]["notification"]["title"]
    android = fcm.json()["message"]["android"]
    assert android["priority"] == "high"  # urgent
    # the critical tier's lifetime and the delivery's collapse key
    assert android["collapse_key"] == by_channel["push"]["delivery_id"] and android["ttl"].endswith("s")
    [sms] = providers.twilio.requests
    assert "ACME" in wire_twilio.form(sms)["Body"]
    assert 0 < int(wire_twilio.form(sms)["ValidityPeriod"]) <= 600
    [sendgrid] = providers.sendgrid.requests
    assert sendgrid.json()["custom_args"]["delivery_id"] == by_channel["email"]["delivery_id"]
    mail = received_email(providers.smtp)
    assert mail["Subject"] == "Action needed: suspicious payment at ACME"
    assert mail["X-Notigate-Delivery"] == by_channel["email"]["delivery_id"]
    [item] = await inbox.feed(quick_services.database, "u_ada")
    assert item.id == by_channel["in_app"]["delivery_id"] and "ACME" in (item.title + item.body)

    # The dead addresses are marked, so the next decision does not try them.
    stored = await quick_services.recipients.get_user("u_ada")
    assert stored is not None
    assert [d.active for d in stored.contacts.devices] == [False]
    token = await admin_key(quick_services, "reader")
    async with client(quick_services, token) as http:
        dry = (await http.post("/v1/dry-run", json={"intent": FRAUD})).json()
    reasons = {s["channel"]: s["reason"] for s in dry["suppressed"]}
    assert (reasons["push"], reasons["sms"]) == ("no_address", "no_address")


async def test_push_fans_out_to_every_device_and_retires_the_dead_one(
    quick_services: Services, providers: Providers
) -> None:
    user = {
        **ADA,
        "contacts": {
            "email": "ada@example.com",
            "devices": [
                {"platform": "ios", "token": wire_fcm.VALID_TOKEN},
                {"platform": "android", "token": wire_fcm.UNREGISTERED_TOKEN},
            ],
        },
    }
    await store_user(quick_services, user)
    status = await post_and_settle(quick_services, providers, FRAUD)
    assert attempts(status)["push"] == [("fcm", "delivered"), ("fcm", "permanent")]
    by_channel = {d["channel"]: d["status"] for d in status["deliveries"]}
    assert by_channel["push"] == "delivered"
    assert by_channel["email"] == "standby"  # push got through: the chain stops there
    assert sorted(r.json()["message"]["token"] for r in providers.fcm_sends()) == sorted(
        [wire_fcm.VALID_TOKEN, wire_fcm.UNREGISTERED_TOKEN]
    )
    table = DeviceRow.__table__  # type: ignore[attr-defined]
    async with quick_services.database.connect() as connection:
        rows: dict[str, bool] = dict(
            (await connection.execute(sa.select(table.c.token, table.c.active))).all()
        )
    assert rows == {wire_fcm.VALID_TOKEN: True, wire_fcm.UNREGISTERED_TOKEN: False}


async def test_each_device_s_push_goes_to_the_provider_that_issued_its_token(
    quick_services: Services, providers: Providers
) -> None:
    """An iPhone registered with a raw APNs token is pushed straight to Apple over HTTP/2, an
    Android device with an FCM token through FCM; neither token reaches the other provider."""
    user = {
        **ADA,
        "contacts": {
            "email": "ada@example.com",
            "devices": [
                {"platform": "android", "token": wire_fcm.VALID_TOKEN},
                {"platform": "ios", "token": wire_apns.VALID_TOKEN, "provider": "apns"},
            ],
        },
    }
    await store_user(quick_services, user)
    status = await post_and_settle(quick_services, providers, FRAUD)
    [push] = [d for d in status["deliveries"] if d["channel"] == "push"]
    assert push["status"] == "delivered"
    outcomes = sorted((a["provider"], a["outcome"]) for a in push["attempts"])
    # The iPhone skips FCM, which does not take APNs tokens; the Android device stops at FCM.
    assert outcomes == [("apns", "delivered"), ("fcm", "delivered"), ("fcm", "skipped")]
    assert [r.json()["message"]["token"] for r in providers.fcm_sends()] == [wire_fcm.VALID_TOKEN]
    [apple] = providers.apple.requests
    assert apple.path == f"/3/device/{wire_apns.VALID_TOKEN}"
    assert (apple.headers["apns-push-type"], apple.headers["apns-priority"]) == ("alert", "10")
    assert apple.headers["apns-collapse-id"] == push["delivery_id"]
    assert int(apple.headers["apns-expiration"]) > 0  # the critical tier's expiry reaches Apple
    assert wire_apns.provider_token_problem(apple) is None
