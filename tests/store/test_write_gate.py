"""SQLite writers of one process take turns at the write gate, urgent ones first (real SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from gateway.store.database import Database, Lane


@pytest.fixture
async def sqlite(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    async with database.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE log (n INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT)"))
    yield database
    await database.dispose()


async def test_writers_take_turns_by_lane_urgent_first_background_last(sqlite: Database) -> None:
    release = asyncio.Event()

    async def write(who: str, *, lane: Lane = "normal", hold: bool = False) -> None:
        async with sqlite.begin(lane=lane) as connection:
            await connection.execute(sa.text("INSERT INTO log (who) VALUES (:who)"), {"who": who})
            if hold:
                await release.wait()

    holder = asyncio.create_task(write("holder", hold=True))
    await asyncio.sleep(0.05)  # the holder is inside its transaction
    waiting = [asyncio.create_task(write("background", lane="background"))]
    await asyncio.sleep(0.01)
    waiting += [asyncio.create_task(write(f"ordinary-{n}")) for n in range(3)]
    await asyncio.sleep(0.01)
    waiting.append(asyncio.create_task(write("urgent", lane="urgent")))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, *waiting)
    async with sqlite.connect() as connection:
        order = [r.who for r in await connection.execute(sa.text("SELECT who FROM log ORDER BY n"))]
    assert order == ["holder", "urgent", "ordinary-0", "ordinary-1", "ordinary-2", "background"]


async def test_a_writer_cancelled_while_waiting_does_not_keep_the_gate(sqlite: Database) -> None:
    release = asyncio.Event()

    async def hold() -> None:
        async with sqlite.begin():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    doomed.cancel()
    release.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await doomed
    async with asyncio.timeout(5), sqlite.begin() as connection:  # the gate is free again
        await connection.execute(sa.text("INSERT INTO log (who) VALUES ('after')"))


async def test_a_write_transaction_inside_another_of_the_same_task_is_refused(sqlite: Database) -> None:
    async with sqlite.begin():
        with pytest.raises(RuntimeError, match="inside another one"):
            async with sqlite.begin():
                pass
