"""POST /v1/templates/preview: each channel's rendered message, nothing sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.api.context import Gateway
from gateway.model import UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.settings import Settings
from tests.api.test_dry_run import USER, StoredUsers
from tests.conftest import REPO

DATA = {"order_id": "A-1001", "carrier": "UPS", "eta": "Monday", "tracking_url": "https://t.example/A-1001"}
AT = "2026-11-21T18:00:00Z"  # 10:00 in Los Angeles: outside quiet hours


@pytest.fixture
def client(policy: CompiledPolicy) -> Iterator[TestClient]:  # type: ignore[type-arg]
    gateway = Gateway(
        settings=Settings(policies_dir=REPO / "policies"),
        policy=policy,
        users=StoredUsers(msgspec.convert(USER, UserState)),
        clock=lambda: dt.datetime(2026, 11, 21, 18, 0, tzinfo=dt.UTC),
    )
    with TestClient(create_app(gateway=gateway)) as test_client:
        yield test_client


def post(client: TestClient, intent: dict[str, Any], **extra: Any) -> Any:  # type: ignore[type-arg]
    body = {
        "intent": {"event": "order.shipped", "user_id": "u_ada", "data": DATA, **intent},
        "at": AT,
        **extra,
    }
    return client.post("/v1/templates/preview", json=body)


def test_renders_each_channel_the_policy_picks(client: TestClient) -> None:  # type: ignore[type-arg]
    response = post(client, {})
    assert response.status_code == 200, response.text
    body = response.json()
    dry = client.post(
        "/v1/dry-run",
        json={"intent": {"event": "order.shipped", "user_id": "u_ada", "data": DATA}, "at": AT},
    ).json()
    assert [m["channel"] for m in body["messages"] if not m["standby"]] == [
        d["channel"] for d in dry["deliveries"]
    ]
    by_channel = {m["channel"]: m for m in body["messages"]}
    email = by_channel["email"]
    assert email["fields"]["subject"] == "Your order A-1001 has shipped"
    assert '<a href="https://t.example/A-1001">' in email["fields"]["html"]
    assert email["file"].endswith("templates/order.shipped/email.yaml") and email["locale"] is None
    push = by_channel["push"]
    assert push["fields"]["data"] == {"order_id": "A-1001", "url": "https://t.example/A-1001"}
    assert 0 < push["payload_bytes"] < 4096
    assert body["policy_version"] == dry["policy_version"]
    assert {s["channel"] for s in body["suppressed"]} == {s["channel"] for s in dry["suppressed"]}


def test_the_locale_chain_picks_the_french_variant(client: TestClient) -> None:  # type: ignore[type-arg]
    body = post(client, {"locale": "fr-CA"}).json()
    email = next(m for m in body["messages"] if m["channel"] == "email")
    assert email["locale"] == "fr" and email["fields"]["subject"] == "Votre commande A-1001 a été expédiée"
    assert body["locale"] == "fr-CA"


def test_sms_reports_its_segments(client: TestClient) -> None:  # type: ignore[type-arg]
    intent = {"event": "security.otp", "priority": "urgent", "data": {"code": "123456", "minutes": 10}}
    body = post(client, intent).json()
    sms = next(m for m in body["messages"] if m["channel"] == "sms")
    assert "123456" in sms["fields"]["body"]
    assert sms["sms"] == {"encoding": "GSM-7", "units": len(sms["fields"]["body"]), "segments": 1}


def test_missing_data_is_a_422_naming_template_and_variable(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.post(
        "/v1/templates/preview",
        json={
            "intent": {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1"}},
            "at": AT,
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "template_error" and error["field"] == "intent.data"
    assert "templates/order.shipped/" in error["message"] and "carrier" in error["message"]


def test_an_unknown_user_gets_what_intake_would_send_them(client: TestClient) -> None:  # type: ignore[type-arg]
    """Intake accepts an id nothing stores and writes only their feed: the preview shows that."""
    response = post(client, {"user_id": "u_nobody"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["channel"] for m in body["messages"]] == ["in_app"]
    assert {s["channel"]: s["reason"] for s in body["suppressed"]}["email"] == "no_address"
