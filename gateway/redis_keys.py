"""Every Redis key the gateway uses, named in one place.

All keys start with the configured prefix (NOTIGATE_REDIS_PREFIX), so several gateways or
test runs can share a Redis. A user's keys carry the user id in braces (a Redis Cluster
hash tag), so the scripts that touch one user's state stay on one shard. arq's own job
keys (`arq:job:*`, `arq:in-progress:*`) are not prefixed; queues are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "notigate"

    def history(self, user_id: str) -> str:
        """Sorted set: what was committed for the user, scored by send time (ms)."""
        return f"{self.prefix}:history:{{{user_id}}}"

    def provisional(self, user_id: str) -> str:
        """Hash: the user's history entries not yet confirmed by their intent's commit, by
        delivery id: `<owner>|<ms reserved>` (see `gateway.history`)."""
        return f"{self.prefix}:provisional:{{{user_id}}}"

    def owner(self, owner_id: str) -> str:
        """String with a short TTL: the heartbeat of a process that reserves deliveries.

        The reservation script reads these beside the user's keys, so unlike the rest the
        gateway's history needs a single Redis, not a cluster (arq needs one too)."""
        return f"{self.prefix}:owner:{owner_id}"

    def quota(self, key_id: str) -> str:
        """Hash: a producer key's token bucket."""
        return f"{self.prefix}:quota:{key_id}"

    def provider_bucket(self, name: str) -> str:
        """Hash: a provider's rate-limit token bucket, shared by every worker.

        The provider name is a hash tag, so the guard's script (bucket and breaker) stays
        on one shard."""
        return f"{self.prefix}:provider:{{{name}}}:bucket"

    def breaker(self, name: str) -> str:
        """Hash: a provider's circuit breaker: open-until, the half-open trial's deadline and
        the rolling window's per-bucket call and failure counts."""
        return f"{self.prefix}:provider:{{{name}}}:breaker"

    def provider_pause(self, name: str) -> str:
        """String: until when (epoch seconds) the provider asked every worker to wait, from
        its 429's Retry-After or rate-limit reset; it expires then."""
        return f"{self.prefix}:provider:{{{name}}}:paused"

    def queue(self, name: str) -> str:
        """arq queue (sorted set of job ids) of a tier."""
        return f"{self.prefix}:queue:{name}"

    def wake(self) -> str:
        """Pub/sub channel: the name of a queue that was just given jobs, for its workers to
        wake up and take them (`gateway.queue.wakeup`)."""
        return f"{self.prefix}:wake"

    def inbox_channel(self, user_id: str) -> str:
        """Pub/sub channel: `{"user_id", "item_id"}` after an in-app item is stored, for the
        inbox's live streams (`GET /v1/inbox/stream`)."""
        return f"{self.prefix}:inbox:{{{user_id}}}"

    def epoch(self) -> str:
        """A marker whose absence means Redis lost its data (restart without persistence)."""
        return f"{self.prefix}:epoch"
