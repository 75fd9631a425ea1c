"""Per-key intake quotas: a token bucket shared by every API process through Redis.

One script refills and takes tokens atomically (`gateway.token_bucket`, shared with the
provider rate limits; it reads the time from the caller, see there for the clock-skew
assumption). A request needs a whole token; a bulk request takes one per recipient and may
drive the bucket below zero: it is admitted whole, and the key then waits until the bucket
has refilled, so its average rate holds. If Redis is unreachable each process falls back to
its own bucket rather than refusing intents.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import RateLimited
from gateway.redis_keys import Keys
from gateway.token_bucket import TAKE_MANY


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    key_id: str
    rate: float
    burst: int
    count: int = 1
    name: str = ""  # the key's name, for the refusal message

    def refusal(self, wait: float) -> RateLimited:
        return RateLimited(
            f"key {self.name!r} is over its quota of {self.rate:g} intents/s (burst {self.burst}); "
            f"retry in {retry_after(wait)}s",
            retry_after=wait,
        )


@dataclass
class _Bucket:
    tokens: float
    at: float


class Quota:
    def __init__(self, redis: Redis, keys: Keys, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock  # epoch seconds: tests refill a bucket by moving it, not by sleeping
        self._take = redis.register_script(TAKE_MANY)
        self._local: dict[str, _Bucket] = {}

    async def take(self, key_id: str, rate: float, burst: int, count: int = 1) -> float:
        """0 when admitted, else the seconds to wait before trying again."""
        return (await self.take_many([QuotaSpec(key_id, rate, burst, count)]))[0]

    async def take_many(self, specs: Sequence[QuotaSpec]) -> list[float]:
        """Several takes in one script call, in order (a batch's requests, of one key or many)."""
        now = self.clock()
        if not specs:
            return []
        args: list[float] = [now]
        for spec in specs:
            args += (spec.rate, spec.burst, spec.count)
        try:
            waits = await self._take(keys=[self.keys.quota(spec.key_id) for spec in specs], args=args)
            return [float(w) for w in waits]
        except (RedisError, OSError):
            return [self._take_locally(s.key_id, s.rate, s.burst, s.count, now) for s in specs]

    def _take_locally(self, key_id: str, rate: float, burst: int, count: int, now: float) -> float:
        bucket = self._local.setdefault(key_id, _Bucket(float(burst), now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            return (1 - bucket.tokens) / rate
        bucket.tokens -= count
        return 0.0


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
