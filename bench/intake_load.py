"""The intake benchmark's whole-gateway parts: urgent latency (quiet or under a bulk peak) and
the soak.

Both run the gateway as deployed: the API (one process, or `notigate serve --processes N`), a
worker for the critical queue and `--workers` niced workers for `standard` and `bulk` (the
first with the relay), sharing every core. Load is open loop: each request is sent on its
schedule whatever the answers' pace, so a slow gateway shows up as latency, not as a lighter
load.

- latency: `low` campaigns as `POST /v1/intents/bulk` of `--bulk-size` recipients at
  `--bulk-rate` intents/s (0: the quiet baseline) while `urgent` one-time codes are posted at
  `--probe-rate`/s. A bulk request answered 202 is accepted, 429 `overloaded` is shed
  (admission control working); any other answer is an error that fails the run. After the
  load: every urgent code's accept→delivered time, then how long the accepted bulk takes to
  drain (every recipient expanded and no delivery of it left to send).
- soak: the throughput part's mix of intents at `--soak-rate`/s for `--soak-seconds`, sampled
  every `--sample-seconds`: due jobs per queue, resident memory of the API and workers, accept
  p99 and urgent accept→delivered p99 of the interval; first and last minute compared.

Accept→delivered runs from just before the POST to the delivered attempt's time in the store
(written after the provider answered), so it over- rather than under-states.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from redis.asyncio import Redis

from bench.intake_bodies import bulk_body, intake_intents, probe_body
from bench.intake_stack import Stack
from bench.procs import HOST, Server
from bench.stats import percentile
from gateway.admission import read_backlog
from gateway.redis_keys import Keys
from gateway.store.tables import AttemptRow, BulkRequestRow, DeliveryRow, NotificationRow

Log = Callable[[str], None]
NOTIFICATIONS = NotificationRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
ATTEMPTS = AttemptRow.__table__  # type: ignore[attr-defined]
BULK = BulkRequestRow.__table__  # type: ignore[attr-defined]

QUEUES = ("critical", "standard", "bulk")
OPEN = ("pending", "sending", "retrying")  # deliveries still to be sent now
URGENT_ACCEPT_GOAL_MS = 100.0
URGENT_P50_GOAL_MS = 250.0
URGENT_GOAL_MS = 1000.0  # accept→delivered p99
PEAK_CODES = 500_000  # the peak's one-time codes count from here, the baseline's from 0
URGENT_WAIT_S = 30.0  # how long after the load an urgent code may take to be delivered


@dataclass(frozen=True, slots=True)
class LoadOptions:
    api_processes: int = 1
    workers: int = 1
    users: int = 20_000
    bulk_rate: int = 1000
    bulk_size: int = 100
    probe_rate: float = 10.0
    latency_seconds: float = 60.0
    drain_timeout: float = 900.0
    soak_rate: float = 115.0
    soak_seconds: float = 600.0
    sample_seconds: float = 10.0


@dataclass
class Answers:
    """How a kind of request was answered: accepted, shed (429 overloaded), anything else."""

    accepted: int = 0
    shed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    accept_ms: list[float] = field(default_factory=list, repr=False)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def post(
        self, http: aiohttp.ClientSession, path: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, float | None]:
        """POST `body`: (the answer's JSON, milliseconds to the answer) when accepted,
        (None, None) otherwise (counted either way)."""
        started = time.perf_counter()
        try:
            async with http.post(path, json=body) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error(type(exc).__name__)
            return None, None
        took = (time.perf_counter() - started) * 1000
        if status in (200, 202):
            self.accepted += 1
            self.accept_ms.append(took)
            answer: dict[str, Any] = json.loads(content)
            return answer, took
        code = _code(content)
        if status == 429 and code == "overloaded":
            self.shed += 1
        else:
            self.error(f"{status} {code}")
        return None, None


def _code(content: bytes) -> str:
    try:
        return str(json.loads(content)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


@dataclass
class LatencyResult:
    mode: str  # baseline (no bulk) or peak
    layout: str
    seconds: float
    bulk_offered: int  # bulk requests sent
    bulk_requests: int  # answered 202
    bulk_intents: int  # recipients of the accepted requests
    bulk_shed: int  # answered 429 overloaded
    bulk_errors: dict[str, int]
    drained: bool
    drain_seconds: float | None  # from the end of the load to the last accepted bulk delivery sent
    bulk_deliveries: dict[str, int]  # status -> deliveries of the accepted bulk, at the end
    probes: int
    probe_errors: dict[str, int]
    accept_p50_ms: float
    accept_p99_ms: float
    delivered: int
    undelivered: int
    delivered_p50_ms: float
    delivered_p99_ms: float
    delivered_max_ms: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def error_answers(self) -> int:
        return sum(self.bulk_errors.values()) + sum(self.probe_errors.values())

    @property
    def passed(self) -> bool:
        return (
            self.accept_p99_ms < URGENT_ACCEPT_GOAL_MS
            and self.delivered_p50_ms < URGENT_P50_GOAL_MS
            and self.delivered_p99_ms < URGENT_GOAL_MS
            and self.undelivered == 0
            and not self.error_answers
        )


# -- the stack under load ---------------------------------------------------------------


@contextlib.contextmanager
def deployed(stack: Stack, options: LoadOptions) -> Iterator[tuple[Server, str]]:
    """The API and the workers as one would deploy them: the critical queue's worker at
    normal priority, the others niced, so a campaign's deliveries use what intake and
    one-time codes leave idle."""
    stack.worker("critical", ["critical"], relay=False)
    for n in range(options.workers):
        stack.worker(f"others-{n}", ["standard", "bulk"], relay=n == 0, nice=10)
    layout = (
        f"{options.api_processes} API process{'es' if options.api_processes > 1 else ''},"
        f" 1 critical worker, {options.workers} standard+bulk worker{'s' if options.workers > 1 else ''},"
        " sharing every core"
    )
    with stack.api(cpu=None, processes=options.api_processes) as api:
        yield api, layout


def _client(stack: Stack, port: int) -> aiohttp.ClientSession:
    """The load's HTTP client. aiohttp rather than httpx: httpx's pool walks every connection
    and every waiting request on each request's end, so once answers slowed and requests
    piled up, the generator spent most of a core there, fell behind its schedule and (in a
    10-minute soak) never finished; its own delay was also counted in every accept time."""
    return aiohttp.ClientSession(
        base_url=f"http://{HOST}:{port}",
        headers={"authorization": f"Bearer {stack.token}"},
        timeout=aiohttp.ClientTimeout(total=30.0),
        connector=aiohttp.TCPConnector(limit=200),
    )


async def every(interval: float, seconds: float, action: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start `action(n)` every `interval` seconds for `seconds`, on schedule, then await them all."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for n in itertools.count():
        due = start + n * interval
        if due - start >= seconds:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(action(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)


# -- latency: quiet baseline and peak --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Driven:
    sent_at: dict[str, float]  # each accepted probe's send time (epoch s) by notification id
    bulk: Answers
    probes: Answers
    bulk_ids: list[str]  # the accepted bulk requests
    recipients: int  # their recipients


async def _drive(stack: Stack, port: int, options: LoadOptions, first_code: int) -> _Driven:
    """The bulk load and the probes, at once."""
    sent_at: dict[str, float] = {}
    bulk, probes = Answers(), Answers()
    bulk_ids: list[str] = []
    recipients: list[int] = []
    users = itertools.cycle(range(options.users))

    async with _client(stack, port) as http:

        async def campaign(n: int) -> None:
            user_ids = [f"u_{next(users):06d}" for _ in range(options.bulk_size)]
            answer, _ = await bulk.post(http, "/v1/intents/bulk", bulk_body(n, user_ids))
            if answer is not None:
                bulk_ids.append(answer["bulk_id"])
                recipients.append(answer["recipients"])

        async def probe(n: int) -> None:
            wall = time.time()
            answer, _ = await probes.post(http, "/v1/intents", probe_body(n, first_code))
            if answer is not None:
                sent_at[answer["notification_id"]] = wall

        loads = [every(1 / options.probe_rate, options.latency_seconds, probe)]
        if options.bulk_rate > 0:
            loads.append(every(options.bulk_size / options.bulk_rate, options.latency_seconds, campaign))
        await asyncio.gather(*loads)
    return _Driven(sent_at, bulk, probes, bulk_ids, sum(recipients))


def run_latency(stack: Stack, api: Server, layout: str, options: LoadOptions, log: Log) -> LatencyResult:
    """Probes (and, in the peak, campaigns) against a deployed stack, then the stragglers."""
    mode = "peak" if options.bulk_rate > 0 else "baseline"
    log(
        f"  {mode}: {options.bulk_rate} low intents/s in bulk requests of {options.bulk_size}, "
        f"{options.probe_rate:g} urgent intents/s, {options.latency_seconds:g}s; {layout} ..."
    )
    started = time.time()
    # Codes distinct from the other mode's, should both run on one stack: no content duplicates.
    driven = asyncio.run(_drive(stack, api.port, options, first_code=PEAK_CODES if mode == "peak" else 0))
    ended = time.time()
    stack.workers_alive()
    delivered = wait_for_urgent(stack, list(driven.sent_at), timeout=URGENT_WAIT_S)
    drain = wait_for_drain(stack, driven.bulk_ids, ended, options.drain_timeout, log)
    stack.workers_alive()
    sent_at, bulk, probes = driven.sent_at, driven.bulk, driven.probes
    samples = sorted((delivered[n] - sent_at[n]) * 1000 for n in delivered)
    accept = sorted(probes.accept_ms)
    return LatencyResult(
        mode=mode,
        layout=layout,
        seconds=ended - started,
        bulk_offered=bulk.accepted + bulk.shed + sum(bulk.errors.values()),
        bulk_requests=bulk.accepted,
        bulk_intents=driven.recipients,
        bulk_shed=bulk.shed,
        bulk_errors=bulk.errors,
        drained=drain is not None,
        drain_seconds=drain,
        bulk_deliveries=bulk_delivery_statuses(stack),
        probes=probes.accepted,
        probe_errors={**probes.errors, **({"429 overloaded": probes.shed} if probes.shed else {})},
        accept_p50_ms=percentile(accept, 50),
        accept_p99_ms=percentile(accept, 99),
        delivered=len(samples),
        undelivered=len(sent_at) - len(samples),
        delivered_p50_ms=percentile(samples, 50),
        delivered_p99_ms=percentile(samples, 99),
        delivered_max_ms=samples[-1] if samples else float("nan"),
        samples_ms=[round(s, 1) for s in samples],
    )


def _urgent_delivered() -> sa.Select[Any]:
    return (
        sa.select(DELIVERIES.c.notification_id, sa.func.min(ATTEMPTS.c.at))
        .select_from(ATTEMPTS.join(DELIVERIES, ATTEMPTS.c.delivery_id == DELIVERIES.c.id))
        .where(DELIVERIES.c.queue == "critical", ATTEMPTS.c.outcome == "delivered")
        .group_by(DELIVERIES.c.notification_id)
    )


def _epoch(at: dt.datetime) -> float:
    """A stored time as epoch seconds; SQLite gives it back naive, in UTC."""
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()


def wait_for_urgent(stack: Stack, notification_ids: Sequence[str], timeout: float) -> dict[str, float]:
    """Each notification's first delivered attempt (epoch seconds), waiting for stragglers."""
    deadline = time.monotonic() + timeout
    wanted = set(notification_ids)
    while True:
        found = {nid: _epoch(at) for nid, at in stack.query(_urgent_delivered()) if nid in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _bulk_left(stack: Stack, bulk_ids: Sequence[str]) -> tuple[int, int]:
    """(recipients not yet expanded, deliveries still to send) of the given bulk requests."""
    unexpanded = stack.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(BULK.c.recipients - BULK.c.expanded), 0)).where(
            BULK.c.id.in_(bulk_ids)
        )
    )
    open_deliveries = stack.scalar(
        sa.select(sa.func.count())
        .select_from(DELIVERIES.join(NOTIFICATIONS, DELIVERIES.c.notification_id == NOTIFICATIONS.c.id))
        .where(NOTIFICATIONS.c.bulk_id.is_not(None), DELIVERIES.c.status.in_(OPEN))
    )
    return int(unexpanded), int(open_deliveries)


def wait_for_drain(
    stack: Stack, bulk_ids: Sequence[str], since: float, timeout: float, log: Log
) -> float | None:
    """Seconds from `since` until every accepted bulk recipient is expanded and none of their
    deliveries is left to send; None if that takes longer than `timeout` after the load."""
    deadline = time.monotonic() + timeout
    last_note = time.monotonic()
    while True:
        unexpanded, open_deliveries = _bulk_left(stack, bulk_ids)
        if unexpanded == 0 and open_deliveries == 0:
            return time.time() - since
        if time.monotonic() > deadline:
            log(f"  bulk not drained: {unexpanded} recipients unexpanded, {open_deliveries} deliveries open")
            return None
        if time.monotonic() - last_note >= 30:
            log(f"  draining: {unexpanded} recipients unexpanded, {open_deliveries} deliveries open ...")
            last_note = time.monotonic()
        stack.workers_alive()
        time.sleep(1.0)


def bulk_delivery_statuses(stack: Stack) -> dict[str, int]:
    rows = stack.query(
        sa.select(DELIVERIES.c.status, sa.func.count())
        .select_from(DELIVERIES.join(NOTIFICATIONS, DELIVERIES.c.notification_id == NOTIFICATIONS.c.id))
        .where(NOTIFICATIONS.c.bulk_id.is_not(None))
        .group_by(DELIVERIES.c.status)
    )
    return {status: int(count) for status, count in rows}


# -- soak -------------------------------------------------------------------------------


@dataclass
class SoakSample:
    at_s: float  # seconds into the run, at the end of the interval
    sent: int
    accepted: int
    shed: int
    due: dict[str, int]  # due jobs per queue
    rss_mb: dict[str, float]  # resident memory per process
    accept_p99_ms: float
    urgent_p99_ms: float  # accept→delivered of the interval's urgent intents


@dataclass
class SoakResult:
    layout: str
    seconds: float
    rate: float
    sent: int
    accepted: int
    shed: int
    errors: dict[str, int]
    urgent: int
    urgent_undelivered: int
    samples: list[SoakSample]
    first: dict[str, float]  # averages over the first minute's samples
    last: dict[str, float]  # the same over the last minute's

    @property
    def error_answers(self) -> int:
        return sum(self.errors.values())


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, MB (Linux /proc; 0 where unreadable)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        own = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return own / 1024 + sum(rss_mb(int(child)) for child in children)


@dataclass
class _SoakLoad:
    answers: Answers = field(default_factory=Answers)
    started: float = 0.0  # perf_counter when the first intent was due
    # (perf_counter at send, wall at send, accept ms or None, notification id if urgent)
    sends: list[tuple[float, float, float | None, str | None]] = field(default_factory=list)


async def _soak(
    stack: Stack, api: Server, options: LoadOptions, sample: Callable[[_SoakLoad], Awaitable[None]]
) -> _SoakLoad:
    intents = intake_intents(int(options.soak_rate * options.soak_seconds) + 1, options.users, seed=23)
    load = _SoakLoad()

    async with _client(stack, api.port) as http:

        async def send(n: int) -> None:
            intent = intents[n]
            perf, wall = time.perf_counter(), time.time()
            answer, took = await load.answers.post(http, "/v1/intents", intent)
            urgent = answer["notification_id"] if answer and intent["priority"] == "urgent" else None
            load.sends.append((perf, wall, took, urgent))

        async def sampler() -> None:
            for k in itertools.count(1):
                if k * options.sample_seconds > options.soak_seconds + 1e-6:
                    return
                await asyncio.sleep(max(0.0, load.started + k * options.sample_seconds - time.perf_counter()))
                await sample(load)

        load.started = time.perf_counter()
        await asyncio.gather(every(1 / options.soak_rate, options.soak_seconds, send), sampler())
    return load


def run_soak(stack: Stack, api: Server, layout: str, options: LoadOptions, log: Log) -> SoakResult:
    """The mix at a steady rate against a deployed stack, sampled as it goes."""
    keys = Keys(prefix=stack.env["NOTIGATE_REDIS_PREFIX"])
    raw: list[dict[str, Any]] = []

    log(f"  soak: the mix at {options.soak_rate:g} intents/s for {options.soak_seconds:g}s; {layout} ...")
    processes = {"api": api.process.pid, **{name: p.pid for name, p in stack.named_workers()}}

    async def sample(load: _SoakLoad) -> None:
        redis = Redis.from_url(stack.redis.url)
        try:
            due = await read_backlog(redis, keys, QUEUES, dt.datetime.now(dt.UTC))
        finally:
            await redis.aclose()
        raw.append(
            {
                "at": time.perf_counter() - load.started,
                "sends": len(load.sends),
                "shed": load.answers.shed,
                "due": {q.queue: q.due for q in due},
                "rss": {name: round(rss_mb(pid), 1) for name, pid in processes.items()},
            }
        )

    load = asyncio.run(_soak(stack, api, options, sample))
    stack.workers_alive()
    urgent = [nid for *_, nid in load.sends if nid]
    delivered = wait_for_urgent(stack, urgent, timeout=URGENT_WAIT_S)
    samples = _soak_samples(raw, load, delivered)
    return SoakResult(
        layout=layout,
        seconds=options.soak_seconds,
        rate=options.soak_rate,
        sent=len(load.sends),
        accepted=load.answers.accepted,
        shed=load.answers.shed,
        errors=load.answers.errors,
        urgent=len(urgent),
        urgent_undelivered=len(urgent) - len(delivered),
        samples=samples,
        first=_average(samples, lambda s: s.at_s <= min(60.0, options.soak_seconds / 2)),
        last=_average(samples, lambda s: s.at_s > options.soak_seconds - min(60.0, options.soak_seconds / 2)),
    )


def _soak_samples(
    raw: list[dict[str, Any]], load: _SoakLoad, delivered: dict[str, float]
) -> list[SoakSample]:
    """One sample per interval: the sampler's snapshot plus the latencies of that interval's sends."""
    samples, begin, previous_shed = [], 0.0, 0
    for snapshot in raw:
        window = [s for s in load.sends if begin <= s[0] - load.started < snapshot["at"]]
        accept = sorted(took for _, _, took, _ in window if took is not None)
        urgent = sorted((delivered[nid] - wall) * 1000 for _, wall, _, nid in window if nid in delivered)
        samples.append(
            SoakSample(
                at_s=round(snapshot["at"], 1),
                sent=len(window),
                accepted=len(accept),
                shed=snapshot["shed"] - previous_shed,
                due=snapshot["due"],
                rss_mb=snapshot["rss"],
                accept_p99_ms=round(percentile(accept, 99), 1),
                urgent_p99_ms=round(percentile(urgent, 99), 1),
            )
        )
        begin, previous_shed = snapshot["at"], snapshot["shed"]
    return samples


def _average(samples: list[SoakSample], keep: Callable[[SoakSample], bool]) -> dict[str, float]:
    """Mean due jobs (all queues), memory (all processes) and p99s of the chosen samples."""
    chosen = [s for s in samples if keep(s)]
    if not chosen:
        return {}

    def mean(values: list[float]) -> float:
        real = [v for v in values if v == v]  # an interval without urgent intents has no p99
        return round(sum(real) / len(real), 1) if real else float("nan")

    return {
        "due_jobs": mean([float(sum(s.due.values())) for s in chosen]),
        "rss_mb": mean([sum(s.rss_mb.values()) for s in chosen]),
        "accept_p99_ms": mean([s.accept_p99_ms for s in chosen]),
        "urgent_p99_ms": mean([s.urgent_p99_ms for s in chosen]),
    }
