"""What the delivery side looks like right now, as JSON: `GET /v1/status` and the console.

Read from the sources `/metrics` reads, at the moment of the request: each tier's arq queue
in Redis (depth, jobs due, the age of the oldest due job) and each provider's circuit breaker
as every worker sees it (`ProviderGuard.state`: state, calls and failures in its rolling
window). Nothing is counted per process, so any API process gives the same answer.

Redis that does not answer is reported (`redis.ok = false`) with no queue or breaker
figures rather than guesses; the status route itself never fails for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.policy.compiled import CompiledPolicy
from gateway.providers.guard import ProviderGuard
from gateway.providers.spec import ProviderSpec
from gateway.redis_keys import Keys

READ_TIMEOUT = 2.0  # seconds: a status page must answer even when Redis does not


class QueueStatus(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    tiers: list[str]  # the policy's tiers that use this queue
    depth: int  # jobs in the queue: due, running or scheduled for later
    due: int  # jobs whose time has come (running ones included)
    oldest_due_age_seconds: float | None  # how long the oldest due job has been due
    next_due_in_seconds: float | None  # when the next scheduled job comes due, if none is due


class BreakerStatus(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    channel: str
    guarded: bool  # False: providers.yaml gives it no circuit breaker, so nothing is counted
    state: Literal["closed", "open", "half_open"]
    calls: int  # in the breaker's rolling window
    failures: int
    failure_rate: float | None  # failures / calls in the window; None without calls
    threshold: float | None  # the rate that opens the breaker
    min_calls: int | None
    window_seconds: float | None
    open_until: dt.datetime | None
    trial_running: bool


class RedisStatus(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    detail: str


class PolicyStatus(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    cel_runtime: str


class GatewayStatus(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    redis: RedisStatus
    policy: PolicyStatus
    queues: list[QueueStatus]
    providers: list[BreakerStatus]


async def gateway_status(
    redis: Redis,
    keys: Keys,
    policy: CompiledPolicy,
    specs: Mapping[str, ProviderSpec],
    now: dt.datetime,
) -> GatewayStatus:
    policy_status = PolicyStatus(version=policy.version, cel_runtime=policy.runtime)
    try:
        queues, providers = await asyncio.wait_for(
            asyncio.gather(queue_status(redis, keys, policy, now), breaker_status(redis, keys, specs, now)),
            READ_TIMEOUT,
        )
    except TimeoutError:
        return GatewayStatus(
            at=now,
            redis=RedisStatus(ok=False, detail=f"Redis did not answer within {READ_TIMEOUT:g}s"),
            policy=policy_status,
            queues=[],
            providers=[],
        )
    except (RedisError, OSError) as exc:
        return GatewayStatus(
            at=now,
            redis=RedisStatus(ok=False, detail=f"Redis unreachable ({type(exc).__name__})"),
            policy=policy_status,
            queues=[],
            providers=[],
        )
    return GatewayStatus(
        at=now,
        redis=RedisStatus(ok=True, detail="ok"),
        policy=policy_status,
        queues=queues,
        providers=providers,
    )


async def queue_status(
    redis: Redis, keys: Keys, policy: CompiledPolicy, now: dt.datetime
) -> list[QueueStatus]:
    """Per queue, in one pipelined round trip. arq scores a job by when it is due (epoch ms)."""
    tiers: dict[str, list[str]] = {}
    for tier in sorted(policy.tiers.values(), key=lambda t: t.latency_target):
        tiers.setdefault(tier.queue, []).append(tier.name)
    now_ms = now.timestamp() * 1000
    pipe: Any
    # As a context, so a caller cancelled mid-answer (a client gone) gives the connection back.
    async with redis.pipeline(transaction=False) as pipe:
        for queue in tiers:
            key = keys.queue(queue)
            pipe.zcard(key)
            pipe.zcount(key, "-inf", now_ms)
            pipe.zrange(key, 0, 0, withscores=True)
        answers = await pipe.execute()
    found = []
    for i, (queue, names) in enumerate(tiers.items()):
        depth, due, first = answers[3 * i : 3 * i + 3]
        oldest = float(first[0][1]) if first else None
        found.append(
            QueueStatus(
                queue=queue,
                tiers=names,
                depth=int(depth),
                due=int(due),
                oldest_due_age_seconds=_seconds(now_ms - oldest) if oldest is not None and due else None,
                next_due_in_seconds=_seconds(oldest - now_ms) if oldest is not None and not due else None,
            )
        )
    return found


async def breaker_status(
    redis: Redis, keys: Keys, specs: Mapping[str, ProviderSpec], now: dt.datetime
) -> list[BreakerStatus]:
    guard = ProviderGuard(redis, keys, specs, clock=now.timestamp)
    found = []
    for name, spec in specs.items():
        state = await guard.state(name)
        policy = spec.breaker
        found.append(
            BreakerStatus(
                provider=name,
                channel=spec.channel,
                guarded=policy is not None,
                state=state.state,
                calls=state.calls,
                failures=state.failures,
                failure_rate=state.failures / state.calls if state.calls else None,
                threshold=policy.failure_rate if policy else None,
                min_calls=policy.min_calls if policy else None,
                window_seconds=policy.window.total_seconds() if policy else None,
                open_until=dt.datetime.fromtimestamp(state.open_until, dt.UTC) if state.open_until else None,
                trial_running=state.trial_out,
            )
        )
    return found


def _seconds(ms: float) -> float:
    return round(max(ms, 0.0) / 1000, 3)


def provider_specs(raw: Mapping[str, Any]) -> dict[str, ProviderSpec]:
    """The providers of a parsed providers.yaml, without their credentials (none are needed
    to read a breaker)."""
    return {name: ProviderSpec.parse(name, spec, {}) for name, spec in raw.get("providers", {}).items()}
