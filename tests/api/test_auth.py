"""Authentication, scopes and per-key quotas over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import msgspec
import pytest

from gateway.api.app import create_app
from gateway.redis_server import free_port
from gateway.services import Services
from tests.conftest import Clock, open_services
from tests.harness import admin_key, client, store_user

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1001", "carrier": "UPS"}}
PROMO = {"event": "marketing.promo", "user_id": "u_ada", "data": {"campaign": "black-friday"}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The contract's error body, checked for its exact shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return dict(body["error"])


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def shipped(order: int) -> dict[str, Any]:
    """Distinct content each time, so dedup never enters into what these tests see."""
    return {**SHIPPED, "data": {"order_id": f"A-{order}", "carrier": "UPS"}}


def bulk(*user_ids: str) -> dict[str, Any]:
    return {
        "event": "order.shipped",
        "user_ids": list(user_ids),
        "data": {"order_id": "A-1", "carrier": "UPS"},
    }


def retry_after(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert error_of(response)["code"] == "rate_limited"
    header = response.headers["retry-after"]
    assert header.isdigit(), header
    assert int(header) >= 1
    return int(header)


@pytest.fixture
def raw_client(services: Services) -> httpx.AsyncClient:
    """A client that sends no Authorization header of its own."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services.settings, services=services)),  # type: ignore[arg-type]
        base_url="http://gateway",
    )


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
        ("Bearer", "missing_api_key"),
        ("Bearer    ", "missing_api_key"),
        ("Bearer k_unknown.secret", "invalid_api_key"),
        ("Bearer no-dot-in-this-token", "invalid_api_key"),
    ],
    ids=["none", "empty", "basic", "bearer-alone", "bearer-blank", "unknown-key", "no-secret"],
)
async def test_requests_without_a_valid_key_are_refused(
    services: Services, raw_client: httpx.AsyncClient, authorization: str | None, code: str
) -> None:
    await admin_key(services)  # a key exists; it is just not the one sent
    headers = {"authorization": authorization} if authorization is not None else {}
    async with raw_client as http:
        responses = [
            await http.post("/v1/intents", json=SHIPPED, headers=headers),
            await http.get("/v1/users/u_ada", headers=headers),
            await http.post("/v1/dry-run", json={"intent": SHIPPED}, headers=headers),
        ]
    for response in responses:
        assert response.status_code == 401, response.text
        error = error_of(response)
        assert (error["code"], error["field"]) == (code, None)


async def test_a_key_with_a_wrong_secret_is_refused(
    services: Services, raw_client: httpx.AsyncClient
) -> None:
    token = await admin_key(services)
    key_id, _, secret = token.partition(".")
    async with raw_client as http:
        good = await http.get("/v1/users/u_nobody", headers={"authorization": f"Bearer {token}"})
        wrong = await http.get("/v1/users/u_nobody", headers={"authorization": f"Bearer {key_id}.x{secret}"})
        empty = await http.get("/v1/users/u_nobody", headers={"authorization": f"Bearer {key_id}."})
    assert good.status_code == 404  # authenticated: the user simply does not exist
    for response in (wrong, empty):
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"


async def test_the_scheme_is_case_insensitive(services: Services, raw_client: httpx.AsyncClient) -> None:
    token = await admin_key(services)
    async with raw_client as http:
        response = await http.get("/v1/users/u_nobody", headers={"authorization": f"bearer {token}"})
    assert response.status_code == 404 and error_of(response)["code"] == "unknown_user"


async def test_the_openapi_schema_needs_no_key(raw_client: httpx.AsyncClient) -> None:
    async with raw_client as http:
        response = await http.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Notigate"
    assert "/v1/intents" in schema["paths"]


async def test_a_revoked_key_is_refused_at_once(services: Services) -> None:
    token = await admin_key(services, "orders", admin=False, events=["order.*"])
    other = await admin_key(services, "billing", admin=False, events=["order.*"])
    async with client(services, token) as http:
        before = await http.post("/v1/intents", json=shipped(1))  # the key is now cached
        assert await services.api_keys.revoke("orders", now())
        after = await http.post("/v1/intents", json=shipped(2))
    async with client(services, other) as http:
        unaffected = await http.post("/v1/intents", json=shipped(3))
    assert before.status_code == 202, before.text
    assert after.status_code == 401
    assert error_of(after)["code"] == "invalid_api_key"
    assert unaffected.status_code == 202
    assert not await services.api_keys.revoke("orders", now())  # already revoked


# --- scopes ------------------------------------------------------------------------------


async def test_a_key_may_only_send_the_events_it_is_scoped_to(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services, "orders", admin=False, events=["order.*"])
    async with client(services, token) as http:
        allowed = await http.post("/v1/intents", json=SHIPPED)
        refused = await http.post("/v1/intents", json=PROMO)
        refused_bulk = await http.post("/v1/intents/bulk", json={**bulk("u_ada"), "event": "marketing.promo"})
    assert allowed.status_code == 202, allowed.text
    for response in (refused, refused_bulk):
        assert response.status_code == 403
        error = error_of(response)
        assert (error["code"], error["field"]) == ("event_not_allowed", "event")


async def test_a_scoped_key_dry_runs_and_previews_only_its_events(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services, "orders", admin=False, events=["order.*"])
    async with client(services, token) as http:
        for path in ("/v1/dry-run", "/v1/templates/preview"):
            allowed = await http.post(path, json={"intent": SHIPPED})
            refused = await http.post(path, json={"intent": PROMO})
            assert allowed.status_code == 200, allowed.text
            assert refused.status_code == 403
            assert (error_of(refused)["code"], error_of(refused)["field"]) == (
                "event_not_allowed",
                "intent.event",
            )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/users/u_ada", None),
        ("PUT", "/v1/users/u_ada", {"user_id": "u_ada"}),
        ("DELETE", "/v1/users/u_ada", None),
        ("GET", "/v1/users/u_ada/preferences", None),
        ("PUT", "/v1/users/u_ada/preferences", []),
        ("GET", "/v1/users/u_ada/devices", None),
        ("POST", "/v1/users/u_ada/devices", {"platform": "ios", "token": "t-1"}),
        ("DELETE", "/v1/users/u_ada/devices/ios-token-ada-0001", None),
        ("GET", "/v1/dead-letters", None),
        ("GET", "/v1/dead-letters/dl_x", None),
        ("POST", "/v1/dead-letters/dl_x/replay", None),
    ],
)
async def test_recipient_and_operation_calls_need_an_admin_key(
    services: Services, method: str, path: str, body: Any
) -> None:
    await store_user(services)
    token = await admin_key(services, "orders", admin=False, events=["*"])
    async with client(services, token) as http:
        response = await http.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert error_of(response)["code"] == "admin_required"
    stored = await services.recipients.get_user("u_ada")
    assert stored is not None and len(stored.contacts.devices) == 2  # nothing was changed


async def test_a_producer_sees_only_its_own_notifications(services: Services) -> None:
    await store_user(services)
    orders = await admin_key(services, "orders", admin=False, events=["order.*"])
    other = await admin_key(services, "other", admin=False, events=["order.*"])
    admin = await admin_key(services, "ops")
    async with client(services, orders) as http:
        notification_id = (await http.post("/v1/intents", json=SHIPPED)).json()["notification_id"]
        own = await http.get(f"/v1/notifications/{notification_id}")
    async with client(services, other) as http:
        foreign = await http.get(f"/v1/notifications/{notification_id}")
        missing = await http.get("/v1/notifications/n_does_not_exist")
    async with client(services, admin) as http:
        as_admin = await http.get(f"/v1/notifications/{notification_id}")
    assert own.status_code == 200 and own.json()["notification_id"] == notification_id
    assert as_admin.status_code == 200
    assert foreign.status_code == 404 and missing.status_code == 404
    # Another producer's notification is answered exactly as a missing one is.
    assert (error_of(foreign)["code"], error_of(foreign)["field"]) == ("not_found", "notification_id")
    assert (error_of(missing)["code"], error_of(missing)["field"]) == ("not_found", "notification_id")
    assert notification_id in error_of(foreign)["message"]


# --- quotas ------------------------------------------------------------------------------


def frozen(services: Services) -> Clock:
    """The services' clock, stopped now: buckets refill only when the test moves it."""
    clock = services.clock
    assert isinstance(clock, Clock)
    clock.now = clock()
    return clock


async def test_a_key_over_its_burst_is_told_to_wait(services: Services) -> None:
    token = await admin_key(services, "orders", rate=1, burst=3)
    async with client(services, token) as http:
        admitted = [await http.post("/v1/intents", json=shipped(i)) for i in range(3)]
        refused = await http.post("/v1/intents", json=shipped(3))
    assert [r.status_code for r in admitted] == [202, 202, 202]
    assert retry_after(refused) >= 1
    assert "quota" in error_of(refused)["message"]


async def test_a_refused_key_is_admitted_again_after_the_advertised_wait(services: Services) -> None:
    token = await admin_key(services, "orders", rate=10, burst=2)
    clock = frozen(services)
    async with client(services, token) as http:
        # Six recipients drive the bucket four tokens below empty: refused for 0.4 s at least.
        taken = await http.post("/v1/intents/bulk", json=bulk(*(f"u_{i}" for i in range(6))))
        refused = await http.post("/v1/intents", json=shipped(1))
        wait = retry_after(refused)
        clock.now = clock() + dt.timedelta(seconds=0.45)  # 4.5 tokens refilled: not a whole one yet
        early = await http.post("/v1/intents", json=shipped(2))
        clock.now = clock() + dt.timedelta(seconds=0.55)
        again = await http.post("/v1/intents", json=shipped(2))
    assert taken.status_code == 202, taken.text
    assert wait == 1  # half a second, rounded up to the header's whole second
    assert early.status_code == 429, early.text
    assert again.status_code == 202, again.text


async def test_retry_after_is_never_shorter_than_the_wait(services: Services) -> None:
    """The header rounds the wait up: a client that honours it is admitted on its next try."""
    token = await admin_key(services, "orders", rate=4, burst=1)
    clock = frozen(services)
    async with client(services, token) as http:
        # Ten recipients leave the bucket nine below empty: 2.5 s until the next token.
        taken = await http.post("/v1/intents/bulk", json=bulk(*(f"u_{i}" for i in range(10))))
        refused = await http.post("/v1/intents", json=shipped(1))
        wait = retry_after(refused)
        clock.now = clock() + dt.timedelta(seconds=wait)
        again = await http.post("/v1/intents", json=shipped(2))
    assert taken.status_code == 202, taken.text
    assert wait == 3  # 2.5 s, rounded up
    assert again.status_code == 202, (wait, again.text)
    assert f"retry in {wait}s" in error_of(refused)["message"]  # header and message agree


async def test_a_bulk_request_takes_one_token_per_recipient(services: Services) -> None:
    token = await admin_key(services, "orders", rate=1, burst=3)
    users = [f"u_{i}" for i in range(5)]
    async with client(services, token) as http:
        first = await http.post("/v1/intents/bulk", json=bulk(*users))
        second = await http.post("/v1/intents/bulk", json=bulk(*users))
        single = await http.post("/v1/intents", json=shipped(1))
    assert first.status_code == 202, first.text
    assert first.json()["recipients"] == 5  # admitted whole, though larger than the burst
    # Five tokens from a bucket of three leaves it two below empty: about three seconds to wait.
    assert retry_after(second) >= 2
    assert retry_after(single) >= 2


async def test_quotas_are_per_key(services: Services) -> None:
    busy = await admin_key(services, "busy", rate=1, burst=2)
    quiet = await admin_key(services, "quiet", rate=1, burst=2)
    async with client(services, busy) as http:
        assert (await http.post("/v1/intents/bulk", json=bulk("u_1", "u_2", "u_3"))).status_code == 202
        refused = await http.post("/v1/intents", json=shipped(1))
    async with client(services, quiet) as http:
        admitted = await http.post("/v1/intents", json=shipped(2))
    retry_after(refused)
    assert admitted.status_code == 202, admitted.text


async def test_a_quota_holds_across_api_processes(services: Services) -> None:
    token = await admin_key(services, "orders", rate=1, burst=3)
    other = await open_services(services.settings)
    await other.start()
    try:
        async with client(services, token) as first:
            taken = await first.post("/v1/intents/bulk", json=bulk("u_1", "u_2", "u_3", "u_4"))
        async with client(other, token) as second:
            refused = await second.post("/v1/intents", json=shipped(1))
    finally:
        await other.close()
    assert taken.status_code == 202, taken.text
    assert retry_after(refused) >= 1


async def test_without_redis_each_process_falls_back_to_its_own_bucket(services: Services) -> None:
    settings = msgspec.structs.replace(services.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    offline = await open_services(settings)
    try:
        waits = [await offline.quota.take("k_offline", 1.0, 3) for _ in range(4)]
        other_key = await offline.quota.take("k_other", 1.0, 3)
    finally:
        await offline.close()
    assert waits[:3] == [0.0, 0.0, 0.0], waits
    assert waits[3] > 0.5, waits  # asked to wait about a second for the next token, not refused outright
    assert other_key == 0.0
