"""ProviderGuard against a real Redis: rate limits and circuit breakers shared by workers.

Every test has its own key prefix and a pinned clock, so nothing sleeps: the scripts take
the time from the caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.providers.guard import MAX_PAUSE, Admission, ProviderGuard, trial_ttl
from gateway.providers.spec import BreakerPolicy, ProviderSpec, RateLimit
from gateway.redis_keys import Keys
from gateway.redis_server import RedisServer, free_port

T0 = 1_700_000_000.0
OPEN_FOR = 30.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(
    name: str = "sms",
    *,
    rate: int | None = None,
    per: float = 1.0,
    burst: int | None = None,
    failure_rate: float = 0.5,
    min_calls: int = 4,
    window: float = 60.0,
    breaker: bool = False,
) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        channel="sms",
        adapter="webhook",
        cost=0.0,
        timeout=5.0,
        rate_limit=RateLimit(rate, dt.timedelta(seconds=per), burst if burst is not None else rate)
        if rate is not None
        else None,
        breaker=BreakerPolicy(
            failure_rate=failure_rate,
            min_calls=min_calls,
            window=dt.timedelta(seconds=window),
            open_for=dt.timedelta(seconds=OPEN_FOR),
        )
        if breaker
        else None,
    )


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def other_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A second worker's own connection."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def guards(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock, *specs: ProviderSpec
) -> tuple[ProviderGuard, ProviderGuard]:
    table = {s.name: s for s in specs}
    return ProviderGuard(redis, keys, table, clock), ProviderGuard(other_redis, keys, table, clock)


async def fail(guard: ProviderGuard, times: int, provider: str = "sms") -> None:
    for _ in range(times):
        await guard.record(provider, failed=True)


async def open_breaker(guard: ProviderGuard) -> None:
    await fail(guard, 4)
    assert (await guard.admit("sms")).reason == "circuit_open"


# --- rate limit ---------------------------------------------------------------------------


async def test_the_bucket_admits_burst_then_refuses_with_the_wait_and_refills(
    redis: Redis, keys: Keys, clock: Clock
) -> None:
    # 4 tokens/s; steps that are exact in binary, so the arithmetic at epoch scale is too.
    guard = ProviderGuard(redis, keys, {"sms": spec(rate=8, per=2.0, burst=3)}, clock)
    admitted = [await guard.admit("sms") for _ in range(3)]
    refused = await guard.admit("sms")
    assert admitted == [Admission(allowed=True)] * 3
    assert (refused.allowed, refused.reason, refused.trial) == (False, "rate_limited", False)
    assert refused.wait == 0.25
    clock.advance(0.125)
    assert (await guard.admit("sms")).wait == 0.125
    clock.advance(0.125)
    assert (await guard.admit("sms")).allowed  # refilled at rate/per
    assert not (await guard.admit("sms")).allowed
    clock.advance(60)  # a long pause refills to the burst, not beyond
    assert [(await guard.admit("sms")).allowed for _ in range(4)] == [True, True, True, False]


async def test_two_workers_share_one_bucket(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(rate=1, burst=4))
    taken = [(await worker.admit("sms")).allowed for worker in (first, second, first, second)]
    assert taken == [True] * 4
    assert (await first.admit("sms")).reason == "rate_limited"
    refused = await second.admit("sms")
    assert refused.reason == "rate_limited" and refused.wait == pytest.approx(1.0)


# --- circuit breaker ----------------------------------------------------------------------


async def test_the_breaker_stays_closed_below_min_calls_even_at_every_call_failing(
    redis: Redis, keys: Keys, clock: Clock
) -> None:
    guard = ProviderGuard(redis, keys, {"sms": spec(breaker=True, min_calls=4)}, clock)
    await fail(guard, 3)
    assert (await guard.admit("sms")).allowed
    state = await guard.state("sms")
    assert (state.state, state.calls, state.failures) == ("closed", 3, 3)


async def test_the_breaker_opens_at_the_threshold_and_every_worker_refuses(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(breaker=True, min_calls=4, failure_rate=0.5))
    await first.record("sms", failed=False)
    await second.record("sms", failed=False)
    await first.record("sms", failed=True)
    assert (await second.admit("sms")).allowed  # 1 of 3 failed, under min_calls anyway
    with caplog.at_level(logging.INFO, logger="gateway.providers.guard"):
        await second.record("sms", failed=True)  # 2 of 4: at the rate, at min_calls
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "'sms' opened for 30s: 2 of 4 calls failed (50%" in caplog.text
    clock.advance(10)
    refusals = [await first.admit("sms"), await second.admit("sms")]
    assert refusals == [Admission(allowed=False, reason="circuit_open", wait=20.0)] * 2
    state = await first.state("sms")
    assert (state.state, state.calls, state.failures, state.open_until) == ("open", 4, 2, T0 + OPEN_FOR)


async def test_after_open_for_exactly_one_concurrent_caller_gets_the_trial(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(breaker=True))
    await open_breaker(first)
    clock.advance(OPEN_FOR)
    answers = await asyncio.gather(*(g.admit("sms") for _ in range(8) for g in (first, second)))
    trials = [a for a in answers if a.allowed]
    assert trials == [Admission(allowed=True, trial=True)]
    assert {(a.reason, a.wait) for a in answers if not a.allowed} == {("circuit_open", trial_ttl(spec()))}
    state = await second.state("sms")
    assert (state.state, state.trial_out) == ("half_open", True)


async def test_a_successful_trial_closes_the_breaker(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(breaker=True))
    await open_breaker(first)
    clock.advance(OPEN_FOR)
    admission = await second.admit("sms")
    with caplog.at_level(logging.INFO, logger="gateway.providers.guard"):
        await second.record("sms", failed=False, trial=admission.trial)
    assert "'sms' closed: the trial call succeeded" in caplog.text
    assert [await g.admit("sms") for g in (first, second, first)] == [Admission(allowed=True)] * 3
    state = await first.state("sms")
    assert (state.state, state.calls, state.failures, state.open_until) == ("closed", 0, 0, None)
    await fail(first, 3)  # counts were reset: three failures are under min_calls again
    assert (await second.admit("sms")).allowed


async def test_a_failed_trial_reopens_the_breaker(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(breaker=True))
    await open_breaker(first)
    clock.advance(OPEN_FOR + 5)
    admission = await first.admit("sms")
    assert admission.trial
    with caplog.at_level(logging.WARNING, logger="gateway.providers.guard"):
        await first.record("sms", failed=True, trial=True)
    assert "'sms' re-opened for 30s: the trial call failed" in caplog.text
    assert await second.admit("sms") == Admission(allowed=False, reason="circuit_open", wait=OPEN_FOR)
    clock.advance(OPEN_FOR)
    assert (await second.admit("sms")).trial  # half-open again: a new trial


async def test_a_trial_whose_worker_never_records_expires_and_another_is_handed_out(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock
) -> None:
    first, second = guards(redis, other_redis, keys, clock, spec(breaker=True))
    await open_breaker(first)
    clock.advance(OPEN_FOR)
    assert (await first.admit("sms")).trial  # and this worker dies
    clock.advance(trial_ttl(spec()) - 0.5)
    assert await second.admit("sms") == Admission(allowed=False, reason="circuit_open", wait=0.5)
    clock.advance(0.5)
    assert await second.admit("sms") == Admission(allowed=True, trial=True)
    assert not (await first.admit("sms")).allowed


async def test_old_failures_fall_out_of_the_window(redis: Redis, keys: Keys, clock: Clock) -> None:
    guard = ProviderGuard(redis, keys, {"sms": spec(breaker=True, min_calls=4, window=60)}, clock)
    await fail(guard, 2)
    clock.advance(30)
    await fail(guard, 1)
    assert ((await guard.state("sms")).calls, (await guard.state("sms")).failures) == (3, 3)
    clock.advance(31)  # the first two left the window, the third has not
    assert ((await guard.state("sms")).calls, (await guard.state("sms")).failures) == (1, 1)
    await fail(guard, 2)
    assert (await guard.admit("sms")).allowed  # 3 in the window, under min_calls
    clock.advance(60)  # everything left: the ring starts over
    assert (await guard.state("sms")).calls == 0
    await fail(guard, 3)
    assert (await guard.admit("sms")).allowed
    await fail(guard, 1)
    assert (await guard.admit("sms")).reason == "circuit_open"


async def test_a_refusal_takes_neither_a_token_nor_the_trial(redis: Redis, keys: Keys, clock: Clock) -> None:
    # One token an hour: nothing refills while the test runs.
    guard = ProviderGuard(redis, keys, {"sms": spec(rate=1, per=3600, burst=1, breaker=True)}, clock)
    await open_breaker(guard)
    for _ in range(5):
        assert (await guard.admit("sms")).reason == "circuit_open"
    clock.advance(OPEN_FOR)
    assert (await guard.admit("sms")).trial  # the one token was still there
    await guard.record("sms", failed=True, trial=True)
    clock.advance(OPEN_FOR)
    refused = await guard.admit("sms")
    assert (refused.reason, refused.trial) == ("rate_limited", False)
    state = await guard.state("sms")
    assert (state.state, state.trial_out) == ("half_open", False)  # no trial handed out and lost


# --- no limits, and Redis down ------------------------------------------------------------


async def test_a_provider_not_configured_makes_no_redis_call(keys: Keys, clock: Clock) -> None:
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        guard = ProviderGuard(nowhere, keys, {"console": spec("console")}, clock)
        assert await guard.admit("not-configured") == Admission(allowed=True)
        await guard.record("console", failed=True)  # no breaker: nothing to count
        await guard.pause("not-configured", 30)
        assert (await guard.state("console")).state == "closed"
    finally:
        await nowhere.aclose()


# --- a provider's own "wait" (shared backoff) ---------------------------------------------


async def test_a_pause_refuses_every_worker_until_it_ends_and_a_later_one_wins(
    redis: Redis, other_redis: Redis, keys: Keys, clock: Clock
) -> None:
    """One worker's 429 with a reset 40 s ahead keeps every worker off the provider."""
    first, second = guards(redis, other_redis, keys, clock, spec(rate=1, burst=1, breaker=True), spec("mail"))
    await first.pause("sms", 40)
    assert await second.admit("sms") == Admission(allowed=False, reason="paused", wait=40.0)
    await second.pause("sms", 10)  # an earlier end does not shorten it
    clock.advance(20)
    assert await first.admit("sms") == Admission(allowed=False, reason="paused", wait=20.0)
    assert (await first.admit("mail")).allowed  # a provider without limits is paused alone
    await first.pause("mail", 5)
    assert (await second.admit("mail")).reason == "paused"
    clock.advance(20)
    # The refusals took no token: the bucket's one token is there when the pause ends.
    assert (await second.admit("sms")).allowed
    assert (await first.admit("sms")).reason == "rate_limited"
    assert (await first.state("sms")).state == "closed"


async def test_a_pause_is_capped_at_an_hour(redis: Redis, keys: Keys, clock: Clock) -> None:
    guard = ProviderGuard(redis, keys, {"sms": spec()}, clock)
    await guard.pause("sms", 86_400)  # a daily quota's reset: the breaker and retries handle that
    assert await guard.admit("sms") == Admission(allowed=False, reason="paused", wait=MAX_PAUSE)


async def test_a_configuration_failure_opens_the_breaker_at_once(
    redis: Redis, keys: Keys, clock: Clock
) -> None:
    guard = ProviderGuard(redis, keys, {"sms": spec(breaker=True, min_calls=20)}, clock)
    await guard.record("sms", failed=False)
    await guard.record("sms", failed=False, at_once=True)  # a success never opens it
    assert (await guard.state("sms")).state == "closed"
    await guard.record("sms", failed=True, at_once=True)
    assert await guard.admit("sms") == Admission(allowed=False, reason="circuit_open", wait=OPEN_FOR)


async def test_an_unreachable_redis_fails_open_and_warns_once_a_minute(
    keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0)
    specs = {"sms": spec(rate=1, burst=1, breaker=True), "mail": spec("mail", rate=1, burst=1)}
    try:
        guard = ProviderGuard(nowhere, keys, specs, clock)
        with caplog.at_level(logging.WARNING, logger="gateway.providers.guard"):
            answers = [await guard.admit(name) for name in ("sms", "sms", "mail", "sms")]
            await guard.record("sms", failed=True)
            clock.advance(60)
            answers.append(await guard.admit("sms"))
    finally:
        await nowhere.aclose()
    assert answers == [Admission(allowed=True)] * 5
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned  # sms, mail, sms a minute later
    assert all("failing open" in w for w in warned)
    assert ["'mail'" in w for w in warned] == [False, True, False]


# --- one script call per event-loop turn --------------------------------------------------


async def _scripts_run(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def test_admissions_of_one_turn_are_one_script_call_taken_in_order(
    redis: Redis, keys: Keys, clock: Clock
) -> None:
    """A worker's deliveries released together admit together: one round trip, and the
    same answers as one at a time (the first three of five get the burst's tokens)."""
    guard = ProviderGuard(redis, keys, {"sms": spec(rate=1, burst=3), "push": spec("push")}, clock)
    before = await _scripts_run(redis)
    answers = await asyncio.gather(*(guard.admit(p) for p in ("sms", "push", "sms", "sms", "sms", "sms")))
    assert await _scripts_run(redis) - before == 1
    assert [a.allowed for a in answers] == [True, True, True, True, False, False]
    assert {(a.reason, a.wait) for a in answers if not a.allowed} == {("rate_limited", 1.0)}


async def test_a_turn_asks_once_per_provider_and_answers_each_admission_in_its_place(
    redis: Redis, keys: Keys, clock: Clock
) -> None:
    """A chunk's sends share a provider: its keys go once with a count, and each caller still
    gets its own answer: a paused provider's every admission says so; a limited provider's
    tokens go to its callers in the order they asked."""
    guard = ProviderGuard(redis, keys, {"sms": spec(rate=1, burst=2), "push": spec("push")}, clock)
    await guard.pause("push", 12)
    asked = ("push", "sms", "push", "push", "sms", "sms", "push")
    answers = await asyncio.gather(*(guard.admit(p) for p in asked))
    assert [(p, a.allowed, a.reason) for p, a in zip(asked, answers, strict=True)] == [
        ("push", False, "paused"),
        ("sms", True, None),
        ("push", False, "paused"),
        ("push", False, "paused"),
        ("sms", True, None),
        ("sms", False, "rate_limited"),
        ("push", False, "paused"),
    ]
    assert {a.wait for p, a in zip(asked, answers, strict=True) if p == "push"} == {12.0}


async def test_outcomes_of_one_turn_are_counted_in_one_call_and_open_the_breaker_once(
    redis: Redis, keys: Keys, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = ProviderGuard(redis, keys, {"sms": spec(breaker=True, min_calls=4)}, clock)
    before = await _scripts_run(redis)
    with caplog.at_level(logging.INFO, logger="gateway.providers.guard"):
        await asyncio.gather(*(guard.record("sms", failed=f) for f in (False, True, True, True, True)))
    assert await _scripts_run(redis) - before == 1
    assert [r.getMessage() for r in caplog.records] == [
        "circuit for provider 'sms' opened for 30s: 3 of 4 calls failed (75%, threshold 50%) in the last 60s"
    ]
    state = await guard.state("sms")
    assert (state.state, state.calls, state.failures) == ("open", 5, 4)
