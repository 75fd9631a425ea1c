"""Put jobs on arq queues, many per round trip.

arq's own `enqueue_job` runs a WATCH/MULTI transaction per job (~1,400 jobs/s); the relay
and the intake path need far more. One Lua call here writes a batch of jobs in arq's own
format (`arq.jobs.serialize_job`, with our JSON serializer) to arq's own keys, skipping
any job id that already exists or already finished: enqueueing the same outbox row twice
is harmless, which is what lets the relay retry freely. The same call publishes each queue
it filled on the wake-up channel (`gateway.queue.wakeup`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from gateway.redis_keys import Keys
from gateway.store.intake import NewJob

DELIVER = "deliver"

_ENQUEUE = """
local jobs = cjson.decode(ARGV[1])
local taken = {}
local woken = {}
for i, job in ipairs(jobs) do
  if redis.call('EXISTS', ARGV[2] .. job.id) == 0 and redis.call('EXISTS', ARGV[3] .. job.id) == 0 then
    redis.call('PSETEX', ARGV[2] .. job.id, job.ttl, job.body)
    redis.call('ZADD', job.queue, job.score, job.id)
    taken[i] = 1
    if not woken[job.name] then
      woken[job.name] = true
      redis.call('PUBLISH', ARGV[4], job.name)
    end
  else
    taken[i] = 0
  end
end
return taken
"""


def serialize(value: dict[str, Any]) -> bytes:
    return msgspec.json.encode(value, enc_hook=_describe)


def _describe(value: Any) -> str:
    """What JSON cannot hold, described: arq stores a failed job's exception as its result, and a
    result that cannot be stored would hide that the job ended (see `Enqueuer.whereabouts`)."""
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


def deserialize(raw: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(raw)
    return decoded


class Enqueuer:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(_ENQUEUE)

    async def push(self, jobs: Sequence[NewJob]) -> list[str]:
        """Enqueue; returns the ids now on a queue (newly, or because they already were).

        Scores are on arq's time base, the wall clock: a job due in the past runs now.
        """
        if not jobs:
            return []
        now_ms = int(time.time() * 1000)
        payload = []
        for job in jobs:
            score = max(now_ms, int(job.run_at.timestamp() * 1000))
            body = serialize_job(DELIVER, (job.id, job.deliveries), {}, None, now_ms, serializer=serialize)
            payload.append(
                {
                    "id": job.id,
                    "queue": self.keys.queue(job.queue),
                    "name": job.queue,
                    "score": score,
                    "ttl": score - now_ms + expires_extra_ms,
                    "body": body.decode(),
                }
            )
        await self._script(
            args=[msgspec.json.encode(payload), job_key_prefix, result_key_prefix, self.keys.wake()]
        )
        return [job.id for job in jobs]

    async def whereabouts(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Of these jobs, (ended, gone): arq finished the `ended` ones, yet their outbox rows are
        still there, so they failed or timed out before their deliveries were done (a job that
        completes deletes its row before it returns); Redis holds nothing of the `gone` ones
        (lost in a restart, or not yet pushed)."""
        if not job_ids:
            return [], []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(job_key_prefix + job_id)
                pipe.exists(result_key_prefix + job_id)
            found = await pipe.execute()
        ended, gone = [], []
        for n, job_id in enumerate(job_ids):
            queued, result = found[2 * n], found[2 * n + 1]
            if result and not queued:
                ended.append(job_id)
            elif not queued and not result:
                gone.append(job_id)
        return ended, gone
