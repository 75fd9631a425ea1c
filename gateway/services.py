"""The gateway's long-lived parts, built once per process from the settings.

The API and the worker build the same container, so a stored user, a Redis key or a
queue job means the same thing on both sides. Nothing here is a global: tests build a
container per test with their own database, Redis and key prefix.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from gateway.admission import Admission, Limits
from gateway.decisions import utcnow
from gateway.history import RedisHistory
from gateway.intake import Intake
from gateway.policy.checker import load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.queue.dispatch import Dispatcher
from gateway.queue.enqueue import Enqueuer
from gateway.quota import Quota
from gateway.redis_config import warn_if_unsafe
from gateway.redis_keys import Keys
from gateway.redis_packing import PackedConnection
from gateway.reload import LiveBundle
from gateway.settings import Settings
from gateway.store.bulk_requests import BulkStore
from gateway.store.database import Database, Lane
from gateway.store.deliveries import DeliveryStore
from gateway.store.intake import IntakeWriter
from gateway.store.keys import ApiKeyStore
from gateway.store.recipients import SqlRecipients

log = logging.getLogger("gateway.services")


def connect_redis(url: str) -> Redis:
    """Short timeouts: a Redis that is down must be noticed in a second, not hang intake.
    Commands are packed by hiredis (`gateway.redis_packing`)."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        connection_class=PackedConnection,
    )
    return client


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        policy: CompiledPolicy | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        intake_lane: Lane = "normal",  # a worker's intake (bulk expansion) writes after its deliveries'
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._closed = False
        # Names this process wherever it holds something: delivery leases, claims on late
        # decisions, provisional history reservations.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.bundle = LiveBundle(
            policy or load_policy(settings.bundle_paths(), runtime=settings.cel_runtime),
            settings.bundle_paths,
            runtime=settings.cel_runtime,
            clock=clock,
        )
        self.database = Database(settings.database_url)
        self.redis = connect_redis(settings.redis_url)
        self.keys = Keys(settings.redis_prefix)
        self.recipients = SqlRecipients(self.database)
        self.enqueuer = Enqueuer(self.redis, self.keys)
        self.dispatcher = Dispatcher(self.database, self.enqueuer, clock)
        self.writer = IntakeWriter(
            self.database, idempotency_window=self._idempotency_window, clock=clock, lane=intake_lane
        )
        self.history = RedisHistory(
            self.redis,
            self.keys,
            self.policy.history_window,
            owner=self.owner,
            committed=self.writer.committed,
        )
        self.bundle.listeners.append(self._policy_changed)
        self.deliveries = DeliveryStore(self.database)
        self.api_keys = ApiKeyStore(self.database)
        self.quota = Quota(self.redis, self.keys, clock=lambda: self.clock().timestamp())
        self.intake = Intake(
            policy=self.current_policy,
            database=self.database,
            recipients=self.recipients,
            history=self.history,
            quota=self.quota,
            writer=self.writer,
            dispatcher=self.dispatcher,
            clock=clock,
            owner=self.owner,
        )

        self.bulk = BulkStore(self.database)
        self.admission = Admission(
            self.redis,
            self.keys,
            self.bulk,
            queues=lambda: [tier.queue for tier in self.current_policy().tiers.values()],
            limits=Limits(
                backlog=settings.shed_backlog, wait=settings.shed_wait, unexpanded=settings.shed_unexpanded
            ),
            clock=clock,
        )

    @property
    def policy(self) -> CompiledPolicy:
        """The bundle in force now; a reload may replace it between two reads."""
        return self.bundle.policy

    def current_policy(self) -> CompiledPolicy:
        return self.bundle.policy

    def _policy_changed(self, old: CompiledPolicy, new: CompiledPolicy) -> None:
        self.history.window = new.history_window
        if (queues := {t.queue for t in new.tiers.values()}) != {t.queue for t in old.tiers.values()}:
            log.warning(
                "policy %s uses queues %s: start a worker for any queue none serves yet",
                new.version,
                ", ".join(sorted(queues)),
            )

    def _idempotency_window(self) -> dt.timedelta:
        return self.policy.defaults.idempotency_window

    async def start(self) -> None:
        await warn_if_unsafe(self.redis)
        await self.writer.start()
        await self.dispatcher.start()
        await self.history.start()
        await self.intake.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.intake.stop()
        await self.writer.stop()
        await self.history.stop()  # after the last commit: its confirmations go out first
        await self.dispatcher.stop()
        await self.redis.aclose()
        await self.database.dispose()
