"""Kept-alive SMTP connections to one relay, for one worker process.

Opening a session costs a TCP handshake, the greeting, EHLO, a TLS handshake and AUTH:
several round trips before the first byte of a message. A relay takes many messages per
session (RFC 5321 section 3.3: MAIL starts each transaction), so the SMTP adapter keeps
its sessions open between sends, and only here:

- at most `size` connections at once (the worker's sends beyond that wait for one), so a
  burst never opens more sessions than the relay allows a client;
- an idle connection is reused only while younger than `idle_for` seconds since its last
  message and still connected; relays drop idle sessions (Postfix after 300 s), and a
  stale one is closed rather than tried;
- a connection is given back only after a clean transaction (or a refusal the client
  reset with RSET); after a timeout, a hang-up or an answer we could not read it is
  closed, since its state is unknown;
- `close()` (worker stop) says QUIT on every idle connection and refuses new ones.

What happens when a reused connection turns out dead is the adapter's rule, not the pool's:
it tries once more on a fresh one when nothing of the message was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Session(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def quit(self) -> object: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Session)


class PoolClosed(RuntimeError):
    """The worker is stopping: no new SMTP session is opened."""


class SmtpPool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        *,
        size: int,
        idle_for: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self.idle_for = idle_for
        self._clock = clock
        self._idle: list[tuple[C, float]] = []  # (connection, when it was given back), newest last
        self._closed = False
        self.opened = 0  # connections opened so far (tests and metrics read it)

    async def acquire(self) -> tuple[C, bool]:
        """A connection and whether it was kept from an earlier message."""
        if self._closed:
            raise PoolClosed("the SMTP adapter is closed")
        await self._slots.acquire()
        try:
            while self._idle:
                session, since = self._idle.pop()
                if session.is_connected and self._clock() - since < self.idle_for:
                    return session, True
                await _quit(session)
            session = await self._connect()
            self.opened += 1
            return session, False
        except BaseException:
            self._slots.release()
            raise

    async def release(self, session: C, *, keep: bool) -> None:
        """Give the connection back for the next message, or close it."""
        try:
            if keep and not self._closed and self.idle_for > 0 and session.is_connected:
                self._idle.append((session, self._clock()))
            else:
                await _quit(session)
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for session, _ in idle:
            await _quit(session)


async def _quit(session: Session) -> None:
    """QUIT when the session still answers; close it whatever happens."""
    if session.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.quit(), 2)
    session.close()
