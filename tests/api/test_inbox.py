"""The in-app inbox API (`/v1/inbox...`, inbox tokens) over HTTP, on SQLite and PostgreSQL,
and its live stream read by a real HTTP client from a real server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar

from gateway.api import inbox_tokens
from gateway.api.app import create_app
from gateway.api.errors import EXCEPTION_HANDLERS
from gateway.api.inbox_routes import inbox_router
from gateway.errors import ConfigError
from gateway.providers.base import AdapterDeps, Address, Delivered, Message
from gateway.providers.inbox import InboxAdapter
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret
from gateway.redis_server import RedisServer, free_port
from gateway.services import Services, connect_redis
from gateway.settings import Settings
from gateway.store import inbox
from tests.conftest import Clock, make_settings, open_services
from tests.harness import admin_key, client

SECRET = "inbox-secret-for-tests-0123456789abcdef"
T0 = dt.datetime(2026, 11, 21, 9, 30, 15, 123_456, tzinfo=dt.UTC)
SPEC = ProviderSpec.parse("inbox", {"channel": "in_app", "adapter": "inbox", "cost": 0}, {})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(
    database_url: str, redis_server: RedisServer, tmp_path: Path, clock: Clock
) -> AsyncIterator[Services]:
    """The gateway's services with an inbox secret set."""
    settings = make_settings(database_url, redis_server.url, tmp_path, inbox_secret=Secret(SECRET))
    opened = await open_services(settings, clock)
    await opened.start()
    yield opened
    await opened.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    return dict(body["error"])


def item(item_id: str, user_id: str = "u_1", at: dt.datetime = T0, **changes: Any) -> inbox.InboxItem:
    values: dict[str, Any] = {
        "id": item_id,
        "notification_id": f"ntf_{item_id}",
        "user_id": user_id,
        "event": "order.shipped",
        "title": f"title {item_id}",
        "body": f"body {item_id}",
        "created_at": at,
        "category": "orders",
        "data": {"n": item_id},
    }
    values.update(changes)
    return inbox.InboxItem(**values)


async def token_for(services: Services, user_id: str, ttl: int | None = None) -> str:
    params = {} if ttl is None else {"ttl": ttl}
    issuer = await admin_key(services, f"issuer-{uuid.uuid4().hex[:8]}")
    async with client(services, issuer) as http:
        response = await http.post(f"/v1/users/{user_id}/inbox-token", params=params)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "user_id", "expires_at"} and body["user_id"] == user_id
    return str(body["token"])


async def ids_of_all_pages(http: httpx.AsyncClient, limit: int, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await http.get("/v1/inbox", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the feed never ended")


# --- the feed ----------------------------------------------------------------------------


async def test_pages_walk_the_feed_newest_first_with_equal_times_split_by_id(gateway: Services) -> None:
    # Four items share one timestamp: the cursor must split them by id, across page boundaries.
    times = {"a": T0, "b": T0 - dt.timedelta(seconds=1), "c": T0, "d": T0, "e": T0 + dt.timedelta(seconds=1)}
    times |= {"f": T0, "g": T0 - dt.timedelta(seconds=2), "h": T0 - dt.timedelta(microseconds=1)}
    for name, at in times.items():
        await inbox.add(gateway.database, item(f"dlv_{name}", at=at))
    await inbox.add(gateway.database, item("dlv_other", user_id="u_2", at=T0))
    expected = [f"dlv_{n}" for n in ("e", "a", "c", "d", "f", "h", "b", "g")]
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        for limit in (1, 2, 3, 8, 50):
            assert await ids_of_all_pages(http, limit) == expected, limit
        first = (await http.get("/v1/inbox", params={"limit": 3})).json()
        again = (await http.get("/v1/inbox", params={"limit": 3})).json()
    assert first == again  # the same page gives the same cursor
    assert first["unread_count"] == 8
    shown = first["items"][0]
    assert shown == {
        "id": "dlv_e",
        "notification_id": "ntf_dlv_e",
        "user_id": "u_1",
        "event": "order.shipped",
        "title": "title dlv_e",
        "body": "body dlv_e",
        "created_at": "2026-11-21T09:30:16.123456Z",
        "category": "orders",
        "action_url": None,
        "icon": None,
        "data": {"n": "dlv_e"},
        "read_at": None,
        "archived_at": None,
    }


async def test_a_cursor_stays_valid_when_new_items_arrive_between_pages(gateway: Services) -> None:
    for n in range(5):
        await inbox.add(gateway.database, item(f"dlv_{n}", at=T0 + dt.timedelta(seconds=n)))
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        first = (await http.get("/v1/inbox", params={"limit": 2})).json()
        await inbox.add(gateway.database, item("dlv_new", at=T0 + dt.timedelta(hours=1)))
        # Two at dlv_3's time: one sorting before it (by id), one after.
        await inbox.add(gateway.database, item("dlv_0tie", at=T0 + dt.timedelta(seconds=3)))
        await inbox.add(gateway.database, item("dlv_tie", at=T0 + dt.timedelta(seconds=3)))
        rest = (await http.get("/v1/inbox", params={"limit": 10, "cursor": first["next_cursor"]})).json()
    assert [i["id"] for i in first["items"]] == ["dlv_4", "dlv_3"]
    # Nothing repeated, nothing skipped: what sorts before the cursor (dlv_new, dlv_0tie) is on
    # pages already read; what sorts after it (dlv_tie, by id) is on the next.
    assert [i["id"] for i in rest["items"]] == ["dlv_tie", "dlv_2", "dlv_1", "dlv_0"]
    assert rest["next_cursor"] is None
    assert rest["unread_count"] == 8


@pytest.mark.parametrize(
    "cursor",
    ["not-base64!", base64.urlsafe_b64encode(b"yesterday|dlv_1").decode(), "", "bm8tc2VwYXJhdG9y"],
    ids=["garbage", "bad-time", "empty", "no-separator"],
)
async def test_a_cursor_the_feed_did_not_hand_out_is_refused_naming_it(
    gateway: Services, cursor: str
) -> None:
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        response = await http.get("/v1/inbox", params={"cursor": cursor})
    if cursor == "":
        assert response.status_code == 200  # an empty cursor is no cursor: the first page
        return
    assert response.status_code == 422, response.text
    assert (error_of(response)["code"], error_of(response)["field"]) == ("invalid_cursor", "cursor")


async def test_a_limit_out_of_range_is_refused(gateway: Services) -> None:
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        for limit in (0, 201):
            response = await http.get("/v1/inbox", params={"limit": limit})
            assert response.status_code == 422, response.text
            assert error_of(response)["field"] == "limit"


async def test_unread_only_and_the_unread_count(gateway: Services) -> None:
    for n in range(6):
        await inbox.add(gateway.database, item(f"dlv_{n}", at=T0 + dt.timedelta(seconds=n)))
    now = dt.datetime.now(dt.UTC)
    await inbox.mark_read(gateway.database, "u_1", "dlv_1", now)
    await inbox.mark_read(gateway.database, "u_1", "dlv_4", now)
    await inbox.archive(gateway.database, "u_1", "dlv_2", now)
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        unread = await ids_of_all_pages(http, 2, unread="true")
        everything = await ids_of_all_pages(http, 2)
        body = (await http.get("/v1/inbox", params={"unread": "true"})).json()
    assert unread == ["dlv_5", "dlv_3", "dlv_0"]
    assert everything == ["dlv_5", "dlv_4", "dlv_3", "dlv_1", "dlv_0"]  # archived: out of the feed
    assert body["unread_count"] == 3 == await inbox.unread_count(gateway.database, "u_1")


# --- read, read-all, archive -------------------------------------------------------------


async def test_read_archive_and_read_all(gateway: Services, clock: Clock) -> None:
    for n in range(5):
        await inbox.add(gateway.database, item(f"dlv_{n}", at=T0 + dt.timedelta(seconds=n)))
    token = await token_for(gateway, "u_1")
    clock.now = T0 + dt.timedelta(minutes=5)
    async with client(gateway, token) as http:
        read = await http.post("/v1/inbox/dlv_4/read")
        clock.now = T0 + dt.timedelta(minutes=6)
        read_again = await http.post("/v1/inbox/dlv_4/read")
        archived = await http.post("/v1/inbox/dlv_3/archive")
        up_to = await http.post("/v1/inbox/read-all", params={"up_to": "2026-11-21T09:30:16.123456Z"})
        rest = await http.post("/v1/inbox/read-all")
        none_left = await http.post("/v1/inbox/read-all")
        feed = (await http.get("/v1/inbox")).json()
    assert read.status_code == 200, read.text
    assert read.json()["unread_count"] == 4
    assert read.json()["item"]["read_at"] == "2026-11-21T09:35:15.123456Z"
    assert read_again.json()["item"]["read_at"] == "2026-11-21T09:35:15.123456Z"  # the first read time stays
    assert archived.status_code == 200
    assert archived.json()["item"]["archived_at"] == "2026-11-21T09:36:15.123456Z"
    assert archived.json()["unread_count"] == 3
    assert up_to.json() == {"marked": 2, "unread_count": 1}  # dlv_0 and dlv_1
    assert rest.json() == {"marked": 1, "unread_count": 0}  # dlv_2
    assert none_left.json() == {"marked": 0, "unread_count": 0}
    assert [i["id"] for i in feed["items"]] == ["dlv_4", "dlv_2", "dlv_1", "dlv_0"]
    assert all(i["read_at"] is not None for i in feed["items"])
    stored = await inbox.get(gateway.database, "u_1", "dlv_3")
    assert stored is not None and stored.read_at is None and stored.archived_at is not None


async def test_another_users_item_is_not_found_and_their_feed_is_not_readable(gateway: Services) -> None:
    await inbox.add(gateway.database, item("dlv_mine", user_id="u_1"))
    await inbox.add(gateway.database, item("dlv_theirs", user_id="u_2"))
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        responses = [
            await http.post("/v1/inbox/dlv_theirs/read"),
            await http.post("/v1/inbox/dlv_theirs/archive"),
            await http.post("/v1/inbox/dlv_nowhere/read"),
        ]
        feed = (await http.get("/v1/inbox")).json()
        asked_for_other = await http.get("/v1/inbox", params={"user_id": "u_2"})
        stream_for_other = await http.get("/v1/inbox/stream", params={"user_id": "u_2"})
        read_all = await http.post("/v1/inbox/read-all")
    for response in responses:
        assert response.status_code == 404, response.text
        assert (error_of(response)["code"], error_of(response)["field"]) == ("unknown_item", "item_id")
    assert [i["id"] for i in feed["items"]] == ["dlv_mine"]
    for response in (asked_for_other, stream_for_other):
        assert response.status_code == 403, response.text
        assert error_of(response)["code"] == "inbox_user_mismatch"
    assert read_all.json()["marked"] == 1
    theirs = await inbox.get(gateway.database, "u_2", "dlv_theirs")
    assert theirs is not None and theirs.read_at is None and theirs.archived_at is None


# --- tokens ------------------------------------------------------------------------------


async def test_a_token_is_issued_only_with_an_admin_key(gateway: Services, clock: Clock) -> None:
    producer = await admin_key(gateway, "producer", admin=False)
    clock.now = T0
    async with client(gateway) as anonymous:
        no_key = await anonymous.post("/v1/users/u_1/inbox-token")
    async with client(gateway, producer) as http:
        not_admin = await http.post("/v1/users/u_1/inbox-token")
    async with client(gateway, await admin_key(gateway)) as http:
        default = await http.post("/v1/users/u_1/inbox-token")
        a_day = await http.post("/v1/users/u_1/inbox-token", params={"ttl": 86_400})
        too_long = await http.post("/v1/users/u_1/inbox-token", params={"ttl": 86_401})
        zero = await http.post("/v1/users/u_1/inbox-token", params={"ttl": 0})
        huge = await http.post("/v1/users/u_1/inbox-token", params={"ttl": 10**30})  # overflowed: a 500
    assert no_key.status_code == 401 and error_of(no_key)["code"] == "missing_api_key"
    assert not_admin.status_code == 403 and error_of(not_admin)["code"] == "admin_required"
    assert default.status_code == 201, default.text
    assert default.json()["expires_at"] == "2026-11-21T10:30:15Z"  # an hour by default
    assert default.json()["token"].startswith("it_")
    assert a_day.json()["expires_at"] == "2026-11-22T09:30:15Z"
    for response in (too_long, zero):
        assert response.status_code == 422, response.text
        assert (error_of(response)["code"], error_of(response)["field"]) == ("invalid_ttl", "ttl")
    assert huge.status_code == 422 and error_of(huge)["field"] == "ttl", huge.text


async def test_an_expired_token_is_refused(gateway: Services, clock: Clock) -> None:
    clock.now = T0
    token = await token_for(gateway, "u_1", ttl=60)
    async with client(gateway, token) as http:
        clock.now = T0 + dt.timedelta(seconds=59)
        fresh = await http.get("/v1/inbox")
        clock.now = T0 + dt.timedelta(seconds=61)
        expired = await http.get("/v1/inbox")
        expired_stream = await http.get("/v1/inbox/stream")
    assert fresh.status_code == 200, fresh.text
    for response in (expired, expired_stream):
        assert response.status_code == 401, response.text
        assert error_of(response)["code"] == "expired_inbox_token"


def _forged(token: str) -> list[str]:
    """The same token for another user, or signed with another secret, or cut short, or
    re-spelt (padded, with a stray character: base64 Python alone would read back)."""
    payload, _, signature = token.removeprefix("it_").partition(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    expiry = raw.rpartition(".")[2]
    other_user = base64.urlsafe_b64encode(f"u_2.{expiry}".encode()).decode().rstrip("=")
    later = base64.urlsafe_b64encode(f"u_1.{int(expiry) + 86_400}".encode()).decode().rstrip("=")
    exp = dt.datetime.fromtimestamp(int(expiry), dt.UTC)
    return [
        f"it_{other_user}.{signature}",
        f"it_{later}.{signature}",
        inbox_tokens.issue(Secret("another-secret-entirely-0123456789abcdef"), "u_1", exp),
        f"it_{payload}.",
        f"it_{payload}",
        "it_%%%.%%%",
        token[:-3],
        f"{token}=",
        f"it_{payload}==.{signature}",
        f"it_{payload[:2]}!{payload[2:]}.{signature}",
    ]


async def test_a_forged_token_is_refused(gateway: Services) -> None:
    await inbox.add(gateway.database, item("dlv_theirs", user_id="u_2"))
    token = await token_for(gateway, "u_1")
    for forged in _forged(token):
        async with client(gateway, forged) as http:
            response = await http.get("/v1/inbox")
        assert response.status_code == 401, (forged, response.text)
        assert error_of(response)["code"] == "invalid_inbox_token"
    async with client(gateway, await admin_key(gateway)) as http:
        api_key = await http.get("/v1/inbox")
    async with client(gateway) as http:
        missing = await http.get("/v1/inbox")
        in_query = await http.get("/v1/inbox", params={"token": token})
    assert api_key.status_code == 401 and error_of(api_key)["code"] == "invalid_inbox_token"
    assert "API key" in error_of(api_key)["message"]
    assert missing.status_code == 401 and error_of(missing)["code"] == "missing_inbox_token"
    assert in_query.status_code == 200, in_query.text


async def test_without_a_secret_the_inbox_says_it_is_not_configured(services: Services) -> None:
    await inbox.add(services.database, item("dlv_1"))
    async with client(services, await admin_key(services)) as http:
        issue = await http.post("/v1/users/u_1/inbox-token")
    async with client(services, "it_dTEuOTk5OTk5OTk5OQ.c2ln") as http:
        read = await http.get("/v1/inbox")
    for response in (issue, read):
        assert response.status_code == 503, response.text
        assert error_of(response)["code"] == "inbox_not_configured"
        assert "NOTIGATE_INBOX_SECRET" in error_of(response)["message"]


def test_the_secret_setting_is_checked_and_never_shown() -> None:
    assert Settings.from_env({}).inbox_secret is None
    settings = Settings.from_env({"NOTIGATE_INBOX_SECRET": SECRET})
    assert settings.inbox_secret is not None and settings.inbox_secret.reveal() == SECRET
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"NOTIGATE_INBOX_SECRET": "too-short-secret"})
    assert "NOTIGATE_INBOX_SECRET" in str(raised.value)
    assert "too-short-secret" not in str(raised.value)


def test_a_token_round_trips_user_ids_with_dots() -> None:
    secret = Secret(SECRET)
    token = inbox_tokens.issue(secret, "user.with.dots@example", T0 + dt.timedelta(minutes=1))
    assert inbox_tokens.verify(secret, token, T0) == "user.with.dots@example"


# --- the live stream ---------------------------------------------------------------------


def in_app(delivery_id: str, user_id: str = "u_1") -> Message:
    return Message(
        channel="in_app",
        event="order.shipped",
        notification_id=f"ntf_{delivery_id}",
        delivery_id=delivery_id,
        user_id=user_id,
        fields={
            "title": "Your order is on its way",
            "body": "Order A-1001 shipped.",
            "data": {"order": "A-1001"},
        },
        locale="en",
        category="orders",
    )


async def send(adapter: InboxAdapter, delivery_id: str, user_id: str = "u_1") -> object:
    message = in_app(delivery_id, user_id)
    return await adapter.send(message, Address("user", user_id), idempotency_key=delivery_id)


@contextlib.asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[str]:
    """The app on a real uvicorn server on a free loopback port. No lifespan: the services
    belong to the test, which closes them itself."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        log_config=None,  # uvicorn's own handlers would hold this test's captured stderr
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Events:
    """Server-Sent Events off a streaming response, per the HTML spec's parsing rules."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, within: float = 5.0) -> dict[str, str]:
        return await asyncio.wait_for(self._next(), within)

    async def _next(self) -> dict[str, str]:
        event: dict[str, str] = {}
        async for line in self.lines:
            if line == "":
                if event:
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = f"{event[name]}\n{value}" if name == "data" and name in event else value
        raise AssertionError("the stream ended")


async def test_the_stream_pushes_new_items_and_the_unread_count(gateway: Services) -> None:
    await inbox.add(gateway.database, item("dlv_old", at=T0))
    await inbox.add(gateway.database, item("dlv_theirs", user_id="u_2", at=T0))
    token = await token_for(gateway, "u_1")
    adapter = InboxAdapter.from_spec(
        SPEC, AdapterDeps(database=gateway.database, redis=gateway.redis, keys=gateway.keys)
    )
    try:
        app = create_app(gateway.settings, services=gateway)
        async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with http.stream("GET", "/v1/inbox/stream", params={"token": token}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = Events(response)
                assert await events.next() == {"event": "unread", "data": '{"unread_count":1}'}

                # Another user's item is not shown; this user's is, with the new count.
                assert await send(adapter, "dlv_2", "u_2") == Delivered(provider_message_id="dlv_2")
                assert await send(adapter, "dlv_1") == Delivered(provider_message_id="dlv_1")
                event = await events.next()
                assert (event["event"], event["id"]) == ("item", "dlv_1")
                body = json.loads(event["data"])
                assert body["unread_count"] == 2
                assert body["item"]["id"] == "dlv_1" and body["item"]["title"] == "Your order is on its way"
                assert body["item"]["data"] == {"order": "A-1001"} and body["item"]["read_at"] is None

                # A repeat of the same delivery stores nothing new and announces nothing; the next does.
                assert await send(adapter, "dlv_1") == Delivered(provider_message_id="dlv_1")
                await send(adapter, "dlv_3")
                event = await events.next()
                assert (event["event"], event["id"]) == ("item", "dlv_3")
                assert json.loads(event["data"])["unread_count"] == 3
            # The client went away: the server lets go of its Redis subscription.
            channel = gateway.keys.inbox_channel("u_1")
            for _ in range(100):
                if (await gateway.redis.pubsub_numsub(channel))[0][1] == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await gateway.redis.pubsub_numsub(channel))[0][1] == 0
    finally:
        await adapter.close()


async def test_the_stream_sends_heartbeats_while_idle(gateway: Services) -> None:
    """A short heartbeat, set on the router, so the test need not wait 15 seconds."""
    token = await token_for(gateway, "u_1")
    app = Litestar([inbox_router(gateway, heartbeat=0.2)], exception_handlers=EXCEPTION_HANDLERS)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        headers = {"authorization": f"Bearer {token}"}
        async with http.stream("GET", "/v1/inbox/stream", headers=headers) as response:
            events = Events(response)
            assert (await events.next())["event"] == "unread"
            beats = 0
            async with asyncio.timeout(5):
                async for line in events.lines:
                    beats += line == ": heartbeat"
                    if beats == 2:
                        break
    assert beats == 2


async def test_an_item_is_stored_and_delivered_when_redis_cannot_be_reached(
    gateway: Services, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    adapter = InboxAdapter.from_spec(
        SPEC, AdapterDeps(database=gateway.database, redis=nowhere, keys=gateway.keys)
    )
    try:
        result = await send(adapter, "dlv_1")
    finally:
        await adapter.close()
        await nowhere.aclose()
    assert result == Delivered(provider_message_id="dlv_1")
    assert await inbox.get(gateway.database, "u_1", "dlv_1") is not None
    assert any("live update was not published" in r.getMessage() for r in caplog.records)


def test_the_token_payload_is_what_the_docs_say() -> None:
    token = inbox_tokens.issue(Secret(SECRET), "u_1", T0)
    payload = token.removeprefix("it_").partition(".")[0]
    assert base64.urlsafe_b64decode(payload + "==").decode() == f"u_1.{int(T0.timestamp())}"
    assert msgspec.json.decode(msgspec.json.encode({"t": token}))["t"] == token


# --- browsers: CORS and the OpenAPI document ---------------------------------------------


async def test_a_browser_on_an_allowed_origin_may_read_its_inbox_and_no_other_origin_may(
    database_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        redis_server.url,
        tmp_path,
        inbox_secret=Secret(SECRET),
        cors_origins=("https://app.example.com",),
    )
    services = await open_services(settings)
    await services.start()
    try:
        await inbox.add(services.database, item("dlv_1"))
        token = await token_for(services, "u_1")
        async with client(services) as http:
            preflight = await http.options(
                "/v1/inbox",
                headers={
                    "origin": "https://app.example.com",
                    "access-control-request-method": "GET",
                    "access-control-request-headers": "authorization",
                },
            )
            allowed = await http.get(
                "/v1/inbox", headers={"origin": "https://app.example.com", "authorization": f"Bearer {token}"}
            )
            foreign = await http.options(
                "/v1/inbox",
                headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
            )
            other = await http.get(
                "/v1/inbox", headers={"origin": "https://evil.example", "authorization": f"Bearer {token}"}
            )
    finally:
        await services.close()
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert allowed.status_code == 200 and [i["id"] for i in allowed.json()["items"]] == ["dlv_1"]
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert foreign.status_code == 400 and "access-control-allow-origin" not in foreign.headers
    assert "access-control-allow-origin" not in other.headers  # the browser will not hand it over


async def test_without_origins_configured_no_cors_headers_are_sent(gateway: Services) -> None:
    token = await token_for(gateway, "u_1")
    async with client(gateway, token) as http:
        response = await http.get("/v1/inbox", headers={"origin": "https://app.example.com"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_origins_are_checked_naming_the_variable() -> None:
    assert Settings.from_env(
        {"NOTIGATE_CORS_ORIGINS": "https://a.example, http://localhost:5173"}
    ).cors_origins == (
        "https://a.example",
        "http://localhost:5173",
    )
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"NOTIGATE_CORS_ORIGINS": "https://a.example/app"})
    assert "NOTIGATE_CORS_ORIGINS" in str(raised.value) and "https://a.example/app" in str(raised.value)


async def test_the_openapi_document_says_which_routes_take_an_inbox_token(gateway: Services) -> None:
    async with client(gateway) as http:
        spec = (await http.get("/schema/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert {"apiKey", "inboxToken"} <= set(schemes)
    paths = spec["paths"]
    for path, method in (
        ("/v1/inbox", "get"),
        ("/v1/inbox/stream", "get"),
        ("/v1/inbox/{item_id}/read", "post"),
        ("/v1/inbox/{item_id}/archive", "post"),
        ("/v1/inbox/read-all", "post"),
    ):
        assert paths[path][method]["security"] == [{"inboxToken": []}], path
    assert paths["/v1/users/{user_id}/inbox-token"]["post"]["security"] == [{"apiKey": []}]
    assert paths["/v1/intents"]["post"]["security"] == [{"apiKey": []}]


async def test_a_user_may_hold_only_so_many_live_streams(gateway: Services) -> None:
    """Regression: one inbox token opened 300 streams, each holding a Redis connection."""
    gateway.settings = msgspec.structs.replace(gateway.settings, inbox_streams_per_user=2)
    token, other = await token_for(gateway, "u_1"), await token_for(gateway, "u_2")
    app = Litestar([inbox_router(gateway, heartbeat=0.2)], exception_handlers=EXCEPTION_HANDLERS)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with contextlib.AsyncExitStack() as open_streams:
            reading = []  # kept: a dropped line iterator closes its response
            for _ in range(2):
                response = await open_streams.enter_async_context(
                    http.stream("GET", "/v1/inbox/stream", params={"token": token})
                )
                reading.append(Events(response))
                assert (await reading[-1].next())["event"] == "unread"
            async with http.stream("GET", "/v1/inbox/stream", params={"token": token}) as refused:
                await refused.aread()
            assert refused.status_code == 429 and refused.headers["retry-after"]
            assert error_of(refused)["code"] == "too_many_streams"
            async with http.stream("GET", "/v1/inbox/stream", params={"token": other}) as theirs:
                assert theirs.status_code == 200  # another user's streams are theirs
        # Both closed: their slots are given back once the server notices.
        for _ in range(100):
            async with http.stream("GET", "/v1/inbox/stream", params={"token": token}) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        assert again.status_code == 200
