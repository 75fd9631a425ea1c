"""The recipient API (`/v1/users/...`, admin keys only) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import httpx
import pytest

from gateway.services import Services
from tests.harness import admin_key, client, store_user

ADA: dict[str, Any] = {
    "user_id": "u_ada",
    "timezone": "Europe/Paris",
    "locale": "fr-FR",
    "contacts": {
        "email": "ada@example.com",
        "phone": "+33612345678",
        "devices": [
            {"platform": "ios", "token": "ios-token-ada-0001", "active": True, "provider": "fcm"},
            {"platform": "android", "token": "android-token-ada-0002", "active": False, "provider": "fcm"},
        ],
        "webhook": "https://hooks.example.com/ada",
    },
    "preferences": [
        {"event": "marketing.*", "channel": "*", "enabled": False, "frequency_cap": None},
        {"event": "order.*", "channel": "sms", "enabled": True, "frequency_cap": 3},
        {"event": "*", "channel": "email", "enabled": True, "frequency_cap": None},
    ],
    "quiet_hours": {"start": "22:30", "end": "07:00"},
}
SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1001", "carrier": "UPS"}}


def ada(**changes: Any) -> dict[str, Any]:
    user = copy.deepcopy(ADA)
    user.update(changes)
    return user


def contacts(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(ADA["contacts"]), **changes}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The contract's error body, checked for its exact shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return dict(body["error"])


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- PUT / GET / DELETE a user -----------------------------------------------------------


async def test_put_creates_then_replaces_and_get_returns_exactly_what_was_put(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        created = await http.put("/v1/users/u_ada", json=ADA)
        assert created.status_code == 201, created.text
        assert created.json() == ADA
        assert (await http.get("/v1/users/u_ada")).json() == ADA

        changed = ada(
            timezone="America/New_York",
            locale="en-US",
            preferences=list(reversed(ADA["preferences"])),
            quiet_hours={"start": "23:00", "end": "06:30"},
        )
        replaced = await http.put("/v1/users/u_ada", json=changed)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json() == changed
        fetched = await http.get("/v1/users/u_ada")
    assert fetched.status_code == 200
    assert fetched.json() == changed
    assert [p["event"] for p in fetched.json()["preferences"]] == ["*", "order.*", "marketing.*"]


async def test_replacing_a_user_drops_what_is_no_longer_given(services: Services) -> None:
    token = await admin_key(services)
    slim = {
        "user_id": "u_ada",
        "contacts": {"email": "ada@example.com", "devices": [ADA["contacts"]["devices"][0]]},
    }
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        assert (await http.put("/v1/users/u_ada", json=slim)).status_code == 200
        body = (await http.get("/v1/users/u_ada")).json()
        devices = (await http.get("/v1/users/u_ada/devices")).json()
        preferences = (await http.get("/v1/users/u_ada/preferences")).json()
    assert body == {
        "user_id": "u_ada",
        "timezone": None,
        "locale": None,
        "contacts": {
            "email": "ada@example.com",
            "phone": None,
            "devices": [
                {"platform": "ios", "token": "ios-token-ada-0001", "active": True, "provider": "fcm"}
            ],
            "webhook": None,
        },
        "preferences": [],
        "quiet_hours": None,
    }
    assert devices == [{"platform": "ios", "token": "ios-token-ada-0001", "active": True, "provider": "fcm"}]
    assert preferences == []
    stored = await services.recipients.get_user("u_ada")
    assert stored is not None and stored.contacts.phone is None and stored.preferences == []


async def test_a_body_for_another_user_is_refused(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.put("/v1/users/u_bob", json=ADA)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["field"]) == ("user_mismatch", "user_id")
    assert await services.recipients.get_user("u_bob") is None
    assert await services.recipients.get_user("u_ada") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (ada(timezone="Mars/Olympus_Mons"), "timezone"),
        (ada(contacts=contacts(email="not-an-address")), "contacts.email"),
        (ada(contacts=contacts(phone="0612345678")), "contacts.phone"),
        (ada(contacts=contacts(phone="+33 6 12 34 56 78")), "contacts.phone"),
        (ada(nickname="Ada"), "nickname"),
        (ada(contacts=contacts(fax="+33612345678")), "contacts.fax"),
    ],
    ids=["timezone", "email", "phone-not-e164", "phone-with-spaces", "unknown-field", "unknown-contact"],
)
async def test_an_invalid_user_is_refused_naming_the_field(
    services: Services, body: dict[str, Any], field: str
) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.put("/v1/users/u_ada", json=body)
        missing = await http.get("/v1/users/u_ada")
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert missing.status_code == 404  # nothing was stored


async def test_a_replacement_keeps_the_devices_in_the_order_given(services: Services) -> None:
    token = await admin_key(services)
    web = {"platform": "web", "token": "web-token-ada-0003", "active": True, "provider": "fcm"}
    reordered = ada(contacts=contacts(devices=[web, *reversed(ADA["contacts"]["devices"])]))
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        replaced = await http.put("/v1/users/u_ada", json=reordered)
        fetched = await http.get("/v1/users/u_ada")
    assert replaced.status_code == 200
    assert fetched.json()["contacts"]["devices"] == reordered["contacts"]["devices"]


async def test_a_token_given_twice_is_refused_not_a_server_error(services: Services) -> None:
    token = await admin_key(services)
    ios = ADA["contacts"]["devices"][0]
    twice = ada(contacts=contacts(devices=[ios, {**ios, "platform": "android"}]))
    async with client(services, token) as http:
        response = await http.put("/v1/users/u_ada", json=twice)
        missing = await http.get("/v1/users/u_ada")
    assert response.status_code == 422, response.text
    field = error_of(response)["field"]
    assert field is not None and field.startswith("contacts.devices"), field
    assert missing.status_code == 404


async def test_an_unknown_user_is_not_found(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.get("/v1/users/u_nobody")
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["field"]) == ("unknown_user", "user_id")


async def test_delete_forgets_a_user(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        deleted = await http.delete("/v1/users/u_ada")
        after = await http.get("/v1/users/u_ada")
        again = await http.delete("/v1/users/u_ada")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert after.status_code == 404 and error_of(after)["code"] == "unknown_user"
    assert again.status_code == 404 and error_of(again)["code"] == "unknown_user"
    assert await services.recipients.get_user("u_ada") is None


# --- preferences -------------------------------------------------------------------------


async def test_preferences_are_replaced_in_the_order_given(services: Services) -> None:
    token = await admin_key(services)
    rows = [
        {"event": "social.*", "channel": "push", "enabled": False, "frequency_cap": None},
        {"event": "*", "channel": "*", "enabled": True, "frequency_cap": 5},
        {"event": "order.shipped", "channel": "email", "enabled": True, "frequency_cap": 0},
    ]
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        before = await http.get("/v1/users/u_ada/preferences")
        replaced = await http.put("/v1/users/u_ada/preferences", json=rows)
        after = await http.get("/v1/users/u_ada/preferences")
        user = (await http.get("/v1/users/u_ada")).json()
        emptied = await http.put("/v1/users/u_ada/preferences", json=[])
    assert before.status_code == 200 and before.json() == ADA["preferences"]
    assert replaced.status_code == 200 and replaced.json() == rows
    assert after.json() == rows
    assert user["preferences"] == rows
    assert user["contacts"] == ADA["contacts"]  # only the preferences were replaced
    assert emptied.status_code == 200 and emptied.json() == []


async def test_an_invalid_preference_row_is_refused_naming_its_index(services: Services) -> None:
    token = await admin_key(services)
    rows = [{"event": "order.*"}, {"event": "Not An Event"}]
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        response = await http.put("/v1/users/u_ada/preferences", json=rows)
        kept = await http.get("/v1/users/u_ada/preferences")
    assert response.status_code == 422, response.text
    field = error_of(response)["field"]
    assert field is not None and field.endswith("[1].event"), field
    assert kept.json() == ADA["preferences"]


async def test_preferences_of_an_unknown_user_are_not_found(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        put = await http.put("/v1/users/u_nobody/preferences", json=[{"event": "*"}])
        get = await http.get("/v1/users/u_nobody/preferences")
    for response in (put, get):
        assert response.status_code == 404
        assert (error_of(response)["code"], error_of(response)["field"]) == ("unknown_user", "user_id")
    assert await services.recipients.get_user("u_nobody") is None


# --- devices -----------------------------------------------------------------------------


async def test_devices_are_added_once_listed_and_removed(services: Services) -> None:
    token = await admin_key(services)
    ios, android = ADA["contacts"]["devices"]
    web = {"platform": "web", "token": "web-token-ada-0003", "active": True, "provider": "fcm"}
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        added = await http.post("/v1/users/u_ada/devices", json={"platform": "web", "token": web["token"]})
        again = await http.post("/v1/users/u_ada/devices", json={"platform": "web", "token": web["token"]})
        listed = await http.get("/v1/users/u_ada/devices")
        removed = await http.delete(f"/v1/users/u_ada/devices/{web['token']}")
        removed_again = await http.delete(f"/v1/users/u_ada/devices/{web['token']}")
        after = await http.get("/v1/users/u_ada/devices")
    assert added.status_code == 201 and added.json() == [ios, android, web]
    assert again.status_code == 200 and again.json() == [ios, android, web]
    assert listed.status_code == 200 and listed.json() == [ios, android, web]
    assert removed.status_code == 204
    assert removed_again.status_code == 404
    error = error_of(removed_again)
    assert (error["code"], error["field"]) == ("unknown_device", "token")
    assert after.json() == [ios, android]


async def test_devices_of_an_unknown_user_are_not_found(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        added = await http.post("/v1/users/u_nobody/devices", json={"platform": "ios", "token": "t-1"})
        listed = await http.get("/v1/users/u_nobody/devices")
    for response in (added, listed):
        assert response.status_code == 404
        assert error_of(response)["code"] == "unknown_user"
    assert await services.recipients.get_user("u_nobody") is None


async def test_a_device_a_provider_deactivated_stays_inactive_until_registered_again(
    services: Services,
) -> None:
    token = await admin_key(services)
    ios_token = ADA["contacts"]["devices"][0]["token"]
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        await services.recipients.deactivate_device("u_ada", ios_token, "unregistered", now())
        deactivated = (await http.get("/v1/users/u_ada")).json()["contacts"]["devices"]
        # A client re-sending its old view of the user cannot revive a token a provider said is gone.
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 200
        after_put = (await http.get("/v1/users/u_ada/devices")).json()
        registered = await http.post("/v1/users/u_ada/devices", json={"platform": "ios", "token": ios_token})
        after_post = (await http.get("/v1/users/u_ada/devices")).json()
    assert deactivated[0] == {"platform": "ios", "token": ios_token, "active": False, "provider": "fcm"}
    assert after_put[0] == {"platform": "ios", "token": ios_token, "active": False, "provider": "fcm"}
    assert registered.status_code == 200  # the token was known: re-activated, not duplicated
    assert after_post == [
        {"platform": "ios", "token": ios_token, "active": True, "provider": "fcm"},
        ADA["contacts"]["devices"][1],
    ]
    stored = await services.recipients.get_user("u_ada")
    assert stored is not None and [d.token for d in stored.contacts.active_devices()] == [ios_token]


# --- unusable contacts -------------------------------------------------------------------


async def test_a_bounced_email_is_left_out_until_a_different_one_is_given(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        await services.recipients.mark_contact(
            "u_ada", "email", "ada@example.com", "bounced", "hard_bounce", now()
        )
        bounced = (await http.get("/v1/users/u_ada")).json()["contacts"]
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 200
        same_again = (await http.get("/v1/users/u_ada")).json()["contacts"]
        other = ada(contacts=contacts(email="ada.lovelace@example.org"))
        assert (await http.put("/v1/users/u_ada", json=other)).status_code == 200
        new_address = (await http.get("/v1/users/u_ada")).json()["contacts"]
    assert bounced["email"] is None
    assert bounced["phone"] == ADA["contacts"]["phone"]  # only the bounced address is left out
    assert same_again["email"] is None  # the same address keeps its bounce
    assert new_address["email"] == "ada.lovelace@example.org"


async def test_an_invalid_phone_is_left_out_until_a_new_number_is_given(services: Services) -> None:
    """A new address starts clean even when it replaces an unusable one of the same kind."""
    await store_user(services, ADA)
    await services.recipients.mark_contact(
        "u_ada", "phone", "+33612345678", "invalid", "invalid_number", now()
    )
    token = await admin_key(services)
    async with client(services, token) as http:
        hidden = (await http.get("/v1/users/u_ada")).json()["contacts"]["phone"]
        other = ada(contacts=contacts(phone="+33698765432"))
        assert (await http.put("/v1/users/u_ada", json=other)).status_code == 200
        shown = (await http.get("/v1/users/u_ada")).json()["contacts"]["phone"]
    assert (hidden, shown) == (None, "+33698765432")


# --- the dry-run reads the stored state ---------------------------------------------------


def _suppressed(decision: dict[str, Any]) -> dict[str, str]:
    return {s["channel"]: s["reason"] for s in decision["suppressed"]}


def _delivered(decision: dict[str, Any]) -> list[str]:
    return [d["channel"] for d in decision["deliveries"]]


async def test_a_dry_run_decides_with_the_stored_contacts(services: Services) -> None:
    token = await admin_key(services)
    otp = {"intent": {"event": "security.otp", "user_id": "u_ada", "data": {"code": "123456"}}}
    without_phone = ada(contacts=contacts(phone=None))
    async with client(services, token) as http:
        unknown = await http.post("/v1/dry-run", json=otp)
        assert (await http.put("/v1/users/u_ada", json=without_phone)).status_code == 201
        no_phone = await http.post("/v1/dry-run", json=otp)
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 200
        with_phone = await http.post("/v1/dry-run", json=otp)
    # Not stored yet: decided as intake decides for an unknown user, with nothing on file.
    assert unknown.status_code == 200, unknown.text
    assert _suppressed(unknown.json())["sms"] == "no_address"  # no phone on file, as at intake
    assert no_phone.status_code == 200, no_phone.text
    assert _suppressed(no_phone.json())["sms"] == "no_address"
    assert _delivered(no_phone.json()) == ["email"]
    assert with_phone.status_code == 200, with_phone.text
    assert _delivered(with_phone.json()) == ["sms"]
    assert "sms" not in _suppressed(with_phone.json())


async def test_a_dry_run_decides_with_the_stored_history(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        assert (await http.put("/v1/users/u_ada", json=ADA)).status_code == 201
        before = await http.post("/v1/dry-run", json={"intent": SHIPPED})
        accepted = await http.post("/v1/intents", json=SHIPPED)
        after = await http.post("/v1/dry-run", json={"intent": SHIPPED})
        other_order = await http.post(
            "/v1/dry-run", json={"intent": {**SHIPPED, "data": {"order_id": "A-2002", "carrier": "UPS"}}}
        )
        told_no_history = await http.post("/v1/dry-run", json={"intent": SHIPPED, "history": []})
    assert accepted.status_code == 202, accepted.text
    assert before.status_code == 200, before.text
    first = before.json()
    assert first["deliveries"], first
    assert "duplicate" not in _suppressed(first).values()
    second = after.json()
    assert second["deliveries"] == []
    assert {c: r for c, r in _suppressed(second).items() if c in _delivered(first)} == {
        c: "duplicate" for c in _delivered(first)
    }
    # Different content is no duplicate, and a dry-run given its own (empty) history ignores the store.
    assert _delivered(other_order.json()) == _delivered(first)
    assert _delivered(told_no_history.json()) == _delivered(first)


APNS_TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"


async def test_a_device_declares_whose_token_it_holds_and_the_token_is_checked(services: Services) -> None:
    """An APNs token is 64 hex digits on an iOS device; a raw APNs token is no FCM token."""
    token = await admin_key(services)
    async with client(services, token) as http:
        created = await http.put("/v1/users/u_ada", json=ada())
        assert created.status_code == 201, created.text
        apns = {"platform": "ios", "token": APNS_TOKEN, "provider": "apns"}
        added = await http.post("/v1/users/u_ada/devices", json=apns)
        assert added.status_code == 201, added.text
        assert added.json()[-1] == {**apns, "active": True}
        refused = {
            "raw APNs token as FCM": {"platform": "ios", "token": APNS_TOKEN},
            "APNs token too short": {"platform": "ios", "token": APNS_TOKEN[:-2], "provider": "apns"},
            "APNs on android": {"platform": "android", "token": APNS_TOKEN, "provider": "apns"},
            "bracketed FCM token": {"platform": "ios", "token": "<740f4707 bebcf74f>"},
        }
        for case, device in refused.items():
            response = await http.post("/v1/users/u_ada/devices", json=device)
            assert response.status_code == 422, case
            assert (error_of(response)["code"], error_of(response)["field"]) == ("invalid_token", "token"), (
                case
            )
        unknown = await http.post("/v1/users/u_ada/devices", json={**apns, "provider": "hms"})
        assert unknown.status_code == 422 and error_of(unknown)["field"] == "provider"
        whole = ada()
        whole["contacts"]["devices"] = [
            whole["contacts"]["devices"][0],
            {"platform": "ios", "token": APNS_TOKEN},
        ]
        replaced = await http.put("/v1/users/u_ada", json=whole)
        assert replaced.status_code == 422
        assert error_of(replaced)["field"] == "contacts.devices[1].token"
        assert "provider" in error_of(replaced)["message"]
        listed = await http.get("/v1/users/u_ada/devices")
    assert [d["provider"] for d in listed.json()] == ["fcm", "fcm", "apns"]


async def test_a_webhook_url_into_our_own_network_is_refused_at_registration(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        for url, says in (
            ("http://127.0.0.1:8080/hook", "loopback"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://localhost/hook", "loopback"),
            ("https://hooks.example.com/x\r\nX-Injected: 1", "control characters"),
        ):
            response = await http.put("/v1/users/u_ada", json=ada(contacts=contacts(webhook=url)))
            assert response.status_code == 422, url
            error = error_of(response)
            assert (error["code"], error["field"]) == ("unsafe_url", "contacts.webhook"), url
            assert says in error["message"], url
        public = await http.put(
            "/v1/users/u_ada", json=ada(contacts=contacts(webhook="https://93.184.216.34/h"))
        )
    assert public.status_code == 201, public.text
