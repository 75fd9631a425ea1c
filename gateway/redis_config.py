"""What Redis keeps across a restart, checked when a process starts.

Redis holds copies and counters, never the only record of accepted work (the outbox in the
database is the truth, see rule 6 of docs/architecture.md), but what it loses still
changes behaviour: after a restart without persistence the delivery history behind caps,
dedup and batch windows starts empty, and evicted keys do the same piecemeal. So at start
the API and each worker read Redis's settings and warn, once, about what would be lost.
A managed Redis that refuses `CONFIG GET` is reported as unchecked, not as unsafe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger("gateway.redis")

RECOMMENDED = "appendonly yes, appendfsync everysec, maxmemory-policy noeviction"
_READ = ("appendonly", "save", "maxmemory", "maxmemory-policy")


def assess(config: Mapping[str, str]) -> list[str]:
    """The ways this Redis configuration would lose what the gateway keeps there."""
    problems = []
    if config.get("appendonly", "no") != "yes":
        snapshots = (
            "RDB snapshots only, losing what came after the last one"
            if config.get("save")
            else "no RDB snapshots either"
        )
        problems.append(
            f"Redis keeps no append-only file (appendonly no; {snapshots}): after a restart the "
            "delivery history behind caps, dedup and batch windows starts empty (queues are rebuilt "
            "from the database's outbox)"
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction" and config.get("maxmemory", "0") != "0":
        problems.append(
            f"Redis may evict keys when full (maxmemory-policy {policy}, maxmemory {config['maxmemory']}): "
            "evicted history entries under-count caps and dedup, evicted job keys wait for the relay"
        )
    return problems


async def warn_if_unsafe(redis: Redis) -> list[str]:
    """Log what this Redis would lose (one WARNING each); returns the problems found."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for name in _READ:
                pipe.config_get(name)
            answers = await pipe.execute()
    except ResponseError as exc:
        log.info("Redis refused CONFIG GET (%s): check its persistence yourself (%s)", exc, RECOMMENDED)
        return []
    except (RedisError, OSError) as exc:
        log.info("Redis not reachable at start (%s): its persistence is not checked", type(exc).__name__)
        return []
    config = {_text(k): _text(v) for answer in answers for k, v in answer.items()}
    problems = assess(config)
    for problem in problems:
        log.warning("%s. Recommended for production: %s", problem, RECOMMENDED)
    return problems


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
