"""Where the gateway finds what it knows about a recipient: their state and their history.

Both are Protocols so the dry-run, the intake path and the CLI share one shape whatever
stores them (the SQL store and Redis history in production; nothing in a bare checkout).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from gateway.model import HistoryEntry, UserState


class UserDirectory(Protocol):
    async def get_user(self, user_id: str) -> UserState | None: ...


class HistorySource(Protocol):
    async def recent(self, user_id: str, now: dt.datetime) -> list[HistoryEntry]: ...


class NoStoredState:
    """Knows no users and no history: what a gateway without a store can honestly say."""

    async def get_user(self, user_id: str) -> UserState | None:
        return None

    async def recent(self, user_id: str, now: dt.datetime) -> list[HistoryEntry]:
        return []
