"""API keys: the lookup cache is bounded and holds nothing for ids that name no key."""

from __future__ import annotations

import datetime as dt

from gateway.ids import new_id
from gateway.store.database import Database
from gateway.store.keys import ApiKeyStore

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


class Ticks:
    """An injected monotonic clock: the cache's expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_key_ids_leave_no_entry_and_the_cache_is_bounded(database: Database) -> None:
    """Regression: every unknown key id presented added a cache entry for good (RSS 155 -> 188 MB
    after 8,000 unauthenticated requests)."""
    ticks = Ticks()
    store = ApiKeyStore(database, cache_seconds=5, cache_size=3, clock=ticks)
    tokens = [
        (await store.create(f"p{i}", ["order.*"], admin=False, rate=10, burst=10, now=NOW))[1]
        for i in range(5)
    ]
    for _ in range(200):
        assert await store.authenticate(f"{new_id('k')}.secret") is None  # well-formed, unknown
    assert await store.authenticate("garbage-without-shape.secret") is None
    assert len(store._cache) == 0
    for token in tokens:
        key = await store.authenticate(token)
        assert key is not None
    assert len(store._cache) == 3  # the three used last
    assert list(store._cache) == [t.partition(".")[0] for t in tokens[2:]]


async def test_a_revoked_key_stops_working_once_its_cache_entry_expires(database: Database) -> None:
    ticks = Ticks()
    store = ApiKeyStore(database, cache_seconds=5, clock=ticks)
    other = ApiKeyStore(database)  # another process revokes it
    key, token = await store.create("shop", ["order.*"], admin=False, rate=10, burst=10, now=NOW)
    assert await store.authenticate(token) == key
    assert await other.revoke("shop", NOW)
    ticks.now = 4.9
    assert await store.authenticate(token) == key  # still cached here
    ticks.now = 5.1
    assert await store.authenticate(token) is None
