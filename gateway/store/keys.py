"""Producer API keys: `<key id>.<secret>`, stored as the SHA-256 of the secret.

A key is scoped to the event patterns it may send (`order.*`) and, optionally, admin
rights (users, preferences, devices, dead letters, every notification's status). The
secret is shown once, when the key is created. Lookups of existing keys are cached for a
few seconds per process, so a revoked key stops working within that time everywhere. The
cache holds at most `cache_size` keys (least recently used go first) and nothing for an id
that names no key: a stream of made-up tokens costs a lookup each (none at all for an id
not shaped like one), never memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from gateway.errors import ClientError, Conflict
from gateway.ids import is_id, new_id
from gateway.policy.cel_functions import glob_event
from gateway.store.database import Database
from gateway.store.tables import ApiKeyRow

api_keys = ApiKeyRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    events: tuple[str, ...]
    admin: bool
    rate: float
    burst: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    def may_send(self, event: str) -> bool:
        return any(glob_event(pattern, event) for pattern in self.events)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyStore:
    def __init__(
        self,
        database: Database,
        cache_seconds: float = 5.0,
        *,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, ApiKey, str]] = OrderedDict()

    async def create(
        self, name: str, events: Sequence[str], *, admin: bool, rate: float, burst: int, now: dt.datetime
    ) -> tuple[ApiKey, str]:
        """A new key and its token (shown once; only its hash is stored)."""
        if not events and not admin:
            raise ClientError("a key needs at least one event pattern, or admin rights", field="events")
        key_id = new_id("k")
        secret = secrets.token_urlsafe(32)
        async with self.database.begin() as connection:
            taken = await connection.scalar(sa.select(api_keys.c.id).where(api_keys.c.name == name))
            if taken is not None:
                raise Conflict(
                    f"a key named {name!r} already exists; revoke it or pick another name", field="name"
                )
            await connection.execute(
                sa.insert(api_keys).values(
                    id=key_id,
                    name=name,
                    secret_hash=_hash(secret),
                    events=list(events),
                    admin=admin,
                    rate=rate,
                    burst=burst,
                    created_at=now,
                    revoked_at=None,
                )
            )
        return ApiKey(key_id, name, tuple(events), admin, rate, burst, now), f"{key_id}.{secret}"

    async def list(self) -> list[ApiKey]:
        async with self.database.connect() as connection:
            rows = await connection.execute(sa.select(api_keys).order_by(api_keys.c.created_at))
            return [_key(r) for r in rows]

    async def revoke(self, name_or_id: str, now: dt.datetime) -> bool:
        async with self.database.begin() as connection:
            result = await connection.execute(
                sa.update(api_keys)
                .where(
                    sa.or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id),
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        self._cache.clear()
        return bool(result.rowcount)

    async def authenticate(self, token: str) -> ApiKey | None:
        """The key a bearer token belongs to, if it is valid and not revoked."""
        key_id, _, secret = token.partition(".")
        if not key_id or not secret:
            return None
        key, expected = await self._lookup(key_id)
        if key is None or key.revoked_at is not None or not hmac.compare_digest(expected, _hash(secret)):
            return None
        return key

    async def by_id(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not, through the same short cache (console links
        name the key that issued them and are checked against it on every request)."""
        key, _ = await self._lookup(key_id)
        return key

    async def _lookup(self, key_id: str) -> tuple[ApiKey | None, str]:
        if not is_id(key_id, "k"):
            return None, ""
        now = self.clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] <= self.cache_seconds:
            self._cache.move_to_end(key_id)
            return cached[1], cached[2]
        async with self.database.connect() as connection:
            row = (await connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            self._cache.pop(key_id, None)
            return None, ""
        self._cache[key_id] = (now, _key(row), row.secret_hash)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return self._cache[key_id][1], row.secret_hash


def _key(row: sa.Row[object]) -> ApiKey:
    return ApiKey(
        row.id,
        row.name,
        tuple(row.events),
        row.admin,
        row.rate,
        row.burst,
        row.created_at,
        row.revoked_at,
    )
