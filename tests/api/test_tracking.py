"""Delivery tracking over HTTP, on SQLite and PostgreSQL with a real Redis: SendGrid's signed
event webhook (real ECDSA keys, verified by the SDK), Twilio's signed status callbacks, and
RFC 8058 one-click unsubscribe, from the header a worker writes to the link that turns the
category off."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from gateway.metrics import REGISTRY
from gateway.redact import Secret
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.store.tables import AttemptRow, ContactRow, DeliveryEventRow
from gateway.tracking import inbound_sms, unsubscribe
from tests.conftest import Clock, make_settings, open_services
from tests.harness import (
    ADA,
    DELIVERIES,
    JOBS,
    admin_key,
    client,
    count,
    eventually,
    running_worker,
    store_user,
)

PUBLIC_URL = "https://notify.example.com"
TWILIO_TOKEN = "twilio-auth-token-for-tests-0001"
UNSUBSCRIBE_SECRET = "unsubscribe-secret-for-tests-0123456789abcdef"
EVENTS = DeliveryEventRow.__table__  # type: ignore[attr-defined]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


CONTACTS = ContactRow.__table__  # type: ignore[attr-defined]
ATTEMPTS = AttemptRow.__table__  # type: ignore[attr-defined]
TWILIO_PATH = "/v1/webhooks/twilio/status"
DATA = {
    "order.shipped": {"order_id": "A-1", "carrier": "UPS"},
    "social.mention": {
        "actor_id": "u_2",
        "actor_name": "Grace",
        "excerpt": "hi @ada",
        "post_url": "https://s.example/p/1",
    },
}


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key pair like the one SendGrid signs its event webhook with."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it: base64 DER, no PEM lines."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, at: float | None = None) -> dict[str, str]:
    """SendGrid's headers: an ECDSA (SHA-256) signature over `timestamp + body`, base64 DER."""
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "content-type": "application/json",
    }


def twilio_signed(form: dict[str, str], url: str = PUBLIC_URL + TWILIO_PATH) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, form)}


@pytest.fixture
async def tracked(
    database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signing_key: ec.EllipticCurvePrivateKey,
) -> AsyncIterator[Services]:
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    settings = make_settings(
        database_url,
        redis_server.url,
        tmp_path,
        public_url=PUBLIC_URL,
        sendgrid_webhook_public_key=public_key_text(signing_key),
        twilio_auth_token=Secret(TWILIO_TOKEN),
        unsubscribe_secret=Secret(UNSUBSCRIBE_SECRET),
        unsubscribe_mailto="unsubscribe@notify.example.com",
    )
    opened = await open_services(settings, Clock())
    await opened.start()
    yield opened
    await opened.close()


async def accept(services: Services, event: str = "order.shipped") -> dict[str, str]:
    """Store ADA and accept an intent for her: the deliveries' ids by channel."""
    await store_user(services, {**ADA, "preferences": [{"event": "*", "channel": "sms", "enabled": True}]})
    token = await admin_key(services, f"producer-{time.monotonic_ns()}")
    async with client(services, token) as http:
        response = await http.post(
            "/v1/intents", json={"event": event, "user_id": "u_ada", "data": DATA[event]}
        )
    assert response.status_code == 202, response.text
    notification_id = response.json()["notification_id"]
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(DELIVERIES.c.channel, DELIVERIES.c.id).where(
                DELIVERIES.c.notification_id == notification_id
            )
        )
        return {r.channel: r.id for r in rows}


async def suppressed(services: Services, event: str = "order.shipped") -> dict[str, str]:
    """What a dry run for ADA suppresses now, by channel."""
    token = await admin_key(services, f"dry-{time.monotonic_ns()}")
    async with client(services, token) as http:
        response = await http.post("/v1/dry-run", json={"intent": {"event": event, "user_id": "u_ada"}})
    assert response.status_code == 200, response.text
    return {s["channel"]: s["reason"] for s in response.json()["suppressed"]}


@contextlib.asynccontextmanager
async def logged(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Capture the tracking routes' warnings (the app leaves the root logger's handlers,
    caplog's among them, in place: `logging_config=None` in `create_app`)."""
    with caplog.at_level(logging.WARNING, logger="gateway.api.tracking"):
        yield


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    return dict(body["error"])


def sendgrid_event(kind: str, delivery_id: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "W3kZ8r5pRmWk3vB0yYc1Xw.filterdrecv-1-2",
        "delivery_id": delivery_id,
        "notification_id": "ntf_x",
        **extra,
    }


# --- SendGrid ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "status"),
    [
        (
            [{"event": "bounce", "type": "bounce", "reason": "550 5.1.1 ada@example.com: no such user"}],
            "bounced",
        ),
        ([{"event": "spamreport"}], "complained"),
    ],
)
async def test_a_hard_bounce_or_a_complaint_leaves_later_decisions_without_the_address(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey, records: list[dict[str, Any]], status: str
) -> None:
    ids = await accept(tracked)
    assert "email" not in await suppressed(tracked)
    body = json.dumps(
        [sendgrid_event("delivered", ids["email"], "ev-1")]
        + [
            sendgrid_event(r["event"], ids["email"], "ev-2", **{k: v for k, v in r.items() if k != "event"})
            for r in records
        ]
    ).encode()
    async with client(tracked) as http:  # no API key: the signature is the credential
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "stored": 2,
        "duplicates": 0,
        "unmatched": 0,
        "marked": 1,
        "opted_out": 0,
        "resent": 0,
        "skipped": 0,
    }
    assert (await suppressed(tracked))["email"] == "no_address"
    async with tracked.database.connect() as connection:
        contact = (await connection.execute(sa.select(CONTACTS).where(CONTACTS.c.kind == "email"))).one()
        events = list(await connection.execute(sa.select(EVENTS).order_by(EVENTS.c.id)))
    assert contact.status == status
    assert [(e.type, e.delivery_id, e.provider) for e in events] == [
        ("delivered", ids["email"], "sendgrid"),
        ("bounced" if status == "bounced" else "complained", ids["email"], "sendgrid"),
    ]
    assert all("ada@example.com" not in (e.detail or "") for e in events)  # masked in the store


async def test_a_retried_bounce_applies_its_effect_even_when_the_event_was_already_stored(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """The event is committed before the address is marked; if marking failed (the webhook
    answered 5xx), the provider's retry is the only second chance: it must mark again."""
    ids = await accept(tracked)
    body = json.dumps(
        [sendgrid_event("bounce", ids["email"], "ev-b", type="bounce", reason="550 5.1.1")]
    ).encode()
    async with client(tracked) as http:
        first = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert first.json()["stored"] == 1
    async with tracked.database.begin() as connection:  # as if marking had failed after the commit
        await connection.execute(
            sa.update(CONTACTS).where(CONTACTS.c.kind == "email").values(status="active")
        )
    assert "email" not in await suppressed(tracked)
    async with client(tracked) as http:
        retry = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert retry.status_code == 200 and retry.json()["duplicates"] == 1 and retry.json()["stored"] == 0
    assert (await suppressed(tracked))["email"] == "no_address"


async def test_the_notification_status_shows_what_the_provider_reported(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    ids = await accept(tracked)
    now = int(time.time())
    body = json.dumps(
        [
            sendgrid_event("delivered", ids["email"], "ev-d", timestamp=now - 20),
            sendgrid_event("open", ids["email"], "ev-o", timestamp=now - 10),
            sendgrid_event("click", ids["email"], "ev-c", timestamp=now, url="https://x.example"),
        ]
    ).encode()
    async with tracked.database.connect() as connection:
        notification_id = await connection.scalar(
            sa.select(DELIVERIES.c.notification_id).where(DELIVERIES.c.id == ids["email"])
        )
    async with client(tracked) as http:
        assert (
            await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
        ).is_success
    async with client(tracked, await admin_key(tracked, f"reader-{time.monotonic_ns()}")) as http:
        status = (await http.get(f"/v1/notifications/{notification_id}")).json()
    email = next(d for d in status["deliveries"] if d["channel"] == "email")
    assert [(e["type"], e["provider"]) for e in email["events"]] == [
        ("delivered", "sendgrid"),
        ("opened", "sendgrid"),
        ("clicked", "sendgrid"),
    ]
    assert all(d["events"] == [] for d in status["deliveries"] if d["channel"] != "email")


async def test_a_retried_webhook_is_stored_once(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    ids = await accept(tracked)
    body = json.dumps(
        [
            sendgrid_event("open", ids["email"], "ev-open"),
            sendgrid_event("click", ids["email"], "ev-click", url="https://x.example"),
        ]
    ).encode()
    async with client(tracked) as http:
        first = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
        again = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert first.json()["stored"] == 2
    assert again.status_code == 200 and again.json()["stored"] == 0 and again.json()["duplicates"] == 2
    assert await count(tracked, EVENTS) == 2
    types = {r.type for r in await tracked_events(tracked)}
    assert types == {"opened", "clicked"}


async def tracked_events(services: Services) -> list[Any]:
    async with services.database.connect() as connection:
        return list(await connection.execute(sa.select(EVENTS)))


async def test_a_blocked_bounce_is_soft_and_keeps_the_address(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    ids = await accept(tracked)
    body = json.dumps(
        [sendgrid_event("bounce", ids["email"], "ev-b", type="blocked", reason="try later")]
    ).encode()
    async with client(tracked) as http:
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert response.json()["marked"] == 0
    assert [r.type for r in await tracked_events(tracked)] == ["soft_bounced"]
    assert "email" not in await suppressed(tracked)


async def test_an_event_without_our_custom_arg_is_tied_by_the_message_id(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    ids = await accept(tracked)
    async with tracked.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.id == ids["email"])
            .values(provider_message_id="W3kZ8r5pRmWk3vB0yYc1Xw")
        )
    record = sendgrid_event("bounce", "", "ev-m", type="bounce")
    del record["delivery_id"]
    body = json.dumps([record]).encode()
    async with client(tracked) as http:
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert response.json()["marked"] == 1
    assert [r.delivery_id for r in await tracked_events(tracked)] == [ids["email"]]


@pytest.mark.parametrize("tamper", ["body", "signature", "missing", "stale", "other_key"])
async def test_a_bad_signature_is_refused_logged_and_changes_nothing(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture, tamper: str
) -> None:
    ids = await accept(tracked)
    body = json.dumps([sendgrid_event("spamreport", ids["email"], "ev-x")]).encode()
    headers = signed(signing_key, body)
    if tamper == "body":
        body = body.replace(b"spamreport", b"delivered")
    elif tamper == "signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64 at all!"
    elif tamper == "missing":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    elif tamper == "stale":
        headers = signed(signing_key, body, at=time.time() - 3600)  # a valid signature, replayed late
    else:
        headers = signed(ec.generate_private_key(ec.SECP256R1()), body)
    async with client(tracked) as http, logged(caplog):
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "bad_signature"
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.api.tracking"]
    assert len(warnings) == 1 and "/v1/webhooks/sendgrid" in warnings[0]
    assert "ada@example.com" not in warnings[0] and public_key_text(signing_key) not in warnings[0]
    assert await count(tracked, EVENTS) == 0
    assert "email" not in await suppressed(tracked)


@pytest.mark.parametrize(
    "unreadable",
    [
        {"timestamp": 10**15},  # year ~31 million: past what a datetime holds
        {"timestamp": -(10**15)},
        {"timestamp": 10**30},  # past a 64-bit integer
        {"timestamp": 1e400},  # past a float
        {"timestamp": "yesterday"},
        {"event": ["delivered"]},
    ],
)
async def test_a_signed_event_that_cannot_be_read_is_skipped_and_the_rest_stored(
    tracked: Services,
    signing_key: ec.EllipticCurvePrivateKey,
    caplog: pytest.LogCaptureFixture,
    unreadable: dict[str, Any],
) -> None:
    """One such event used to fail the whole batch with a 500, so SendGrid resent it forever."""
    ids = await accept(tracked)
    bad = {**sendgrid_event("bounce", ids["email"], "ev-bad", email="ada.lovelace@example.com"), **unreadable}
    records = [
        sendgrid_event("delivered", ids["email"], "ev-1"),
        bad,
        sendgrid_event("open", ids["email"], "ev-2"),
    ]
    body = json.dumps(records).replace('"timestamp": Infinity', '"timestamp": 1e400').encode()
    before = metric("notigate_webhook_events_skipped_total", provider="sendgrid")
    async with client(tracked) as http, logged(caplog):
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert response.status_code == 200, response.text
    assert (response.json()["stored"], response.json()["skipped"]) == (2, 1)
    assert {r.type for r in await tracked_events(tracked)} == {"delivered", "opened"}
    assert "email" not in await suppressed(tracked)  # the unreadable bounce marked nothing
    assert metric("notigate_webhook_events_skipped_total", provider="sendgrid") == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.api.tracking"]
    assert len(warnings) == 1 and "skipped 1 SendGrid event" in warnings[0] and "record 1" in warnings[0]
    assert "ada.lovelace@example.com" not in warnings[0] and "ada@example.com" not in warnings[0]


async def test_unconfigured_webhooks_answer_503_naming_the_variable(
    database_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    services = await open_services(make_settings(database_url, redis_server.url, tmp_path))
    await services.start()
    try:
        async with client(services) as http:
            sendgrid = await http.post("/v1/webhooks/sendgrid", content=b"[]")
            twilio = await http.post(TWILIO_PATH, data={"MessageSid": "SM1", "MessageStatus": "sent"})
            page = await http.get("/v1/unsubscribe/us_anything")
    finally:
        await services.close()
    assert (sendgrid.status_code, twilio.status_code, page.status_code) == (503, 503, 503)
    assert error_of(sendgrid)["code"] == "webhook_not_configured"
    assert "NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY" in error_of(sendgrid)["message"]
    assert "TWILIO_AUTH_TOKEN" in error_of(twilio)["message"]
    assert "NOTIGATE_UNSUBSCRIBE_SECRET" in error_of(page)["message"]


# --- Twilio --------------------------------------------------------------------------------


async def test_an_undelivered_sms_to_an_unknown_handset_marks_the_phone(tracked: Services) -> None:
    ids = await accept(tracked)
    assert "sms" not in await suppressed(tracked)
    async with tracked.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.id == ids["sms"])
            .values(provider_message_id="SM0123456789abcdef")
        )
    form = {
        "MessageSid": "SM0123456789abcdef",
        "SmsSid": "SM0123456789abcdef",
        "MessageStatus": "undelivered",
        "ErrorCode": "30005",
        "To": "+33612345678",
        "AccountSid": "AC123",
    }
    async with client(tracked) as http:
        response = await http.post(TWILIO_PATH, data=form, headers=twilio_signed(form))
        again = await http.post(TWILIO_PATH, data=form, headers=twilio_signed(form))
    assert response.status_code == 200, response.text
    assert response.json()["marked"] == 1
    assert again.json()["duplicates"] == 1
    assert (await suppressed(tracked))["sms"] == "no_address"
    assert [(r.type, r.delivery_id, r.detail) for r in await tracked_events(tracked)] == [
        ("failed", ids["sms"], "undelivered (error 30005)")
    ]


async def test_a_stop_reply_marks_the_phone_and_a_delivery_marks_nothing(tracked: Services) -> None:
    ids = await accept(tracked)
    async with tracked.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES).where(DELIVERIES.c.id == ids["sms"]).values(provider_message_id="SMstop")
        )
    delivered = {"MessageSid": "SMstop", "MessageStatus": "delivered", "To": "+33612345678"}
    stopped = {"MessageSid": "SMstop", "MessageStatus": "failed", "ErrorCode": "21610", "To": "+33612345678"}
    async with client(tracked) as http:
        first = await http.post(TWILIO_PATH, data=delivered, headers=twilio_signed(delivered))
        assert first.json()["marked"] == 0 and "sms" not in await suppressed(tracked)
        second = await http.post(TWILIO_PATH, data=stopped, headers=twilio_signed(stopped))
    assert second.json()["marked"] == 1
    assert (await suppressed(tracked))["sms"] == "no_address"


async def sent_sms(services: Services, sid: str) -> str:
    """Accept an intent for ADA and record its SMS as Twilio having taken it (message `sid`)."""
    ids = await accept(services)
    async with services.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.id == ids["sms"])
            .values(status="delivered", attempts=1, provider="twilio", provider_message_id=sid)
        )
    return ids["sms"]


async def delivery_row(services: Services, delivery_id: str) -> Any:
    async with services.database.connect() as connection:
        return (await connection.execute(sa.select(DELIVERIES).where(DELIVERIES.c.id == delivery_id))).one()


async def test_an_sms_to_a_phone_that_is_off_is_sent_again_and_the_phone_kept(tracked: Services) -> None:
    """Twilio 30003 (handset off or out of coverage) is temporary: no bounce, a retry."""
    delivery_id = await sent_sms(tracked, "SMoff")
    form = {"MessageSid": "SMoff", "MessageStatus": "undelivered", "ErrorCode": "30003", "To": "+33612345678"}
    async with client(tracked) as http:
        first = await http.post(TWILIO_PATH, data=form, headers=twilio_signed(form))
        again = await http.post(TWILIO_PATH, data=form, headers=twilio_signed(form))
    assert first.status_code == 200, first.text
    assert (first.json()["marked"], first.json()["resent"]) == (0, 1)
    assert (again.json()["duplicates"], again.json()["resent"]) == (1, 0)  # one retry, not two
    row = await delivery_row(tracked, delivery_id)
    assert (row.status, row.reason) == ("retrying", "carrier_retry")
    assert row.next_attempt_at is not None
    async with tracked.database.connect() as connection:
        queued = [r.deliveries for r in await connection.execute(sa.select(JOBS.c.deliveries))]
    assert [delivery_id] in queued  # its retry job, in the outbox the relay hands out
    assert "sms" not in await suppressed(tracked)


async def test_a_late_carrier_failure_of_an_earlier_message_resends_nothing(tracked: Services) -> None:
    delivery_id = await sent_sms(tracked, "SMnewer")
    form = {"MessageSid": "SMolder", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    async with tracked.database.begin() as connection:  # the older message was an earlier attempt
        await connection.execute(
            sa.insert(ATTEMPTS).values(
                delivery_id=delivery_id,
                provider="twilio",
                outcome="delivered",
                provider_message_id="SMolder",
                at=tracked.clock(),
            )
        )
    async with client(tracked) as http:
        response = await http.post(TWILIO_PATH, data=form, headers=twilio_signed(form))
    assert response.json()["resent"] == 0
    assert (await delivery_row(tracked, delivery_id)).status == "delivered"


@pytest.mark.parametrize("tamper", ["field", "url", "token", "missing"])
async def test_a_tampered_twilio_callback_is_refused(
    tracked: Services, caplog: pytest.LogCaptureFixture, tamper: str
) -> None:
    ids = await accept(tracked)
    async with tracked.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES).where(DELIVERIES.c.id == ids["sms"]).values(provider_message_id="SMt")
        )
    form = {"MessageSid": "SMt", "MessageStatus": "failed", "ErrorCode": "30003", "To": "+33612345678"}
    headers = twilio_signed(form)
    if tamper == "field":
        form["ErrorCode"] = "30005"
    elif tamper == "url":  # signed for another host: not the URL Twilio called
        headers = twilio_signed(form, "https://elsewhere.example" + TWILIO_PATH)
    elif tamper == "token":
        headers = {
            "X-Twilio-Signature": RequestValidator("another-token").compute_signature(
                PUBLIC_URL + TWILIO_PATH, form
            )
        }
    else:
        headers = {}
    async with client(tracked) as http, logged(caplog):
        response = await http.post(TWILIO_PATH, data=form, headers=headers)
    assert response.status_code == 401 and error_of(response)["code"] == "bad_signature"
    lines = " ".join(r.getMessage() for r in caplog.records if r.name == "gateway.api.tracking")
    assert TWILIO_PATH in lines and TWILIO_TOKEN not in lines and "+33612345678" not in lines
    assert await count(tracked, EVENTS) == 0
    assert "sms" not in await suppressed(tracked)


INBOUND_PATH = "/v1/webhooks/twilio/inbound"


def inbound(body: str, sid: str, **extra: str) -> dict[str, str]:
    """What Twilio posts when someone texts our number."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC123",
        "From": "+33612345678",
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        **extra,
    }


async def text_us(http: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    return await http.post(INBOUND_PATH, data=form, headers=twilio_signed(form, PUBLIC_URL + INBOUND_PATH))


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", "stop"),
        ("stopall", "stop"),
        (" Unsubscribe\n", "stop"),
        ("cancel.", "stop"),
        ("End", "stop"),
        ("QUIT!", "stop"),
        ("start", "start"),
        ("Yes", "start"),
        ("UNSTOP", "start"),
        ("help", "help"),
        ("INFO", "help"),
        ("please stop", None),
        ("stopping by later", None),
        ("", None),
    ],
)
def test_a_keyword_is_the_whole_text_in_any_case(body: str, keyword: str | None) -> None:
    assert inbound_sms.keyword_of(body) == keyword


async def test_stop_turns_sms_off_for_that_phone_and_start_turns_it_back_on(tracked: Services) -> None:
    await accept(tracked)
    async with client(tracked) as http:
        stop = await text_us(http, inbound(" stop ", "SMin1"))
        assert stop.status_code == 200, stop.text
        assert stop.headers["content-type"].startswith("application/xml")
        assert "<Message>" not in stop.text and "<Response" in stop.text  # Twilio confirms STOP itself
        assert (await suppressed(tracked))["sms"] == "no_address"
        other = await text_us(http, inbound("Stop sending me these please", "SMin2"))
        assert "<Message>" not in other.text and (await suppressed(tracked))["sms"] == "no_address"
        start = await text_us(http, inbound("UNSTOP", "SMin3"))
    assert start.status_code == 200 and "<Message>" not in start.text
    assert "sms" not in await suppressed(tracked)
    async with tracked.database.connect() as connection:
        [row] = await connection.execute(sa.select(CONTACTS).where(CONTACTS.c.kind == "phone"))
    assert (row.status, row.reason) == ("active", None)


async def test_start_undoes_a_stop_twilio_reported_with_21610(tracked: Services) -> None:
    await sent_sms(tracked, "SM21610")
    stopped = {"MessageSid": "SM21610", "MessageStatus": "failed", "ErrorCode": "21610", "To": "+33612345678"}
    async with client(tracked) as http:
        await http.post(TWILIO_PATH, data=stopped, headers=twilio_signed(stopped))
        assert (await suppressed(tracked))["sms"] == "no_address"
        # Advanced Opt-Out names the keyword itself: Twilio's reading wins over ours.
        await text_us(http, inbound("Oui", "SMin4", OptOutType="START"))
    assert "sms" not in await suppressed(tracked)


async def test_help_is_answered_in_twiml_and_changes_nothing(tracked: Services) -> None:
    await accept(tracked)
    async with client(tracked) as http:
        response = await text_us(http, inbound("help", "SMin5"))
    assert response.status_code == 200
    assert "<Message>Reply STOP to stop these texts, START to get them again.</Message>" in response.text
    assert "sms" not in await suppressed(tracked)


async def test_an_unsigned_text_is_refused_and_changes_nothing(tracked: Services) -> None:
    await accept(tracked)
    form = inbound("STOP", "SMin6")
    async with client(tracked) as http:
        forged = await http.post(INBOUND_PATH, data=form, headers=twilio_signed(form))  # status URL
        unsigned = await http.post(INBOUND_PATH, data=form)
        no_sender = await text_us(http, {k: v for k, v in form.items() if k != "From"})
    assert (forged.status_code, unsigned.status_code) == (401, 401)
    assert error_of(forged)["code"] == "bad_signature"
    assert no_sender.status_code == 422 and error_of(no_sender)["code"] == "invalid_payload"
    assert "sms" not in await suppressed(tracked)


# --- one-click unsubscribe -----------------------------------------------------------------


async def test_one_click_unsubscribe_turns_the_category_off_for_email_only(tracked: Services) -> None:
    await store_user(
        tracked, {**ADA, "preferences": [{"event": "social.mention", "channel": "*", "enabled": True}]}
    )
    assert "email" not in await suppressed(tracked, "social.mention")
    token = unsubscribe.issue(Secret(UNSUBSCRIBE_SECRET), "u_ada", "social")
    async with client(tracked) as http:
        page = await http.get(f"/v1/unsubscribe/{token}")
        assert page.status_code == 200 and 'method="post"' in page.text
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert "email" not in await suppressed(tracked, "social.mention")  # a GET never unsubscribes
        first = await http.post(
            f"/v1/unsubscribe/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        again = await http.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == 200, first.text
    assert first.json() == {"unsubscribed": True, "category": "social", "channel": "email", "changed": True}
    assert again.status_code == 200 and again.json()["changed"] is False
    later = await suppressed(tracked, "social.mention")
    assert later.get("email") == "opted_out"
    assert "push" not in later and "in_app" not in later  # the other channels are untouched
    user = await tracked.recipients.get_user("u_ada")
    assert user is not None
    assert sorted((p.event, p.channel, p.enabled) for p in user.preferences) == [
        ("social.comment", "email", False),
        ("social.follow", "email", False),
        ("social.like", "email", False),
        ("social.mention", "*", True),
        ("social.mention", "email", False),
    ]
    assert [r.type for r in await tracked_events(tracked)] == ["unsubscribed"]


async def test_unsubscribe_refuses_forged_links_and_non_one_click_bodies(tracked: Services) -> None:
    await store_user(tracked)
    forged = unsubscribe.issue(Secret("x" * 40), "u_ada", "social")
    good = unsubscribe.issue(Secret(UNSUBSCRIBE_SECRET), "u_ada", "social")
    async with client(tracked) as http:
        bad = await http.post(f"/v1/unsubscribe/{forged}", data={"List-Unsubscribe": "One-Click"})
        empty = await http.post(f"/v1/unsubscribe/{good}")
        shown = await http.get(f"/v1/unsubscribe/{forged}")
    assert bad.status_code == 404 and error_of(bad)["code"] == "invalid_unsubscribe_token"
    assert shown.status_code == 404
    assert empty.status_code == 422 and error_of(empty)["code"] == "not_one_click"
    assert "email" not in await suppressed(tracked, "social.mention")


async def test_a_sendgrid_unsubscribe_event_turns_the_category_off(
    tracked: Services, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    ids = await accept(tracked, "social.mention")
    body = json.dumps([sendgrid_event("unsubscribe", ids["email"], "ev-u")]).encode()
    async with client(tracked) as http:
        response = await http.post("/v1/webhooks/sendgrid", content=body, headers=signed(signing_key, body))
    assert response.json()["opted_out"] == 1
    assert (await suppressed(tracked, "social.mention"))["email"] == "opted_out"


async def test_the_worker_writes_one_click_headers_that_unsubscribe(
    tracked: Services, tmp_path: Path
) -> None:
    """End to end: the dev outbox's .eml carries RFC 8058 headers for social mail, none for
    transactional mail, and POSTing to the link turns social email off."""
    social = await accept(tracked, "social.mention")
    order = await accept(tracked, "order.shipped")
    outbox = tmp_path / "outbox" / "email"

    async def written() -> bool:
        return len(list(outbox.glob("*.eml"))) >= 2 if outbox.exists() else False

    async with running_worker(tracked):
        await eventually(written, within=30)
    by_delivery = {
        delivery: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for delivery, path in (
            (d, next(p for p in outbox.glob(f"{d}-*.eml"))) for d in (social["email"], order["email"])
        )
    }
    social_mail, order_mail = by_delivery[social["email"]], by_delivery[order["email"]]
    assert order_mail["List-Unsubscribe"] is None  # transactional: exempt by default
    assert social_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link, mailto = (part.strip().strip("<>") for part in str(social_mail["List-Unsubscribe"]).split(","))
    assert link.startswith(f"{PUBLIC_URL}/v1/unsubscribe/us_")
    assert mailto.startswith("mailto:unsubscribe@notify.example.com")
    raw = next(outbox.glob(f"{social['email']}-*.eml")).read_bytes()
    assert f"List-Unsubscribe: <{link}>, <{mailto}>".encode() in raw  # as written: no encoded words
    async with client(tracked) as http:
        response = await http.post(link.removeprefix(PUBLIC_URL), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and response.json()["category"] == "social"
    assert (await suppressed(tracked, "social.mention"))["email"] == "opted_out"
    assert "email" not in await suppressed(tracked, "order.shipped")


def test_security_and_urgent_mail_carries_no_unsubscribe_link(policy: Any) -> None:
    from types import SimpleNamespace

    links = unsubscribe.UnsubscribeLinks(Secret(UNSUBSCRIBE_SECRET), PUBLIC_URL)
    claimed = SimpleNamespace(channel="email", user_id="u_ada")

    def headers(category: str, priority: str, rule: str) -> dict[str, str]:
        note = SimpleNamespace(category=category, priority=priority, rule=rule)
        return unsubscribe.headers_for(links, policy, claimed, note)

    assert headers("marketing", "normal", "promotions")["List-Unsubscribe-Post"] == unsubscribe.ONE_CLICK
    assert headers("security", "normal", "account-change") == {}  # the category bypasses opt-out
    assert headers("social", "urgent", "mentions") == {}  # urgent bypasses opt-out
    unconfigured = SimpleNamespace(category="social", priority="normal", rule="mentions")
    assert unsubscribe.headers_for(None, policy, claimed, unconfigured) == {}
