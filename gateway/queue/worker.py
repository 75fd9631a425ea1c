"""`notigate worker`: arq workers for the tiers' queues, plus the relay and late decisions.

One arq `Worker` per queue, so a bulk campaign queued behind thousands of jobs never
delays a critical one: each queue has its own polling loop and its own concurrency. Each
loop is kept running through Redis outages by its `QueueConsumer`; any other part that
ends on its own (a bug) ends the process with exit code 1, so a supervisor restarts it
rather than leave a worker up that no longer consumes. On SIGTERM or Ctrl-C the workers
stop taking jobs, let the running ones finish (up to the job timeout), then close; a job
cut short is re-run by arq and its deliveries reclaimed once their lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

from arq.connections import RedisSettings
from arq.typing import StartupShutdown
from arq.worker import Worker, func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from gateway import heap
from gateway.delivery.pipeline import DeliveryPipeline, Renderer
from gateway.errors import ConfigError, Unavailable
from gateway.fanout import BulkFanout
from gateway.metrics import Scrape
from gateway.policy.compiled import CompiledPolicy
from gateway.providers.base import AdapterDeps
from gateway.providers.guard import ProviderGuard
from gateway.providers.registry import ProviderRegistry
from gateway.queue.consumer import QueueConsumer
from gateway.queue.enqueue import DELIVER, deserialize, serialize
from gateway.queue.relay import Relay
from gateway.queue.wakeup import WakeableWorker, Wakeups
from gateway.reload import ReloadRefused
from gateway.scheduler import Scheduler
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.group_commit import GroupCommit
from gateway.store.outcomes import Applied, Outcome
from gateway.store.schedules import ScheduleStore
from gateway.templating.render import TemplateRenderer
from gateway.tracking.unsubscribe import UnsubscribeLinks

log = logging.getLogger("gateway.worker")
# How long an idle queue's loop rests before looking again by itself: wake-ups (published
# with every job queued) end its rest at once, so this only bounds a wake-up lost while the
# subscription reconnects, and costs an idle worker one look per queue per interval.
IDLE_POLL = 1.0


async def deliver(ctx: dict[str, Any], job_id: str, delivery_ids: list[str]) -> int:
    """The one arq job function: deliver the deliveries of one outbox job."""
    pipeline: DeliveryPipeline = ctx["pipeline"]
    return await pipeline.run(job_id, delivery_ids, lane=ctx["queue"])


class WorkerProcess:
    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str] | None = None,
        *,
        relay: bool = True,
        renderer: Renderer | None = None,
        services: Services | None = None,
        registry: ProviderRegistry | None = None,
        idle_poll: float = IDLE_POLL,
        live: bool = False,
    ) -> None:
        self.settings = settings
        self.live = live  # reload the bundle on file changes and SIGHUP (`notigate worker`)
        self.idle_poll = idle_poll
        self.services = services or Services(settings, intake_lane="background")
        policy = self.services.policy
        self.queues = list(queues) if queues else sorted({t.queue for t in policy.tiers.values()})
        unknown = set(self.queues) - {t.queue for t in policy.tiers.values()}
        if unknown:
            raise ConfigError(
                f"unknown queue {sorted(unknown)[0]!r}; the policy's tiers use "
                f"{', '.join(sorted({t.queue for t in policy.tiers.values()}))}"
            )
        self.with_relay = relay
        self.renderer = renderer or TemplateRenderer(
            self.services.current_policy, UnsubscribeLinks.from_settings(settings)
        )
        self.owner = self.services.owner
        self.stop = asyncio.Event()
        self.consumers: list[QueueConsumer] = []
        self.outcomes: GroupCommit[Outcome, Applied] | None = None
        self.registry: ProviderRegistry | None = registry
        self.pipeline: DeliveryPipeline | None = None
        self.metrics_server: tuple[Any, Any, Scrape] | None = None  # (server, thread, collector)
        self._retired: list[asyncio.Task[None]] = []  # provider registries a reload replaced

    async def run(self) -> int:
        """Serve until stopped; returns the process's exit code (0 after a requested stop)."""
        services = self.services
        await _require_current_schema(services)
        if self.settings.worker_metrics_port is not None:
            self._serve_metrics(self.settings.worker_metrics_port)
        if self.registry is None:
            self.registry = ProviderRegistry.load(
                self.settings.bundle_paths().providers,
                self.settings.provider_profile,
                deps=AdapterDeps(database=services.database, redis=services.redis, keys=services.keys),
            )
        self.outcomes = GroupCommit(
            services.database, services.deliveries.apply, clock=services.clock, name="outcomes"
        )
        await services.start()
        await self.outcomes.start()
        pipeline = DeliveryPipeline(
            store=services.deliveries,
            recipients=services.recipients,
            registry=self.registry,
            policy=services.current_policy,
            outcomes=self.outcomes,
            dispatcher=services.dispatcher,
            renderer=self.renderer,
            clock=services.clock,
            owner=self.owner,
            lease=dt.timedelta(seconds=self.settings.job_timeout),
            concurrency=self.settings.worker_concurrency,
            guard=ProviderGuard(services.redis, services.keys, self.registry.specs),
        )
        await pipeline.start()
        self.pipeline = pipeline
        if self.live:
            services.bundle.preparers.append(self._providers_for)
            services.bundle.start(self.settings.policy_reload)
        redis_settings = RedisSettings.from_dsn(self.settings.redis_url)
        wakes = {queue: asyncio.Event() for queue in self.queues}
        self.consumers = [
            QueueConsumer(
                queue, functools.partial(self._arq_worker, queue, redis_settings, wakes[queue]), self.stop
            )
            for queue in self.queues
        ]
        tasks = [asyncio.create_task(c.run(), name=f"consume-{c.queue}") for c in self.consumers]
        wakeups = Wakeups(services.redis, services.keys, wakes)
        tasks.append(asyncio.create_task(wakeups.run(self.stop), name="wake-ups"))
        if self.with_relay:
            relay = Relay(
                services.database,
                services.redis,
                services.keys,
                services.enqueuer,
                services.clock,
                reconcile_every=self.settings.relay_reconcile,
            )
            tasks.append(asyncio.create_task(relay.run(self.stop), name="relay"))
            tasks.append(asyncio.create_task(self._decide_late(), name="late-decisions"))
            fanout = BulkFanout(
                store=services.bulk,
                intake=services.intake,
                redis=services.redis,
                keys=services.keys,
                queues=lambda: [tier.queue for tier in services.current_policy().tiers.values()],
                owner=self.owner,
                clock=services.clock,
                lease=dt.timedelta(seconds=self.settings.job_timeout),
                expand_backlog=self.settings.expand_backlog,
            )
            tasks.append(asyncio.create_task(fanout.run(self.stop), name="bulk-fanout"))
            if self.settings.scheduler_interval > 0:
                scheduler = Scheduler(
                    policy=services.current_policy,
                    store=ScheduleStore(services.database),
                    recipients=services.recipients,
                    intake=services.intake,
                    clock=services.clock,
                    owner=self.owner,
                    interval=self.settings.scheduler_interval,
                )
                tasks.append(asyncio.create_task(scheduler.run(self.stop), name="scheduler"))
        log.info(
            "worker %s serving queues %s with providers %s; %s",
            self.owner,
            ", ".join(self.queues),
            ", ".join(sorted(self.registry.adapters)) or "none",
            self.settings.describe(),
        )
        if self.live:
            heap.settle()
        try:
            return await self._supervise(tasks)
        finally:
            await self._shutdown(tasks)

    def _arq_worker(
        self, queue: str, redis_settings: RedisSettings, wake: asyncio.Event, on_startup: StartupShutdown
    ) -> Worker:
        worker = WakeableWorker(
            wake=wake,
            idle=self.idle_poll,
            functions=[func(deliver, name=DELIVER, timeout=self.settings.job_timeout)],
            queue_name=self.services.keys.queue(queue),
            redis_settings=redis_settings,
            max_jobs=self.settings.worker_concurrency,
            job_timeout=self.settings.job_timeout,
            keep_result=60,
            handle_signals=False,
            job_serializer=serialize,
            job_deserializer=deserialize,
            ctx={"pipeline": self.pipeline, "queue": queue},
            log_results=False,
            on_startup=on_startup,
        )
        # arq locks a running job for its timeout plus ten seconds, so the job of a worker
        # that died waits that long before any other worker may run it. Exactly-once does
        # not rest on that lock but on the delivery claims and their lease (= job timeout),
        # so one second past the lease is enough: recovery in ~job timeout, not +10 s.
        worker.in_progress_timeout_s = self.settings.job_timeout + 1
        return worker

    async def _supervise(self, tasks: list[asyncio.Task[Any]]) -> int:
        """Wait for a requested stop; a part that ends before it (a bug, not a Redis outage,
        which the parts ride out themselves) ends the process with 1, for its supervisor
        to restart: a worker never stays up without consuming."""
        stopped = asyncio.create_task(self.stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self.stop.is_set():
            return 0
        for task in done:
            problem = task.exception()
            log.critical(
                "worker %s: %s ended unexpectedly (%s); stopping with exit code 1",
                self.owner,
                task.get_name(),
                f"{type(problem).__name__}: {problem}" if problem is not None else "it returned",
                exc_info=problem,
            )
        return 1

    def _serve_metrics(self, port: int) -> None:
        """Prometheus metrics on their own thread: a scrape never waits for the event loop."""
        policy = self.services.policy
        scrape = Scrape(
            self.settings.redis_url, self.services.keys, sorted({t.queue for t in policy.tiers.values()})
        )
        try:
            server, thread = start_http_server(port, addr=self.settings.host, registry=scrape)
        except OSError as exc:
            scrape.close()
            raise ConfigError(
                f"NOTIGATE_WORKER_METRICS_PORT={port} cannot be served on "
                f"{self.settings.host}: {exc.strerror}"
            ) from None
        self.metrics_server = (server, thread, scrape)
        log.info("worker metrics on http://%s:%d/metrics", self.settings.host, port)

    async def _decide_late(self) -> None:
        while not self.stop.is_set():
            try:
                # Claimed for as long as a job's deliveries are: deciding a page takes far less.
                decided = await self.services.intake.decide_pending(
                    lease=dt.timedelta(seconds=self.settings.job_timeout)
                )
                if decided:
                    log.info("decided %d intents accepted while Redis was away", decided)
            except (Unavailable, RedisError, OSError) as exc:  # Redis or the database away
                log.info("late decisions waiting: %s", exc)
                decided = 0
            if not decided:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)

    async def _providers_for(self, old: CompiledPolicy, new: CompiledPolicy) -> Callable[[], None] | None:
        """A reload that changes providers.yaml gets new adapters, built before the swap.

        A provider the new file names without its credentials refuses the whole bundle, as
        it would refuse this worker's start. Sends under way keep the adapter they hold; the
        old adapters are closed once no job can still be running on them.
        """
        if _providers_digest(old) == _providers_digest(new) or self.pipeline is None:
            return None
        services, pipeline = self.services, self.pipeline
        deps = AdapterDeps(database=services.database, redis=services.redis, keys=services.keys)
        load = functools.partial(ProviderRegistry.load, deps=deps)
        try:
            registry = await asyncio.to_thread(
                load, self.settings.bundle_paths().providers, self.settings.provider_profile
            )
        except ConfigError as exc:
            raise ReloadRefused(f"providers: {exc}") from None

        def swap() -> None:
            retired, self.registry = self.registry, registry
            pipeline.registry = registry
            pipeline.guard = ProviderGuard(services.redis, services.keys, registry.specs)
            if retired is not None:
                self._retired.append(asyncio.create_task(self._close_later(retired), name="retire-providers"))

        return swap

    async def _close_later(self, registry: ProviderRegistry) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.settings.job_timeout + 1)
        await registry.close()

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        self.stop.set()
        await self.services.bundle.stop()
        await asyncio.gather(*self._retired, return_exceptions=True)
        for consumer in self.consumers:
            if consumer.current is not None:
                consumer.current.allow_pick_jobs = False
        running = [t for c in self.consumers for t in c.running()]
        if running:
            await asyncio.wait(running, timeout=self.settings.job_timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in self.consumers:
            try:
                await consumer.close()
            except Exception:
                log.exception("closing the consumer of queue %s", consumer.queue)
        if self.metrics_server is not None:
            server, thread, scrape = self.metrics_server
            await asyncio.to_thread(server.shutdown)  # waits out serve_forever's poll
            server.server_close()
            thread.join(timeout=5)
            scrape.close()
        # The jobs are over; what they handed the group commits still lands: the last claims
        # (given back), then every outcome, the give-backs' included.
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.outcomes is not None:
            await self.outcomes.stop(grace=5.0)
        if self.registry is not None:
            await self.registry.close()
        await self.services.close()


def _providers_digest(policy: CompiledPolicy) -> str | None:
    return next((f.sha256 for f in policy.files if f.kind == "Providers"), None)


async def _require_current_schema(services: Services) -> None:
    await migrate.require_current(services.database, "this worker")


def run(settings: Settings, queues: Sequence[str] | None = None, *, relay: bool = True) -> int:
    async def main() -> int:
        process = WorkerProcess(settings, queues, relay=relay, live=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, process.stop.set)
        return await process.run()

    with _runner() as runner:
        return runner.run(main())


def _runner() -> asyncio.Runner:
    """uvloop's event loop where it is installed (as uvicorn picks for the API), else asyncio's.

    A worker's event loop runs a few dozen callbacks per delivery (claims, the provider
    call, outcomes, arq's bookkeeping); asyncio's own loop machinery was a quarter of the
    worker's CPU in `bench.delivery --profile`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
