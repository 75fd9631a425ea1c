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


def as_recipient(user_id: str, stored: UserState | None) -> UserState:
    """The user a decision is made for: the stored one, or for an id the store does not know,
    a recipient with nothing on file (no contacts, preferences or zone).

    Intake and dry-run both decide this way, so a dry run shows what intake will do: for an
    unknown user only channels that need no address (the in-app feed) deliver.
    """
    return stored if stored is not None else UserState(user_id=user_id)
