"""GroupCommit: concurrent writers share transactions; a failed one stores nothing, and the
item that failed it fails alone while its neighbours are stored in a retry without it."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import Unavailable, Unstorable
from gateway.redis_server import free_port
from gateway.store.database import Database
from gateway.store.group_commit import GroupCommit
from tests.store.rows import JOBS, T0, count, select

POISON_PRIORITY = 2**63  # beyond the column on both stores: SQLite's 64 bits, PostgreSQL's 32


class Recorder:
    """A write function that stores one job row per item and remembers each batch. An item
    named `poison...` carries a priority neither store can hold."""

    def __init__(self, fail_when: Callable[[list[str]], bool] = lambda _: False) -> None:
        self.batches: list[list[str]] = []
        self.fail_when = fail_when

    async def __call__(self, connection: AsyncConnection, items: list[str], now: dt.datetime) -> list[str]:
        self.batches.append(list(items))
        await connection.execute(
            sa.insert(JOBS),
            [
                {
                    "id": item,
                    "queue": "test",
                    "deliveries": [item],
                    "priority": POISON_PRIORITY if item.startswith("poison") else 1,
                    "run_at": now,
                    "enqueued_at": None,
                    "created_at": now,
                }
                for item in items
            ],
        )
        if self.fail_when(items):
            raise RuntimeError("the write failed after inserting its rows")
        return [f"stored {item}" for item in items]


@asynccontextmanager
async def running(
    database: Database, write: Callable[..., Awaitable[list[str]]], max_batch: int = 500
) -> AsyncIterator[GroupCommit[str, str]]:
    commit: GroupCommit[str, str] = GroupCommit(
        database, write, clock=lambda: T0, name="test", max_batch=max_batch
    )
    await commit.start()
    try:
        yield commit
    finally:
        await commit.stop()


async def stored_ids(database: Database) -> set[str]:
    return {row.id for row in await select(database, JOBS)}


async def test_concurrent_submits_share_commits_and_each_gets_its_own_result(database: Database) -> None:
    write = Recorder()
    items = [f"item-{i:03d}" for i in range(200)]
    async with running(database, write) as commit:
        results = await asyncio.gather(*(commit.submit(item) for item in items))
    assert results == [f"stored {item}" for item in items]
    assert commit.items == 200
    assert commit.commits == len(write.batches)
    assert commit.commits <= 5, f"200 concurrent items took {commit.commits} commits"
    assert [item for batch in write.batches for item in batch] == items  # first come, first written
    assert await stored_ids(database) == set(items)


async def test_a_batch_never_exceeds_max_batch(database: Database) -> None:
    write = Recorder()
    items = [f"item-{i:03d}" for i in range(200)]
    async with running(database, write, max_batch=30) as commit:
        results = await asyncio.gather(*(commit.submit(item) for item in items))
    assert results == [f"stored {item}" for item in items]
    assert max(len(batch) for batch in write.batches) <= 30
    assert commit.commits == len(write.batches) >= 7
    assert await count(database, JOBS) == 200


async def test_a_failed_batch_is_retried_without_the_item_that_failed_it(database: Database) -> None:
    write = Recorder(fail_when=lambda items: "bad" in items)
    clean = [f"clean-{i}" for i in range(20)]
    batch = [*clean[:10], "bad", *clean[10:]]
    async with running(database, write) as commit:
        outcomes = await asyncio.gather(*(commit.submit(item) for item in batch), return_exceptions=True)
        assert write.batches[0] == batch  # they all shared the failed transaction first
        assert isinstance(outcomes[10], RuntimeError)
        assert str(outcomes[10]) == "the write failed after inserting its rows"
        assert [o for i, o in enumerate(outcomes) if i != 10] == [f"stored {item}" for item in clean]
        assert ["bad"] in write.batches  # isolated down to itself
        assert len(write.batches) <= 2 * 5 + 1  # halves: about 2·log2(21) retries, not one per item
        assert await commit.submit("last") == "stored last"
    assert await stored_ids(database) == {*clean, "last"}


async def test_a_value_the_store_cannot_hold_fails_alone_as_unstorable(database: Database) -> None:
    """The production failure: one item's value fails the statement (SQLSTATE 22 / OverflowError)."""
    write = Recorder()
    clean = [f"clean-{i}" for i in range(15)]
    async with running(database, write) as commit:
        outcomes = await asyncio.gather(
            *(commit.submit(item) for item in ["poison", *clean]), return_exceptions=True
        )
    assert isinstance(outcomes[0], Unstorable) and outcomes[0].status == 422
    assert "2" * 5 not in str(outcomes[0])  # names the problem, never the statement's values
    assert outcomes[1:] == [f"stored {item}" for item in clean]
    assert await stored_ids(database) == set(clean)


RUNS = itertools.count()


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(min_value=1, max_value=40),
    poisoned=st.sets(st.integers(min_value=0, max_value=39), max_size=3),
)
async def test_a_batch_with_poisoned_items_stores_every_clean_item(
    database: Database, size: int, poisoned: set[int]
) -> None:
    prefix = next(RUNS)  # examples share the database
    items = [f"{'poison' if i in poisoned else 'clean'}-{prefix}-{i}" for i in range(size)]
    async with running(database, Recorder()) as commit:
        outcomes = await asyncio.gather(*(commit.submit(item) for item in items), return_exceptions=True)
    for item, outcome in zip(items, outcomes, strict=True):
        if item.startswith("poison"):
            assert isinstance(outcome, Unstorable), (item, outcome)
        else:
            assert outcome == f"stored {item}"
    stored = {i for i in await stored_ids(database) if i.split("-")[1] == str(prefix)}
    assert stored == {item for item in items if item.startswith("clean")}


async def test_only_committed_batches_are_counted(database: Database) -> None:
    """`commits` and `items` count what was committed; a rolled-back batch is neither."""
    write = Recorder(fail_when=lambda items: "bad" in items)
    async with running(database, write) as commit:
        first = await asyncio.gather(
            *(commit.submit(item) for item in ("a", "bad", "b")), return_exceptions=True
        )
        assert first[0] == "stored a" and first[2] == "stored b" and isinstance(first[1], RuntimeError)
        assert list(await asyncio.gather(commit.submit("c"), commit.submit("d"))) == ["stored c", "stored d"]
    # [a, bad, b] failed; [a] committed; [bad, b] failed; [bad] failed; [b] committed; [c, d] committed.
    assert write.batches == [["a", "bad", "b"], ["a"], ["bad", "b"], ["bad"], ["b"], ["c", "d"]]
    assert (commit.commits, commit.items) == (3, 4)


def unreachable_url(database_url: str, tmp_path: Path) -> str:
    if make_url(database_url).get_backend_name() == "postgresql":
        return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/notigate"
    occupied = tmp_path / "occupied"
    occupied.mkdir()  # a directory where the database file should be
    return f"sqlite+aiosqlite:///{occupied}"


async def workers_stopped(before: set[threading.Thread]) -> None:
    """Let aiosqlite's worker threads of failed connects finish while the loop still runs.

    aiosqlite stops the thread of a failed connect without waiting for it; if the test's loop
    closed first, the thread would raise 'Event loop is closed' (omnilib/aiosqlite#241).
    """
    for _ in range(500):
        if not [t for t in threading.enumerate() if t not in before and t.is_alive()]:
            return
        await asyncio.sleep(0.01)


async def test_a_database_that_cannot_be_reached_answers_unavailable(
    database_url: str, tmp_path: Path
) -> None:
    threads = set(threading.enumerate())
    database = Database(unreachable_url(database_url, tmp_path))
    write = Recorder()
    try:
        async with running(database, write) as commit:
            with pytest.raises(Unavailable):
                await commit.submit("first")
            # The writer survives the failure: the next submit is answered the same way.
            outcomes = await asyncio.gather(
                *(commit.submit(f"next-{i}") for i in range(3)), return_exceptions=True
            )
            assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
        assert write.batches == []  # never got a connection to write with
    finally:
        await database.dispose()
        await workers_stopped(threads)
