"""Provider rate limits and circuit breakers, shared by every worker through Redis.

How to use (the delivery pipeline, around each provider call): call
`admission = await guard.admit(name)` right before `adapter.send(...)`. When
`admission.allowed` is false, do not call the provider: record a "skipped" try for it with
`admission.reason` (`circuit_open`, `rate_limited` or `paused`) and move on to the next provider of
the chain, as after a retryable failure; `admission.wait` says when this provider could
take the call again (for the retry schedule when every provider was skipped). When it is
allowed, send, then `await guard.record(name, failed=isinstance(result, Retryable),
trial=admission.trial, at_once=result.failure == "configuration")`; a timeout counts as
`Retryable`. Only retryable outcomes (the provider's health, our configuration of it)
count against the provider: a `Permanent` result (an invalid number, an unregistered
token, a message too long) says the *address* or the *message* is bad, not that the
provider is failing. A configuration failure (bad credentials, a sender not verified)
opens the breaker at once, whatever the counts: every call would fail alike. Always record
after an admitted call, trial or not, or the half-open trial is only released when its
deadline passes.

Why Redis: a provider's limit (say 50 sends/s) and its health are properties of the
provider, not of one worker, so every worker takes tokens from the same bucket and sees the
same breaker. `admit` is a Lua script (atomic across processes): it checks the breaker,
then takes a token from the bucket (`gateway.token_bucket`, the same code as producer
quotas), and hands out the half-open trial only to a caller that also got a token, so a
refusal never consumes a token or a trial. The admissions a worker asks for in one turn of
its event loop (the deliveries one claim released) go in one script call and are decided
in the order asked, each as it would be alone; so do the outcomes `record` counts
(`gateway.batching.TurnBatch`). A round trip per send was the largest part of the guard's
cost, paid twice per send with a breaker.

The breaker is the classic three-state one. Closed: calls and failures are counted in a
rolling `window` of up to 60 buckets (a ring in the breaker's hash with running totals, so a
call costs O(1) amortised); once `min_calls` calls are in the window and `failure_rate` of
them failed, it opens for `open_for`, and every worker is refused with `circuit_open` and
the time left. Then it is half-open: exactly one caller across all workers gets
`trial=True` (a deadline in the hash, set only if none is running: a SET NX with an
expiry, on the callers' clock), everyone else is still refused. A successful trial closes
the breaker and forgets the counts; a failed one opens it for another `open_for`. A trial
whose worker died is handed out again once its deadline (twice the provider's timeout, at
least 10 s) has passed. A late `record(trial=True)` from such a worker still decides:
a success is evidence the provider is back.

Time comes from `clock` (the callers' wall clock, passed to the scripts), as for quotas:
workers' clocks must agree to well under a second (NTP), see `gateway.token_bucket`.

When Redis is unreachable (RedisError, OSError) the guard fails OPEN: every call is
admitted and outcomes are not counted, with one warning per provider per minute at most.
Refusing every send because the limiter's store is down would turn a Redis outage into a
delivery outage; the providers' own limits (429, answered as `Retryable`) still hold.
A provider's own "wait" (a 429's Retry-After or rate-limit reset) is shared the same way:
`pause(name, seconds)` sets a pause every worker's `admit` sees first (reason `paused`), so
one 429 keeps every worker off the provider until its reset, not only the delivery that got
it. Every provider of `specs` takes its share of a script call per admission for that;
names not in `specs` are admitted without any.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.batching import TurnBatch
from gateway.providers.spec import BreakerPolicy, ProviderSpec, RateLimit
from gateway.redis_keys import Keys
from gateway.token_bucket import TAKE_FUNCTION

log = logging.getLogger("gateway.providers.guard")

# The rolling window is a ring of at most this many buckets: per-second for windows up to a
# minute, coarser beyond, so a provider's breaker is a hash of at most ~125 fields.
WINDOW_BUCKETS = 60
# At most one "Redis unreachable" warning per provider in this many seconds.
WARN_EVERY = 60.0

_ADMIT = (
    TAKE_FUNCTION
    + """
-- One admission: bucket, breaker and pause keys; then now, limited (0/1), rate (tokens/s),
-- burst, guarded (0/1), trial ttl (s), breaker ttl (ms). Returns reason ('' when admitted),
-- wait and trial.
local function admit(bucket, breaker, pause, now, limited, rate, burst, guarded, trial_ttl, breaker_ttl)
  local paused_until = tonumber(redis.call('GET', pause))
  if paused_until and now < paused_until then
    return 'paused', tostring(paused_until - now), '0'
  end
  local trial = 0
  if guarded == '1' then
    local state = redis.call('HMGET', breaker, 'until', 'trial')
    local open_until = tonumber(state[1])
    if open_until then
      if now < open_until then
        return 'circuit_open', tostring(open_until - now), '0'
      end
      local trial_until = tonumber(state[2])
      if trial_until and now < trial_until then
        return 'circuit_open', tostring(trial_until - now), '0'
      end
      trial = 1
    end
  end
  if limited == '1' then
    local wait = take(bucket, tonumber(rate), tonumber(burst), 1, now)
    if wait > 0 then
      return 'rate_limited', tostring(wait), '0'
    end
  end
  if trial == 1 then
    redis.call('HSET', breaker, 'trial', tostring(now + tonumber(trial_ttl)))
    redis.call('PEXPIRE', breaker, breaker_ttl)
  end
  return '', '0', tostring(trial)
end

-- The admissions asked for in one turn of a worker's event loop, per provider: KEYS: three per
-- provider; ARGV[1]: now, then seven per provider (its six above, then how many admissions it
-- asks for). A provider's admissions are decided in order (a later one sees the tokens and the
-- trial an earlier one took); one with neither a rate limit nor a breaker only reads its
-- pause, so it is decided once for all of them. Returns three values per admission, by
-- provider, in the order asked.
local now = tonumber(ARGV[1])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local a = 1 + i * 7
  local count = tonumber(ARGV[a + 7])
  local reason, wait, trial
  for n = 1, count do
    if n == 1 or ARGV[a + 1] == '1' or ARGV[a + 4] == '1' then
      reason, wait, trial = admit(KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3], now,
        ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
    end
    out[#out + 1] = reason
    out[#out + 1] = wait
    out[#out + 1] = trial
  end
end
return out
"""
)

_PAUSE = """
-- KEYS[1]: pause. ARGV: until (epoch s), ttl (ms). A later pause wins; an earlier one is ignored.
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RECORD = """
-- One admitted call's outcome: the breaker's key; now, failed (0/1), trial (0/1), min_calls,
-- failure_rate, open_for (s), buckets, bucket width (s), breaker ttl (ms), at once (0/1: a
-- failure that opens it by itself). Returns event ('opened', 'reopened', 'closed' or ''),
-- calls and failures.
local function record(key, now, failed_flag, trial, min_calls, failure_rate, open_for, buckets, width,
                      breaker_ttl, at_once)
  local failed = failed_flag == '1'
  open_for = tonumber(open_for)
  local geometry = buckets .. '/' .. width
  buckets = tonumber(buckets)
  local state = redis.call('HMGET', key, 'until', 'head', 'calls', 'failures', 'geometry')
  local open_until = tonumber(state[1])
  local head = tonumber(state[2])
  local calls = tonumber(state[3]) or 0
  local failures = tonumber(state[4]) or 0

  if trial == '1' and open_until and now >= open_until then
    if failed then
      redis.call('HSET', key, 'until', tostring(now + open_for))
      redis.call('HDEL', key, 'trial')
      redis.call('PEXPIRE', key, breaker_ttl)
      return 'reopened', tostring(calls), tostring(failures)
    end
    redis.call('DEL', key)
    return 'closed', tostring(calls), tostring(failures)
  end

  local bucket = math.floor(now / tonumber(width))
  if head == nil or state[5] ~= geometry or bucket - head >= buckets then
    -- a fresh window, every bucket stale, or the policy's window changed: start over
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if field ~= 'until' and field ~= 'trial' then
        redis.call('HDEL', key, field)
      end
    end
    head, calls, failures = bucket, 0, 0
  elseif bucket > head then
    -- the buckets between the last call and this one left the window
    for b = head + 1, bucket do
      local slot = b % buckets
      local old = redis.call('HMGET', key, 'c' .. slot, 'f' .. slot)
      calls = calls - (tonumber(old[1]) or 0)
      failures = failures - (tonumber(old[2]) or 0)
      redis.call('HDEL', key, 'c' .. slot, 'f' .. slot)
    end
    head = bucket
  end
  -- a call from a worker whose clock lags (bucket < head) counts in the newest bucket
  local slot = head % buckets
  redis.call('HINCRBY', key, 'c' .. slot, 1)
  calls = calls + 1
  if failed then
    redis.call('HINCRBY', key, 'f' .. slot, 1)
    failures = failures + 1
  end
  redis.call('HSET', key, 'head', tostring(head), 'calls', tostring(calls), 'failures', tostring(failures),
    'geometry', geometry)
  local event = ''
  local tripped = calls >= tonumber(min_calls) and failures / calls >= tonumber(failure_rate)
  if open_until == nil and (tripped or (failed and at_once == '1')) then
    redis.call('HSET', key, 'until', tostring(now + open_for))
    event = 'opened'
  end
  redis.call('PEXPIRE', key, breaker_ttl)
  return event, tostring(calls), tostring(failures)
end

-- The outcomes recorded in one turn of a worker's event loop, in order. KEYS: one breaker
-- per outcome; ARGV[1]: now, then nine per outcome. Returns three values per outcome.
local now = tonumber(ARGV[1])
local out = {}
for i = 0, #KEYS - 1 do
  local a = 1 + i * 9
  local event, calls, failures = record(KEYS[i + 1], now, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9])
  out[#out + 1] = event
  out[#out + 1] = calls
  out[#out + 1] = failures
end
return out
"""


# Why a provider is not called now: its breaker is open, our own rate limit has no token,
# or the provider itself asked every worker to wait (a 429's Retry-After, `pause`).
Refusal = Literal["circuit_open", "rate_limited", "paused"]
# The longest pause a provider's answer can impose: a reset hours ahead is a provider's
# mistake or a daily quota, and the breaker and retries handle those better.
MAX_PAUSE = 3600.0


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    reason: Refusal | None = None
    wait: float = 0.0  # seconds until it could be admitted, 0 when allowed
    trial: bool = False  # this call is the half-open trial: record(..., trial=True) after it


ADMITTED = Admission(allowed=True)


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A provider's breaker as every worker sees it, for status pages and metrics."""

    provider: str
    state: Literal["closed", "open", "half_open"]
    calls: int  # in the rolling window
    failures: int
    open_until: float | None = None  # epoch seconds; None when closed
    trial_out: bool = False  # half-open and a trial call is running


@dataclass(frozen=True, slots=True)
class _Plan:
    """One guarded provider's keys and script arguments, computed once."""

    bucket_key: str
    breaker_key: str
    pause_key: str
    limit: RateLimit | None
    breaker: BreakerPolicy | None
    trial_ttl: float
    buckets: int
    width: float
    breaker_ttl_ms: int

    @property
    def geometry(self) -> str:
        return f"{self.buckets}/{self.width!r}"


def trial_ttl(spec: ProviderSpec) -> float:
    """How long a half-open trial may run before another worker gets one: long enough for a
    slow call to finish, short enough that a dead worker does not hold the breaker long."""
    return max(2 * spec.timeout, 10.0)


def _plan(spec: ProviderSpec, keys: Keys) -> _Plan:
    window = spec.breaker.window.total_seconds() if spec.breaker else 1.0
    open_for = spec.breaker.open_for.total_seconds() if spec.breaker else 0.0
    buckets = max(1, min(WINDOW_BUCKETS, math.ceil(window)))
    ttl = trial_ttl(spec)
    return _Plan(
        bucket_key=keys.provider_bucket(spec.name),
        breaker_key=keys.breaker(spec.name),
        pause_key=keys.provider_pause(spec.name),
        limit=spec.rate_limit,
        breaker=spec.breaker,
        trial_ttl=ttl,
        buckets=buckets,
        width=window / buckets,
        # An idle provider's breaker outlives its window, its open period and a trial, then
        # goes: a provider unused that long starts closed again.
        breaker_ttl_ms=math.ceil((window + open_for + ttl + 60) * 1000),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _admission(reason: Any, wait: Any, trial: Any) -> Admission:
    match _text(reason):
        case "":
            return Admission(allowed=True, trial=_text(trial) == "1")
        case "circuit_open":
            return Admission(allowed=False, reason="circuit_open", wait=float(_text(wait)))
        case "paused":
            return Admission(allowed=False, reason="paused", wait=float(_text(wait)))
        case _:
            return Admission(allowed=False, reason="rate_limited", wait=float(_text(wait)))


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One admitted call's outcome, waiting to be counted with its turn's others."""

    provider: str
    plan: _Plan
    policy: BreakerPolicy
    failed: bool
    trial: bool
    at_once: bool


class ProviderGuard:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        specs: Mapping[str, ProviderSpec],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self._plans = {name: _plan(spec, keys) for name, spec in specs.items()}
        self._admit = redis.register_script(_ADMIT)
        self._pause = redis.register_script(_PAUSE)
        self._record = redis.register_script(_RECORD)
        self._warned: dict[str, float] = {}
        self._admissions = TurnBatch(self._admit_all)
        self._records = TurnBatch(self._record_all)

    async def admit(self, provider: str) -> Admission:
        """May `provider` be called now? Takes a rate-limit token when it may."""
        plan = self._plans.get(provider)
        if plan is None:
            return ADMITTED
        return await self._admissions.submit((provider, plan))

    async def _admit_all(self, asked: list[tuple[str, _Plan]]) -> list[Admission]:
        """One script call for a turn's admissions, each provider's keys and arguments sent
        once with how many it asks for (a chunk's sends share one provider)."""
        now = self.clock()
        by_provider: dict[str, list[int]] = {}
        for index, (name, _) in enumerate(asked):
            by_provider.setdefault(name, []).append(index)
        keys: list[str] = []
        args: list[Any] = [now]
        for indexes in by_provider.values():
            plan = asked[indexes[0]][1]
            limit = plan.limit
            keys += [plan.bucket_key, plan.breaker_key, plan.pause_key]
            args += [
                int(limit is not None),
                limit.per_second if limit else 0,
                limit.burst if limit else 0,
                int(plan.breaker is not None),
                plan.trial_ttl,
                plan.breaker_ttl_ms,
                len(indexes),
            ]
        try:
            answers = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as error:
            for provider in by_provider:
                self._warn_unreachable(provider, now, error)
            return [ADMITTED] * len(asked)
        admissions: list[Admission] = [ADMITTED] * len(asked)
        order = (index for indexes in by_provider.values() for index in indexes)
        for index, at in zip(order, range(0, len(answers), 3), strict=True):
            admissions[index] = _admission(*answers[at : at + 3])
        return admissions

    async def pause(self, provider: str, seconds: float) -> None:
        """Hold `provider` for every worker for `seconds` (at most MAX_PAUSE): it said so
        (a 429 with Retry-After or a rate-limit reset), and calling it sooner only earns
        another 429 and may lengthen the penalty."""
        plan = self._plans.get(provider)
        if plan is None or seconds <= 0:
            return
        now = self.clock()
        seconds = min(seconds, MAX_PAUSE)
        try:
            extended = await self._pause(
                keys=[plan.pause_key], args=[now + seconds, math.ceil(seconds * 1000)]
            )
        except (RedisError, OSError) as error:
            self._warn_unreachable(provider, now, error)
            return
        if extended:
            log.info("provider %r asked to wait: paused for every worker for %.1fs", provider, seconds)

    async def record(
        self, provider: str, failed: bool, *, trial: bool = False, at_once: bool = False
    ) -> None:
        """Count one admitted call's outcome; `trial` as `admit` returned it. `at_once`: the
        failure opens the breaker by itself (the provider refused our configuration: every
        call would fail the same way until an operator fixes it)."""
        plan = self._plans.get(provider)
        if plan is None or plan.breaker is None:
            return
        await self._records.submit(_Outcome(provider, plan, plan.breaker, failed, trial, at_once))

    async def _record_all(self, outcomes: list[_Outcome]) -> list[None]:
        now = self.clock()
        args: list[Any] = [now]
        for each in outcomes:
            policy = each.policy
            args += [
                int(each.failed),
                int(each.trial),
                policy.min_calls,
                policy.failure_rate,
                policy.open_for.total_seconds(),
                each.plan.buckets,
                repr(each.plan.width),
                each.plan.breaker_ttl_ms,
                int(each.at_once),
            ]
        try:
            answers = await self._record(keys=[each.plan.breaker_key for each in outcomes], args=args)
        except (RedisError, OSError) as error:
            for provider in dict.fromkeys(each.provider for each in outcomes):
                self._warn_unreachable(provider, now, error)
            return [None] * len(outcomes)
        for each, i in zip(outcomes, range(0, len(answers), 3), strict=True):
            event, calls, failures = answers[i : i + 3]
            self._log_transition(
                each.provider, each.policy, _text(event), int(_text(calls)), int(_text(failures))
            )
        return [None] * len(outcomes)

    async def state(self, provider: str) -> BreakerState:
        """The breaker's state now. Raises RedisError when Redis is unreachable: a status page
        should say the state is unknown rather than show a guess."""
        plan = self._plans.get(provider)
        if plan is None or plan.breaker is None:
            return BreakerState(provider, "closed", 0, 0)
        now = self.clock()
        raw = await self.redis.hgetall(plan.breaker_key)  # type: ignore[misc]
        fields = {_text(k): _text(v) for k, v in raw.items()}
        calls, failures = _window_totals(fields, plan, now)
        if "until" not in fields:
            return BreakerState(provider, "closed", calls, failures)
        open_until = float(fields["until"])
        if now < open_until:
            return BreakerState(provider, "open", calls, failures, open_until)
        trial_out = "trial" in fields and now < float(fields["trial"])
        return BreakerState(provider, "half_open", calls, failures, open_until, trial_out)

    def _log_transition(
        self, provider: str, policy: BreakerPolicy, event: str, calls: int, failures: int
    ) -> None:
        open_for = policy.open_for.total_seconds()
        if event == "opened":
            log.warning(
                "circuit for provider %r opened for %gs: %d of %d calls failed (%.0f%%, threshold "
                "%.0f%%) in the last %gs",
                provider,
                open_for,
                failures,
                calls,
                100 * failures / calls,
                100 * policy.failure_rate,
                policy.window.total_seconds(),
            )
        elif event == "reopened":
            log.warning(
                "circuit for provider %r re-opened for %gs: the trial call failed", provider, open_for
            )
        elif event == "closed":
            log.info(
                "circuit for provider %r closed: the trial call succeeded; counts reset (%d of %d calls "
                "in the window had failed)",
                provider,
                failures,
                calls,
            )

    def _warn_unreachable(self, provider: str, now: float, error: Exception) -> None:
        last = self._warned.get(provider)
        if last is not None and now - last < WARN_EVERY:
            return
        self._warned[provider] = now
        log.warning(
            "Redis unreachable (%s: %s): provider %r is called without its rate limit and circuit "
            "breaker (failing open) until it is back",
            type(error).__name__,
            error,
            provider,
        )


def _window_totals(fields: Mapping[str, str], plan: _Plan, now: float) -> tuple[int, int]:
    """The calls and failures still in the window at `now`: the record script's arithmetic,
    read-only (buckets it would drop on the next call are left out here)."""
    if "head" not in fields or fields.get("geometry") != plan.geometry:
        return 0, 0
    head = int(float(fields["head"]))
    bucket = math.floor(now / plan.width)
    if bucket - head >= plan.buckets:
        return 0, 0
    calls, failures = int(float(fields["calls"])), int(float(fields["failures"]))
    for b in range(head + 1, bucket + 1):
        slot = b % plan.buckets
        calls -= int(fields.get(f"c{slot}", 0))
        failures -= int(fields.get(f"f{slot}", 0))
    return calls, failures
