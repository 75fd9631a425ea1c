"""SQLite writers of one process take turns at the write gate, urgent ones first (real SQLite)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.store.database import Database, Lane
from gateway.store.sqlite_writes import collection_deferred


@pytest.fixture
async def sqlite(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    async with database.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE log (n INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT)"))
    yield database
    await database.dispose()


async def write(database: Database, who: str, lane: Lane) -> None:
    async with database.begin(lane=lane) as connection:
        await connection.execute(sa.text("INSERT INTO log (who) VALUES (:who)"), {"who": who})


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


async def test_writers_of_another_process_defer_to_an_urgent_one(sqlite: Database) -> None:
    """Two `Database`s on one file stand for two processes (flock is per open file): the
    other's ordinary and background writes wait while an urgent transaction is under way,
    and go in once it commits."""
    other = Database(sqlite.url)
    assert other.urgent_flag is not None
    other.urgent_flag.patience = 60.0  # longer than the test: it waits for the commit, not the clock
    entered, release = asyncio.Event(), asyncio.Event()

    async def urgent() -> None:
        async with sqlite.begin(lane="urgent") as connection:
            entered.set()
            await release.wait()
            await connection.execute(sa.text("INSERT INTO log (who) VALUES ('urgent')"))

    try:
        holder = asyncio.create_task(urgent())
        await entered.wait()
        waiting = [
            asyncio.create_task(write(other, "normal", "normal")),
            asyncio.create_task(write(other, "bulk", "background")),
        ]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in waiting)
        release.set()
        await asyncio.gather(holder, *waiting)
        async with sqlite.connect() as connection:
            order = [r.who for r in await connection.execute(sa.text("SELECT who FROM log ORDER BY n"))]
        assert order[0] == "urgent" and sorted(order[1:]) == ["bulk", "normal"]
    finally:
        await other.dispose()


async def test_an_urgent_writer_that_never_commits_delays_others_only_for_a_while(sqlite: Database) -> None:
    flag, other = sqlite.urgent_flag, Database(sqlite.url)
    assert flag is not None and other.urgent_flag is not None
    other.urgent_flag.patience = 0.05
    entered, release = asyncio.Event(), asyncio.Event()

    async def stuck_urgent() -> None:
        async with flag.raised():
            entered.set()
            await release.wait()

    try:
        holder = asyncio.create_task(stuck_urgent())
        await entered.wait()
        async with asyncio.timeout(5), other.begin(lane="background") as connection:
            await connection.execute(sa.text("INSERT INTO log (who) VALUES ('patient')"))
        assert not holder.done()  # it went in while the flag was still raised
        release.set()
        await holder
    finally:
        await other.dispose()


async def test_the_flag_is_lowered_when_the_last_urgent_writer_of_a_process_ends(sqlite: Database) -> None:
    flag = sqlite.urgent_flag
    assert flag is not None
    async with flag.raised(), flag.raised():
        pass
    other = Database(sqlite.url)
    try:
        assert other.urgent_flag is not None
        assert not other.urgent_flag.raised_elsewhere()
    finally:
        await other.dispose()


async def test_a_writer_already_trying_for_the_lock_holds_back_for_another_process_urgent_one(
    sqlite: Database,
) -> None:
    """A writer that began trying for the lock before an urgent writer of another process
    raised its flag still defers to it: when the lock frees, it does not take it while the
    flag is up (it would otherwise race the urgent writer for it), and goes in once it drops."""
    holder, waiter = Database(sqlite.url), Database(sqlite.url)
    flag = sqlite.urgent_flag
    assert flag is not None and waiter.urgent_flag is not None
    waiter.urgent_flag.patience = 60.0  # longer than the test: it waits for the flag, not the clock
    locked, release, lower = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def holding() -> None:
        async with holder.begin() as connection:
            await connection.execute(sa.text("INSERT INTO log (who) VALUES ('holder')"))
            locked.set()
            await release.wait()

    async def urgent_elsewhere() -> None:
        async with flag.raised():
            await lower.wait()

    try:
        held = asyncio.create_task(holding())
        await locked.wait()
        waiting = asyncio.create_task(write(waiter, "waiter", "normal"))
        await asyncio.sleep(0.05)  # it is trying for the lock, and has looked at the flag
        raised = asyncio.create_task(urgent_elsewhere())
        await asyncio.sleep(0.01)
        release.set()
        await held
        await asyncio.sleep(0.1)  # the lock is free, the flag up: it holds back
        assert not waiting.done()
        lower.set()
        await asyncio.wait_for(asyncio.gather(raised, waiting), timeout=5)
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_a_writer_still_waiting_for_the_lock_lets_an_urgent_one_of_its_process_go_first(
    sqlite: Database,
) -> None:
    """Another process holds SQLite's write lock; here an ordinary writer queued for it first,
    an urgent one after. When the lock frees, the urgent one commits first."""
    other = Database(sqlite.url)
    locked, release = asyncio.Event(), asyncio.Event()

    async def other_process() -> None:
        async with other.begin() as connection:
            await connection.execute(sa.text("INSERT INTO log (who) VALUES ('other')"))
            locked.set()
            await release.wait()

    try:
        holder = asyncio.create_task(other_process())
        await locked.wait()
        ordinary = asyncio.create_task(write(sqlite, "ordinary", "normal"))
        await asyncio.sleep(0.05)  # it holds this process's gate, trying for the lock
        urgent = asyncio.create_task(write(sqlite, "urgent", "urgent"))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(holder, ordinary, urgent)
        async with sqlite.connect() as connection:
            order = [r.who for r in await connection.execute(sa.text("SELECT who FROM log ORDER BY n"))]
        assert order == ["other", "urgent", "ordinary"]
    finally:
        await other.dispose()


async def test_no_garbage_collection_runs_while_a_writer_holds_the_lock(
    sqlite: Database, tmp_path: Path
) -> None:
    """A full collection of a busy worker's heap pauses its process for ~100 ms; inside a write
    transaction, every other process (an OTP's commit) would wait that long for the lock. The
    collector waits for the last transaction holding a lock (another file's may end later),
    then is as it was: a rollback too, and a collector disabled before stays disabled."""
    other = Database(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    def cycles() -> None:  # well past the youngest generation's threshold
        for _ in range(10 * gc.get_threshold()[0]):
            a: list[object] = []
            a.append(a)

    gc.callbacks.append(count)
    try:
        first = sqlite.begin()
        await first.__aenter__()
        async with other.begin():
            collections.clear()  # connecting, before the first lock was taken, may collect
            cycles()
            await first.__aexit__(None, None, None)
            cycles()
            assert collections == [] and not gc.isenabled()
        assert gc.isenabled()
        cycles()
        assert collections  # it runs again once the last lock is let go

        with pytest.raises(ZeroDivisionError):
            async with sqlite.begin():
                assert not gc.isenabled()
                1 / 0  # noqa: B018
        assert gc.isenabled()

        await asyncio.to_thread(_abandon_a_holder)  # its loop closed while it held a lock
        assert not gc.isenabled()
        async with sqlite.begin():  # the next writer forgets it
            pass
        assert gc.isenabled()

        gc.disable()
        async with sqlite.begin():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.callbacks.remove(count)
        await other.dispose()


_ABANDONED: list[asyncio.Task[None]] = []


def _abandon_a_holder() -> None:
    async def hold() -> None:
        held = collection_deferred()
        held.__enter__()
        await asyncio.Event().wait()
        held.__exit__(None, None, None)  # never reached

    loop = asyncio.new_event_loop()
    holder = loop.create_task(hold())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    assert not holder.done()  # it still "holds" the lock, and will never leave
    _ABANDONED.append(holder)  # kept, so it is never destroyed pending (which asyncio logs as an error)
