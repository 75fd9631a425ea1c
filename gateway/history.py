"""Recent deliveries per user, and the atomic commit that counts them, in Redis.

The engine decides with a snapshot of the user's history; two intents for one user can
decide at the same moment from the same snapshot. So a decided delivery is *reserved*
by one Lua script that, atomically for that user, re-checks its content-dedup window and
every cap that applies to it against the history as it is now (including what this very
call has just added), and only then records it. A delivery the script refuses becomes a
suppression (`duplicate` or `frequency_capped`).

A reservation is made before its intent is stored, so it starts out *provisional*: the
user's provisional hash names its owner (the process that reserved it) and when. The
commit that stores the intent confirms it (the field is removed, in the background); a
commit that fails releases it. A process that dies between the two leaves a reservation
nobody will confirm or release, and it must not suppress anyone: a provisional entry whose
owner stopped beating (`Keys.owner`, renewed every second, gone 5 s after a crash) or that
is older than `PROVISIONAL_FOR` is a *suspect*, and before any read or reservation counts
it, the database says whether its delivery was committed: if so it is confirmed, if not it
is dropped. Two entries are never counted against an intent: its own (the same
notification, decided again after a lease ran out) and those of the same producer's same
idempotency key (a retry after a crash is never its own duplicate; the database's claim on
the key lets only one of them be stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import HistoryUnavailable
from gateway.model import HistoryEntry
from gateway.policy.compiled import Cap
from gateway.redis_keys import Keys

log = logging.getLogger("gateway.history")

BEAT_EVERY = 1.0  # seconds between an owner's heartbeats
BEAT_TTL_MS = 5_000  # an owner silent this long is taken for dead
PROVISIONAL_FOR = dt.timedelta(seconds=60)  # no commit takes longer: older unconfirmed entries are checked
SETTLE_ROUNDS = 3  # new suspects appearing while settling (more crashes) are settled again, this often


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
    i: str = ""  # the intent's identity (producer and idempotency key), when it has a key


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


def identity_of(producer: str, idempotency_key: str | None) -> str:
    """A short, stable name for "this producer's intent with this key": the same for a retry."""
    if idempotency_key is None:
        return ""
    return hashlib.blake2b(f"{producer}\0{idempotency_key}".encode(), digest_size=8).hexdigest()


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
    identity: str = ""

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
                i=self.identity,
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


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the reservation script said of one delivery."""

    kind: Literal["ok", "duplicate", "capped"]
    notification_id: str = ""  # duplicate: the notification that already carries this message
    cap: str = ""  # capped: the cap that was reached

    @classmethod
    def parse(cls, raw: str) -> Verdict:
        kind, _, detail = raw.partition(":")
        if kind == "ok":
            return _OK
        if kind == "duplicate":
            return cls("duplicate", notification_id=detail)
        if kind == "capped":
            return cls("capped", cap=detail)
        raise HistoryUnavailable(f"the reservation script answered {raw!r}")


_OK = Verdict("ok")


@dataclass(slots=True)
class UserHistory:
    """A user's recent entries as read (suspects already settled), with each one's intent identity."""

    entries: list[HistoryEntry] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)

    def for_intent(self, notification_id: str, identity: str) -> list[HistoryEntry]:
        """What an intent is decided against: everything but its own earlier reservations."""
        if not identity and not notification_id:
            return self.entries
        return [
            e
            for e, i in zip(self.entries, self.identities, strict=True)
            if not (identity and i == identity)
            and not (notification_id and e.notification_id == notification_id)
        ]

    def plus(self, reservations: Sequence[Reservation]) -> UserHistory:
        """This history as later intents of the same batch see it: as if these were sent."""
        return UserHistory(
            [*self.entries, *(r.entry() for r in reservations)],
            [*self.identities, *(r.identity for r in reservations)],
        )


@dataclass(frozen=True, slots=True)
class _Suspect:
    user_id: str
    delivery_id: str
    member: str


# Both scripts serve many users in one call (one round trip and one command per micro-batch,
# not one per user): KEYS are each user's pair, the history set then the provisional hash;
# the answer is one reply per pair, in order. ARGV[1] now (ms), ARGV[2] keep_from (ms),
# ARGV[3] the owners' key prefix, ARGV[4] how long an entry may stay provisional (ms).
# `load_entries` gives a user's entries from `keep_from`, each marked `state`: 'c' confirmed,
# 'p' provisional with a live owner, 's' suspect (owner gone, or too old). Provisional fields
# whose entry is gone are dropped on the way.
_LOAD = """
local now = tonumber(ARGV[1])
local keep_from = tonumber(ARGV[2])
local owner_prefix = ARGV[3]
local provisional_for = tonumber(ARGV[4])
local alive = {}

local function load_entries(key, pkey)
  local pending = {}
  local any = false
  local flat = redis.call('HGETALL', pkey)
  for i = 1, #flat, 2 do
    local owner, made = string.match(flat[i + 1], '^(.*)|(%d+)$')
    pending[flat[i]] = {owner = owner, made = tonumber(made), seen = false}
    any = true
  end
  local function live(p)
    if now - p.made > provisional_for then return false end
    if alive[p.owner] == nil then alive[p.owner] = redis.call('EXISTS', owner_prefix .. p.owner) == 1 end
    return alive[p.owner]
  end
  local entries = {}
  local raw = redis.call('ZRANGEBYSCORE', key, keep_from, '+inf', 'WITHSCORES')
  for i = 1, #raw, 2 do
    local e = cjson.decode(raw[i])
    e.member = raw[i]
    e.score = tonumber(raw[i + 1])
    e.state = 'c'
    local p = any and pending[e.d]
    if p then
      p.seen = true
      if live(p) then e.state = 'p' else e.state = 's' end
    end
    entries[#entries + 1] = e
  end
  for d, p in pairs(pending) do
    -- its entry left the window or was released: nothing is left to confirm
    if not p.seen then redis.call('HDEL', pkey, d) end
  end
  return entries
end
"""

# Per user: member, score, state, member, score, state, ...
_READ = (
    _LOAD
    + """
local function read(key, pkey)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. keep_from)
  local out = {}
  if redis.call('EXISTS', pkey) == 0 then
    -- nothing provisional (the usual case): every entry stands, none needs decoding here
    local raw = redis.call('ZRANGEBYSCORE', key, keep_from, '+inf', 'WITHSCORES')
    for i = 1, #raw, 2 do
      out[#out + 1] = raw[i]
      out[#out + 1] = raw[i + 1]
      out[#out + 1] = 'c'
    end
    return out
  end
  for _, e in ipairs(load_entries(key, pkey)) do
    out[#out + 1] = e.member
    out[#out + 1] = tostring(e.score)
    out[#out + 1] = e.state
  end
  return out
end

local answers = {}
for u = 1, #KEYS / 2 do
  answers[u] = read(KEYS[2 * u - 1], KEYS[2 * u])
end
return answers
"""
)

# ARGV[5] the items of each pair (a JSON list of lists), ARGV[6] this process's owner id,
# ARGV[7] the history's TTL (ms), ARGV[8] the owner beat's TTL (ms). Pairs run in order, so
# a user named twice sees the first one's reservations. Per pair: {'check', member, ...}
# when suspects must be settled first (nothing is reserved for it then), else one verdict
# per item.
_RESERVE = (
    _LOAD
    + """
local requests = cjson.decode(ARGV[5])
local me = ARGV[6]
local ttl = tonumber(ARGV[7])
redis.call('SET', owner_prefix .. me, '1', 'PX', tonumber(ARGV[8]))
alive[me] = true

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

local function own(item, e)
  return (item.n ~= '' and e.n == item.n) or (item.i ~= '' and e.i == item.i)
end

local function reserve(key, pkey, items)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. keep_from)
  local entries = load_entries(key, pkey)
  local suspects = {'check'}
  for _, e in ipairs(entries) do
    if e.state == 's' then suspects[#suspects + 1] = e.member end
  end
  if #suspects > 1 then return suspects end

  local verdicts = {}
  for i, item in ipairs(items) do
    local verdict = 'ok'
    if item.dedup > 0 then
      for _, e in ipairs(entries) do
        if e.score > now - item.dedup and e.f == item.fp and e.f ~= '' and not own(item, e) then
          verdict = 'duplicate:' .. (e.n or ''); break
        end
      end
    end
    if verdict == 'ok' then
      for _, cap in ipairs(item.caps) do
        local count = 0
        for _, e in ipairs(entries) do
          if e.score > now - cap.window and counts(cap, e) and not own(item, e) then count = count + 1 end
        end
        if count >= cap.limit then verdict = 'capped:' .. cap.name; break end
      end
    end
    if verdict == 'ok' then
      redis.call('ZADD', key, item.score, item.member)
      redis.call('HSET', pkey, item.d, me .. '|' .. now)
      local e = cjson.decode(item.member)
      e.score = item.score
      entries[#entries + 1] = e
    end
    verdicts[i] = verdict
  end
  if #items > 0 then
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', pkey, ttl)
  end
  return verdicts
end

local answers = {}
for u = 1, #KEYS / 2 do
  answers[u] = reserve(KEYS[2 * u - 1], KEYS[2 * u], requests[u])
end
return answers
"""
)


# Confirmations of many users in one command: KEYS each user's provisional hash, ARGV[1] the
# delivery ids of each (a JSON list of lists, in the same order).
_CONFIRM = """
local ids = cjson.decode(ARGV[1])
for u, pkey in ipairs(KEYS) do
  local own = ids[u]
  for i = 1, #own, 1000 do  -- unpack's stack is limited: a user with thousands goes in parts
    redis.call('HDEL', pkey, unpack(own, i, math.min(i + 999, #own)))
  end
end
return #KEYS
"""


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


Committed = Callable[[Sequence[str]], Awaitable[set[str]]]


class RedisHistory:
    """The per-user delivery history in Redis: read by decisions, written by reservations.

    `owner` names this process in provisional reservations; `committed` tells which of some
    delivery ids the database stored (`IntakeWriter.committed`), to settle suspects.
    """

    def __init__(
        self, redis: Redis, keys: Keys, window: dt.timedelta, *, owner: str, committed: Committed
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.window = window  # how far back any policy check looks
        self.owner = owner
        self.committed = committed
        self._read = redis.register_script(_READ)
        self._reserve = redis.register_script(_RESERVE)
        self._confirm = redis.register_script(_CONFIRM)
        self._confirming: list[tuple[str, str]] = []  # (user id, delivery id)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- the owner's heartbeat and the confirmations, in one background task --

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._background(), name="history-owner")

    async def stop(self) -> None:
        """Confirm what is pending and stop beating: this owner's provisional entries left
        unconfirmed are settled by whoever meets them next."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.keys.owner(self.owner))

    def confirm(self, user_id: str, reservations: Sequence[Reservation]) -> None:
        """Their intent was stored: make them permanent (soon, in the background; until then,
        and even if this never happens, they count as this owner's live reservations, and a
        suspect entry whose delivery was committed is confirmed by whoever settles it)."""
        if reservations:
            self._confirming.extend((user_id, r.delivery_id) for r in reservations)
            self._wake.set()

    async def _background(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while True:
            if loop.time() >= next_beat:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.set(self.keys.owner(self.owner), b"1", px=BEAT_TTL_MS)
                next_beat = loop.time() + BEAT_EVERY
            await self._flush_confirmations()
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancellation is never dropped
                async with asyncio.timeout(max(0.0, next_beat - loop.time())):
                    await self._wake.wait()
            self._wake.clear()

    async def _flush_confirmations(self) -> None:
        batch, self._confirming = self._confirming, []
        if not batch:
            return
        by_user: dict[str, list[str]] = {}
        for user_id, delivery_id in batch:
            by_user.setdefault(user_id, []).append(delivery_id)
        try:
            await self._confirm(
                keys=[self.keys.provisional(user_id) for user_id in by_user],
                args=[_encode(list(by_user.values()))],
            )
        except (RedisError, OSError) as exc:  # they will be settled as suspects instead
            log.info("could not confirm %d reservations: %s", len(batch), type(exc).__name__)

    # -- reading --

    async def recent(self, user_id: str, now: dt.datetime) -> list[HistoryEntry]:
        return (await self.recent_many([user_id], now))[0].entries

    async def recent_many(self, user_ids: Sequence[str], now: dt.datetime) -> list[UserHistory]:
        """Histories of many users in one script call (one more per round of suspects to settle)."""
        answers: dict[str, UserHistory] = {}
        todo = list(user_ids)
        for _ in range(SETTLE_ROUNDS + 1):
            raw = await self._run_per_user(self._read, [(u, []) for u in todo], now)
            suspects: list[_Suspect] = []
            for user_id, rows in zip(todo, raw, strict=True):
                history, found = _history(user_id, rows)
                answers[user_id] = history
                suspects.extend(found)
            if not suspects:
                break
            await self._settle(suspects)
            todo = list(dict.fromkeys(s.user_id for s in suspects))
        else:
            log.warning("history of %d users kept changing while settling; read as is", len(todo))
        return [answers[u] for u in user_ids]

    # -- reserving --

    async def reserve(self, user_id: str, items: Sequence[Reservation], now: dt.datetime) -> list[Verdict]:
        """Commit deliveries atomically; one verdict each."""
        return (await self.reserve_many([(user_id, items)], now))[0]

    async def reserve_many(
        self, requests: Sequence[tuple[str, Sequence[Reservation]]], now: dt.datetime
    ) -> list[list[Verdict]]:
        """Many users' reservations in one round trip and one script call, atomic as a whole;
        requests for the same user run in the order given. A user with suspect entries is
        answered after they are settled (a round trip to the database and one more here)."""
        verdicts: list[list[Verdict]] = [[] for _ in requests]
        todo = [i for i, (_, items) in enumerate(requests) if items]
        for _ in range(SETTLE_ROUNDS + 1):
            if not todo:
                return verdicts
            raw = await self._run_per_user(self._reserve, [requests[i] for i in todo], now)
            suspects: list[_Suspect] = []
            again: list[int] = []
            for i, answer in zip(todo, raw, strict=True):
                words = [_text(v) for v in answer]
                if words and words[0] == "check":
                    user_id = requests[i][0]
                    suspects.extend(_Suspect(user_id, _decode(m).d, m) for m in words[1:])
                    again.append(i)
                else:
                    verdicts[i] = [Verdict.parse(w) for w in words]
            if suspects:
                await self._settle(suspects)
            todo = again
        raise HistoryUnavailable("reservations kept meeting new unconfirmed entries of stopped processes")

    async def release(self, user_id: str, items: Sequence[Reservation]) -> None:
        """Undo reservations whose notification was not stored after all."""
        if items:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.keys.history(user_id), *(item.member() for item in items))
                    pipe.hdel(self.keys.provisional(user_id), *(item.delivery_id for item in items))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                raise HistoryUnavailable(f"reservations cannot be released: {exc}") from exc

    # -- internals --

    async def _settle(self, suspects: Sequence[_Suspect]) -> None:
        """Confirm the suspects whose delivery was committed, drop the others."""
        stored = await self.committed([s.delivery_id for s in suspects])
        dropped = [s for s in suspects if s.delivery_id not in stored]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for s in suspects:
                    if s.delivery_id not in stored:
                        pipe.zrem(self.keys.history(s.user_id), s.member)
                    pipe.hdel(self.keys.provisional(s.user_id), s.delivery_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(f"unconfirmed reservations cannot be settled: {exc}") from exc
        if dropped:
            log.warning(
                "dropped %d reservations a stopped process made for intents it never stored", len(dropped)
            )

    def user_keys(self, user_id: str) -> tuple[str, str]:
        return self.keys.history(user_id), self.keys.provisional(user_id)

    async def _run_per_user(
        self, script: Any, requests: Sequence[tuple[str, Sequence[Reservation]]], now: dt.datetime
    ) -> list[Any]:
        """One call of `script` for every (user, items) pair: one answer per pair, in order."""
        if not requests:
            return []
        keep_from = _ms(now - self.window)
        args: list[Any] = [
            _ms(now),
            keep_from,
            self.keys.owner(""),
            int(PROVISIONAL_FOR.total_seconds() * 1000),
        ]
        if script is self._reserve:
            ttl = int((self.window + dt.timedelta(days=1)).total_seconds() * 1000)
            items = _encode([[_payload(item) for item in items] for _, items in requests])
            args += [items, self.owner, ttl, BEAT_TTL_MS]
        keys = [key for user_id, _ in requests for key in self.user_keys(user_id)]
        try:
            return list(await script(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(f"the delivery history cannot be used: {exc}") from exc


def _payload(item: Reservation) -> dict[str, Any]:
    return {
        "member": item.member(),
        "score": _ms(item.at),
        "fp": item.fingerprint,
        "dedup": int(item.dedup.total_seconds() * 1000) if item.dedup else 0,
        "caps": [_cap(cap) for cap in item.caps],
        "d": item.delivery_id,
        "n": item.notification_id,
        "i": item.identity,
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _history(user_id: str, rows: Sequence[Any]) -> tuple[UserHistory, list[_Suspect]]:
    history = UserHistory()
    suspects: list[_Suspect] = []
    for n in range(0, len(rows), 3):
        member, score, state = _text(rows[n]), float(rows[n + 1]), _text(rows[n + 2])
        stored = _decode(member)
        if state == "s":
            suspects.append(_Suspect(user_id, stored.d, member))
            continue
        history.entries.append(_entry(stored, score))
        history.identities.append(stored.i)
    return history, suspects


def _entry(stored: _Stored, score: float) -> HistoryEntry:
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
