"""Recent deliveries per user, and the atomic commit that counts them, in Redis.

The engine decides with a snapshot of the user's history; two intents for one user can
decide at the same moment from the same snapshot. So a decided delivery is *reserved*
by one Lua script that, atomically for that user, re-checks its content-dedup window and
every cap that applies to it against the history as it is now (including what this very
call has just added), and only then records it. A delivery the script refuses becomes a
suppression (`duplicate` or `frequency_capped`). Nothing is counted until this commit,
and a commit whose notification is then not stored (replayed idempotency key, database
down) is released again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import HistoryUnavailable
from gateway.model import HistoryEntry
from gateway.policy.compiled import Cap
from gateway.redis_keys import Keys


class _Stored(msgspec.Struct, omit_defaults=True, frozen=True):
    """A history entry as stored: short keys, since every user's set holds many."""

    d: str  # delivery id (keeps members unique)
    e: str  # event
    c: str  # channel
    k: str = ""  # category
    p: str = "normal"  # priority
    f: str = ""  # content fingerprint
    b: int = 0  # 1 for a batched delivery
    n: str = ""  # notification id
    w: int = 0  # a batched delivery's window close, in ms since the epoch


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


@dataclass(frozen=True, slots=True)
class Reservation:
    """One delivery to commit: what it is, when it goes, and what it must be checked against."""

    delivery_id: str
    notification_id: str
    event: str
    channel: str
    category: str
    priority: str
    fingerprint: str
    at: dt.datetime
    dedup: dt.timedelta | None
    caps: Sequence[Cap]
    batched: bool = False
    batch_closes_at: dt.datetime | None = None

    def member(self) -> str:
        return _encode(
            _Stored(
                d=self.delivery_id,
                e=self.event,
                c=self.channel,
                k=self.category,
                p=self.priority,
                f=self.fingerprint,
                b=int(self.batched),
                n=self.notification_id,
                w=_ms(self.batch_closes_at) if self.batch_closes_at is not None else 0,
            )
        ).decode()

    def entry(self) -> HistoryEntry:
        """The history entry this reservation becomes: what later intents decide against."""
        return HistoryEntry(
            event=self.event,
            channel=self.channel,
            at=self.at,
            fingerprint=self.fingerprint or None,
            category=self.category or None,
            priority=self.priority,  # type: ignore[arg-type]
            batched=self.batched,
            batch_closes_at=self.batch_closes_at,
            notification_id=self.notification_id,
        )


_RESERVE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local keep_from = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local items = cjson.decode(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. keep_from)

local entries = {}
local raw = redis.call('ZRANGEBYSCORE', key, keep_from, '+inf', 'WITHSCORES')
for i = 1, #raw, 2 do
  local e = cjson.decode(raw[i])
  e.score = tonumber(raw[i + 1])
  entries[#entries + 1] = e
end

local function glob(pattern, event)
  if pattern == '*' then return true end
  if string.sub(pattern, -2) == '.*' then
    local prefix = string.sub(pattern, 1, -2)
    return string.sub(event, 1, #prefix) == prefix
  end
  return pattern == event
end

local function counts(cap, e)
  if e.b == 1 or e.p == 'urgent' then return false end
  if cap.channels ~= cjson.null then
    local found = false
    for _, c in ipairs(cap.channels) do if c == e.c then found = true end end
    if not found then return false end
  end
  if cap.category ~= cjson.null and cap.category ~= e.k then return false end
  if cap.events ~= cjson.null then
    for _, p in ipairs(cap.events) do if glob(p, e.e) then return true end end
    return false
  end
  return true
end

local verdicts = {}
for i, item in ipairs(items) do
  local verdict = 'ok'
  if item.dedup > 0 then
    for _, e in ipairs(entries) do
      if e.score > now - item.dedup and e.f == item.fp and e.f ~= '' then verdict = 'duplicate'; break end
    end
  end
  if verdict == 'ok' then
    for _, cap in ipairs(item.caps) do
      local count = 0
      for _, e in ipairs(entries) do
        if e.score > now - cap.window and counts(cap, e) then count = count + 1 end
      end
      if count >= cap.limit then verdict = 'capped:' .. cap.name; break end
    end
  end
  if verdict == 'ok' then
    redis.call('ZADD', key, item.score, item.member)
    local e = cjson.decode(item.member)
    e.score = item.score
    entries[#entries + 1] = e
  end
  verdicts[i] = verdict
end
if #items > 0 then redis.call('PEXPIRE', key, ttl) end
return verdicts
"""


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


class RedisHistory:
    """The per-user delivery history in Redis: read by decisions, written by reservations."""

    def __init__(self, redis: Redis, keys: Keys, window: dt.timedelta) -> None:
        self.redis = redis
        self.keys = keys
        self.window = window  # how far back any policy check looks
        self._reserve = redis.register_script(_RESERVE)

    async def recent(self, user_id: str, now: dt.datetime) -> list[HistoryEntry]:
        return (await self.recent_many([user_id], now))[0]

    async def recent_many(self, user_ids: Sequence[str], now: dt.datetime) -> list[list[HistoryEntry]]:
        """Histories of many users in one round trip."""
        low = _ms(now - self.window)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.zrangebyscore(self.keys.history(user_id), low, "+inf", withscores=True)
                raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(f"the delivery history cannot be read: {exc}") from exc
        return [[_entry(member, score) for member, score in rows] for rows in raw]

    async def reserve(self, user_id: str, items: Sequence[Reservation], now: dt.datetime) -> list[str]:
        """Commit deliveries atomically; one verdict each: `ok`, `duplicate` or `capped:<cap>`."""
        return (await self.reserve_many([(user_id, items)], now))[0]

    async def reserve_many(
        self, requests: Sequence[tuple[str, Sequence[Reservation]]], now: dt.datetime
    ) -> list[list[str]]:
        """Many users' reservations in one round trip; each user's is still one atomic script,
        and requests for the same user run in the order given."""
        keep_from = _ms(now - self.window)
        ttl = int((self.window + dt.timedelta(days=1)).total_seconds() * 1000)
        verdicts: list[list[str]] = [[] for _ in requests]
        wanted = [i for i, (_, items) in enumerate(requests) if items]
        if not wanted:
            return verdicts
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in wanted:
                    user_id, items = requests[i]
                    payload = [
                        {
                            "member": item.member(),
                            "score": _ms(item.at),
                            "fp": item.fingerprint,
                            "dedup": int(item.dedup.total_seconds() * 1000) if item.dedup else 0,
                            "caps": [_cap(cap) for cap in item.caps],
                        }
                        for item in items
                    ]
                    await self._reserve(
                        keys=[self.keys.history(user_id)],
                        args=[_ms(now), keep_from, ttl, _encode(payload)],
                        client=pipe,
                    )
                raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(f"deliveries cannot be committed to the history: {exc}") from exc
        for i, answer in zip(wanted, raw, strict=True):
            verdicts[i] = [v.decode() if isinstance(v, bytes) else str(v) for v in answer]
        return verdicts

    async def release(self, user_id: str, items: Sequence[Reservation]) -> None:
        """Undo reservations whose notification was not stored after all."""
        if items:
            try:
                await self.redis.zrem(self.keys.history(user_id), *(item.member() for item in items))
            except (RedisError, OSError) as exc:
                raise HistoryUnavailable(f"reservations cannot be released: {exc}") from exc


def _entry(member: bytes, score: float) -> HistoryEntry:
    stored = _decode(member)
    return HistoryEntry(
        event=stored.e,
        channel=stored.c,
        at=dt.datetime.fromtimestamp(score / 1000, dt.UTC),
        fingerprint=stored.f or None,
        category=stored.k or None,
        priority=stored.p,  # type: ignore[arg-type]
        batched=bool(stored.b),
        batch_closes_at=dt.datetime.fromtimestamp(stored.w / 1000, dt.UTC) if stored.w else None,
        notification_id=stored.n or None,
    )


def _cap(cap: Cap) -> dict[str, Any]:
    return {
        "name": cap.name,
        "limit": cap.limit,
        "window": int(cap.window.total_seconds() * 1000),
        "channels": sorted(cap.channels) if cap.channels is not None else None,
        "category": cap.category,
        "events": list(cap.events) if cap.events is not None else None,
    }
