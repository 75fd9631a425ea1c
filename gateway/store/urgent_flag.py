"""Urgent SQLite writers, seen by every process on the file: a flock on `<database>-urgent`.

`WriteGate` orders one process's writers. Writers of different processes (the API beside its
workers) meet only at SQLite's file lock, and SQLite's busy handler makes a waiter sleep 1, 2,
5, 10, 15, 20, 25 ... ms between tries, however soon the lock frees: while a worker writes
back to back (a campaign's expansion, delivery claims and outcomes), an urgent intent's commit
in the API lost that race again and again (p99 346 ms at 1,000 bulk intents/s).

So an urgent writer holds a shared flock on a side file from before it queues for the lock
until it has committed, and every other writer looks (an exclusive flock, tried without
blocking, released at once) once it has its own process's turn and before each try at the
lock (`gateway.store.sqlite_writes`): a writer that had queued for its process's turn, or
had been trying for the lock, before the urgent one came would otherwise race it for the
lock when it frees. While it sees the flag raised it waits in 1 ms steps, up to `patience`,
and then writes anyway: a stream of urgent writes slows bulk work but never stops it. An
urgent commit then waits for at most the one transaction already under way. flock
belongs to an open file, not to a process, so two `Database`s of one process see each other
as two processes would (the tests rely on it); the kernel drops a dead process's locks, so a
crash leaves no flag raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)

PATIENCE = 0.1  # seconds a non-urgent writer defers to urgent ones before it writes anyway
STEP = 0.001  # its look again, while it defers
TAKE_TRIES = 50  # an urgent writer's tries at the shared lock while others look (µs each)


class UrgentFlag:
    """Raised by urgent writers, looked at by every other writer, across processes."""

    def __init__(self, path: Path, *, patience: float = PATIENCE) -> None:
        self.path = path
        self.patience = patience
        self._raised = 0  # this process's urgent writers under way
        self._files: tuple[int, int, int] | None = None  # (pid, held, looked), opened lazily
        self._broken = False

    @classmethod
    def beside(cls, database: str) -> UrgentFlag:
        return cls(Path(f"{database}-urgent"))

    @contextlib.asynccontextmanager
    async def raised(self) -> AsyncIterator[None]:
        """Held around an urgent transaction: other writers defer to it meanwhile."""
        self._raised += 1
        try:
            if self._raised == 1 and (files := self._open()) is not None:
                await _take_shared(files[0])
            yield
        finally:
            self._raised -= 1
            if self._raised == 0 and self._files is not None:
                fcntl.flock(self._files[1], fcntl.LOCK_UN)

    def raised_elsewhere(self) -> bool:
        """Whether another process's urgent writer holds the flag now: a probe, no wait.

        While this process holds it too the answer is False: its own writers are ordered
        by its `WriteGate`, where an urgent one already goes first."""
        if self._raised:
            return False
        files = self._open()
        if files is None:
            return False
        looked = files[1]
        try:
            fcntl.flock(looked, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(looked, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        if self._files is not None and self._files[0] == os.getpid():
            os.close(self._files[1])
            os.close(self._files[2])
        self._files = None

    def _open(self) -> tuple[int, int] | None:
        """(the file this process holds the flag by, the one it looks by); opened again in a
        forked child, whose inherited files (and so locks) are its parent's."""
        pid = os.getpid()
        if self._files is None or self._files[0] != pid:
            if self._broken:
                return None
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            try:
                self._files = (pid, os.open(self.path, flags, 0o600), os.open(self.path, flags, 0o600))
            except OSError as exc:
                # The database's folder is writable (SQLite writes its -wal file there), so
                # this is rare; urgent writes then only go first within this process.
                self._broken = True
                log.warning("urgent writes cannot be signalled to other processes (%s): %s", self.path, exc)
                return None
        return self._files[1], self._files[2]


async def _take_shared(held: int) -> None:
    for _ in range(TAKE_TRIES):
        try:
            fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(0.0002)  # a look holds the exclusive lock for microseconds
    # Looks kept meeting: write unflagged rather than wait; this transaction is not lost.
