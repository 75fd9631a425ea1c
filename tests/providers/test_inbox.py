"""The in-app inbox adapter against the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from gateway.errors import ConfigError
from gateway.providers.base import UNREACHABLE, AdapterDeps, Address, Delivered, Message, Permanent, Retryable
from gateway.providers.inbox import InboxAdapter
from gateway.providers.registry import ProviderRegistry
from gateway.providers.spec import ProviderSpec
from gateway.store import inbox, migrate
from gateway.store.database import Database
from tests.conftest import REPO, Clock

T0 = dt.datetime(2026, 11, 21, 9, 30, 15, 123_456, tzinfo=dt.UTC)
SPEC = ProviderSpec.parse("inbox", {"channel": "in_app", "adapter": "inbox", "cost": 0}, {})


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await migrate.upgrade(database)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def adapter(database: Database, clock: Clock) -> AsyncIterator[InboxAdapter]:
    built = InboxAdapter.from_spec(SPEC, AdapterDeps(database=database))
    built.clock = clock
    yield built
    await built.close()


def in_app(
    delivery_id: str = "dlv_inbox_1",
    user_id: str = "u_ada",
    category: str | None = "orders",
    **fields: object,
) -> Message:
    return Message(
        channel="in_app",
        event="order.shipped",
        notification_id="ntf_1",
        delivery_id=delivery_id,
        user_id=user_id,
        fields={
            "title": "Your order is on its way",
            "body": "Order A-1001 shipped with UPS.",
            "action_url": "https://shop.example.com/orders/A-1001",
            "icon": "https://cdn.example.com/icons/truck.png",
            "data": {"order_id": "A-1001", "items": [{"sku": "X1", "qty": 2}], "gift": False, "note": None},
            **fields,
        },
        locale="en",
        category=category,
    )


async def send(adapter: InboxAdapter, message: Message) -> object:
    return await adapter.send(message, Address("user", message.user_id), idempotency_key=message.delivery_id)


async def test_a_send_writes_the_item_and_every_field_round_trips(
    adapter: InboxAdapter, database: Database
) -> None:
    message = in_app()
    result = await send(adapter, message)
    assert result == Delivered(provider_message_id="dlv_inbox_1")

    [item] = await inbox.feed(database, "u_ada", 10)
    assert item == inbox.InboxItem(
        id="dlv_inbox_1",
        notification_id="ntf_1",
        user_id="u_ada",
        event="order.shipped",
        category="orders",
        title="Your order is on its way",
        body="Order A-1001 shipped with UPS.",
        action_url="https://shop.example.com/orders/A-1001",
        icon="https://cdn.example.com/icons/truck.png",
        data={"order_id": "A-1001", "items": [{"sku": "X1", "qty": 2}], "gift": False, "note": None},
        created_at=T0,
        read_at=None,
        archived_at=None,
    )
    assert item.created_at.tzinfo is dt.UTC  # aware UTC back from both databases


async def test_a_repeat_send_adds_nothing_and_still_counts_as_delivered(
    adapter: InboxAdapter, database: Database, clock: Clock
) -> None:
    first = in_app()
    assert await send(adapter, first) == Delivered(provider_message_id=first.delivery_id)

    # A worker that died after the write sends the same delivery again, later.
    clock.now = T0 + dt.timedelta(minutes=5)
    again = dataclasses.replace(first, fields={**first.fields, "title": "changed on the second try"})
    assert await send(adapter, again) == Delivered(provider_message_id=first.delivery_id)

    [item] = await inbox.feed(database, "u_ada", 10)
    assert item.title == "Your order is on its way"
    assert item.created_at == T0


async def test_add_reports_whether_it_wrote(database: Database) -> None:
    item = inbox.InboxItem("dlv_2", "ntf_2", "u_bob", "welcome", "Welcome", "Hello Bob", T0)
    assert await inbox.add(database, item) is True
    assert await inbox.add(database, item) is False
    assert await inbox.feed(database, "u_bob") == [item]


async def test_concurrent_repeats_store_one_item(adapter: InboxAdapter, database: Database) -> None:
    message = in_app()
    results = await asyncio.gather(*(send(adapter, message) for _ in range(5)))
    assert results == [Delivered(provider_message_id=message.delivery_id)] * 5
    assert len(await inbox.feed(database, "u_ada")) == 1


async def test_optional_fields_are_null_and_text_fields_fall_back(
    adapter: InboxAdapter, database: Database
) -> None:
    message = dataclasses.replace(
        in_app(category=None),
        fields={"subject": "Password changed", "text": "Your password was changed just now."},
    )
    assert isinstance(await send(adapter, message), Delivered)
    [item] = await inbox.feed(database, "u_ada")
    assert (item.title, item.body) == ("Password changed", "Your password was changed just now.")
    assert (item.category, item.action_url, item.icon, item.data) == (None, None, None, {})


@pytest.mark.parametrize(
    "fields",
    [
        {"data": {"only": "data"}},  # neither title nor body
        {"title": "Hi", "body": "there", "data": ["not", "an", "object"]},
    ],
)
async def test_a_message_the_inbox_cannot_hold_is_refused_for_good(
    adapter: InboxAdapter, database: Database, fields: dict[str, object]
) -> None:
    message = dataclasses.replace(in_app(), fields=fields)
    result = await send(adapter, message)
    assert isinstance(result, Permanent) and result.code == "invalid_message"
    assert not result.address_invalid
    assert await inbox.feed(database, "u_ada") == []


async def test_the_feed_is_newest_first_per_user_and_limited(adapter: InboxAdapter, clock: Clock) -> None:
    for minute, (delivery, user) in enumerate(
        [("d1", "u_ada"), ("d2", "u_bob"), ("d3", "u_ada"), ("d4", "u_ada")]
    ):
        clock.now = T0 + dt.timedelta(minutes=minute)
        await send(adapter, in_app(delivery, user))
    assert [i.id for i in await inbox.feed(adapter.database, "u_ada", 2)] == ["d4", "d3"]
    assert [i.id for i in await inbox.feed(adapter.database, "u_ada")] == ["d4", "d3", "d1"]
    assert [i.id for i in await inbox.feed(adapter.database, "u_bob")] == ["d2"]


async def test_an_unreachable_database_is_retryable() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:9/notigate")  # nothing listens on 9
    adapter = InboxAdapter.from_spec(SPEC, AdapterDeps(database=database))
    try:
        result = await send(adapter, in_app())
    finally:
        await adapter.close()
        await database.dispose()
    assert isinstance(result, Retryable) and result.code == UNREACHABLE


async def test_a_value_the_store_cannot_hold_is_refused_for_good(
    adapter: InboxAdapter, database: Database
) -> None:
    """Checked against the columns before writing (SQLite would store it, PostgreSQL refuse
    it and, in a group commit, fail its batch-mates with it): retrying would not help."""
    result = await send(adapter, in_app(category="c" * 65))
    assert isinstance(result, Permanent) and result.code == "rejected", result
    assert "category is 65 characters" in result.error
    assert await inbox.feed(database, "u_ada") == []


async def test_an_item_the_store_refuses_does_not_fail_its_batch_mates(
    adapter: InboxAdapter, database: Database
) -> None:
    """Regression: a NUL in one user's message (PostgreSQL refuses it, SQLSTATE 22021) marked
    14 of 15 clean messages of another user failed for good, as they shared its commit."""
    clean = [in_app(delivery_id=f"dlv_clean_{i}", user_id="u_bob") for i in range(15)]
    poisoned = in_app(delivery_id="dlv_nul", body="a\x00b")
    results = await asyncio.gather(*(send(adapter, m) for m in [poisoned, *clean]))
    assert all(isinstance(r, Delivered) for r in results[1:]), results
    assert len(await inbox.feed(database, "u_bob", limit=100)) == 15
    if database.dialect == "postgresql":
        assert isinstance(results[0], Permanent) and results[0].code == "rejected", results[0]
        assert "SQLSTATE 22021" in results[0].error
        assert await inbox.feed(database, "u_ada") == []
    else:  # SQLite holds a NUL
        assert isinstance(results[0], Delivered)


async def test_concurrent_items_share_a_commit_and_each_is_stored_once(
    adapter: InboxAdapter, database: Database
) -> None:
    messages = [in_app(delivery_id=f"dlv_{i}") for i in range(40)]
    results = await asyncio.gather(*(send(adapter, m) for m in messages + messages[:10]))
    assert all(isinstance(r, Delivered) for r in results)
    assert len(await inbox.feed(database, "u_ada", limit=100)) == 40
    assert adapter.writes.commits < 40  # batched, not a transaction per item


def test_from_spec_without_a_database_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"AdapterDeps\(database=...\)"):
        InboxAdapter.from_spec(SPEC, AdapterDeps())


async def test_the_registry_builds_the_inbox_from_providers_yaml(database: Database) -> None:
    """In-app goes to the store whatever the profile, once the registry is given the database."""
    registry = ProviderRegistry.load(REPO / "providers.yaml", "dev", {}, deps=AdapterDeps(database=database))
    adapter = registry.get("inbox")
    assert isinstance(adapter, InboxAdapter) and adapter.idempotent
    assert await send(adapter, in_app()) == Delivered(provider_message_id="dlv_inbox_1")
    await registry.close()
