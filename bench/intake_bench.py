"""The intake benchmark's three parts; `bench/intake.py` runs them and prints the report.

1. Throughput: `POST /v1/intents` on one API process pinned to one core, driven closed-loop
   by wrk (or bench.loadgen) on the other core for `--duration` seconds, beside the bare
   Litestar endpoint `POST /bare/intents` decoding the same bodies. Every accepted intent
   is then counted in the store: the figure is intents stored, not answers sent.
2. Redis: `redis-benchmark` SETs, one at a time and pipelined, against the same private
   Redis, so a reader can tell a slow Redis from a slow gateway.
3. Latency: the whole gateway (API, a worker for the critical queue, a worker for the
   others with the relay) shares both cores with a `low` bulk load of `--bulk-rate`
   intents/s sent as `POST /v1/intents/bulk`, while `urgent` one-time codes are posted at
   `--probe-rate`/s. Accept latency is timed by the client; accept→delivered runs from
   just before the POST to the delivered attempt's time in the store (written after the
   provider answered), so it over- rather than under-states.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from bench.generators import LoadResult, choose_tool, run_load
from bench.intake_stack import PROBE_USERS, Stack
from bench.procs import HOST, BenchError, CpuPlan, OtherLoad, running_server
from bench.stats import percentile
from gateway.store.tables import AttemptRow, DeliveryRow, NotificationRow

Log = Callable[[str], None]
NOTIFICATIONS = NotificationRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
ATTEMPTS = AttemptRow.__table__  # type: ignore[attr-defined]

ACCEPT_GOAL = 2000.0  # intents/s, sustained
URGENT_GOAL_MS = 1000.0  # accept→delivered p99 under the bulk load


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    duration: float = 60.0
    connections: int = 64
    api_processes: int = 1
    users: int = 20_000
    bare_seconds: float = 10.0
    bulk_rate: int = 1000
    bulk_size: int = 100
    probe_rate: float = 10.0
    latency_seconds: float = 30.0
    loadgen: str = "auto"
    database_url: str | None = None
    skip: tuple[str, ...] = ()


@dataclass
class ThroughputResult:
    tool: str
    layout: str
    seconds: float
    answered: int
    accepted_per_second: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    stored: int
    server_cpu_us_per_intent: float | None
    other_load: float | None
    bare_per_second: float
    bare_p50_ms: float
    bare_p99_ms: float

    @property
    def passed(self) -> bool:
        return self.accepted_per_second >= ACCEPT_GOAL and not self.errors


@dataclass
class RedisResult:
    set_per_second: float
    set_pipelined_per_second: float


@dataclass
class LatencyResult:
    seconds: float
    bulk_requests: int
    bulk_intents: int
    bulk_errors: int
    bulk_delivered: int
    probes: int
    probe_errors: int
    accept_p50_ms: float
    accept_p99_ms: float
    delivered: int
    undelivered: int
    delivered_p50_ms: float
    delivered_p99_ms: float
    delivered_max_ms: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return self.delivered_p99_ms < URGENT_GOAL_MS and self.undelivered == 0 and not self.probe_errors


# -- part 1 -----------------------------------------------------------------------------

MIX: tuple[tuple[float, str, str], ...] = (
    # (weight, event, priority): what a shop with a social side sends in a day
    (0.40, "order.shipped", "normal"),
    (0.10, "order.delivered", "normal"),
    (0.10, "order.shipped", "low"),
    (0.10, "social.comment", "normal"),
    (0.08, "payment.failed", "normal"),
    (0.10, "marketing.weekly_digest", "low"),
    (0.05, "security.otp", "urgent"),
    (0.07, "security.new_login", "normal"),
)


def intake_bodies(count: int, users: int, seed: int = 11) -> list[bytes]:
    """`count` distinct intents (no two alike, so none is a replay or a content duplicate by
    accident), a third with an idempotency key."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    bodies = []
    for n in range(count):
        _, event, priority = rng.choices(MIX, weights)[0]
        data: dict[str, Any] = {"order_id": f"B-{n}", "carrier": "UPS"}
        if event.startswith("social."):
            data = {"actor_id": f"u_{rng.randrange(users):06d}", "post_id": f"p_{n}"}
        elif event == "security.otp":
            data = {"code": f"{rng.randrange(1_000_000):06d}"}
        elif event == "payment.failed":
            data = {"amount": f"{rng.randrange(5, 500)}.00", "order_id": f"B-{n}"}
        elif event.startswith("marketing."):
            data = {"week": f"W{n}"}
        elif event == "security.new_login":
            data = {"device": "Firefox on Linux", "city": "Lyon", "login_id": n}
        intent: dict[str, Any] = {
            "event": event,
            "user_id": f"u_{rng.randrange(users):06d}",
            "priority": priority,
            "data": data,
        }
        if rng.random() < 1 / 3:
            intent["idempotency_key"] = f"bench-{seed}-{n}"
        bodies.append(json.dumps(intent, separators=(",", ":")).encode())
    return bodies


def run_throughput(stack: Stack, options: IntakeOptions, cpus: CpuPlan, log: Log) -> ThroughputResult:
    tool = choose_tool(options.loadgen)
    # Enough distinct bodies that none repeats at twice the goal's rate.
    count = int(min(400_000, max(20_000, options.duration * ACCEPT_GOAL * 2)))
    bodies = stack.root / "intents.jsonl"
    bodies.write_bytes(b"\n".join(intake_bodies(count, options.users)) + b"\n")
    auth = [f"Authorization: Bearer {stack.token}"]
    log(f"  bare Litestar endpoint, {options.bare_seconds:g}s ...")
    with running_server("bare", "bench.bare_server:app", cpu=cpus.server, log_dir=stack.root) as bare:
        bare_load = run_load(
            tool,
            port=bare.port,
            path="/bare/intents",
            bodies=bodies,
            connections=options.connections,
            duration=options.bare_seconds,
            cpu=cpus.generator,
            expect=202,
        )
    log(f"  POST /v1/intents, {options.connections} connections, {options.duration:g}s ...")
    if options.api_processes == 1:
        layout, api_cpu, load_cpu = (
            "one API process on one core, the load generator on the other",
            cpus.server,
            cpus.generator,
        )
    else:
        layout = f"{options.api_processes} API processes, the load generator and Redis sharing every core"
        api_cpu = load_cpu = None
    with stack.api(api_cpu, options.api_processes) as api:
        before = _stored(stack)
        cpu_before = api.cpu_seconds()
        other = OtherLoad(cpus.http_cores())
        load = run_load(
            tool,
            port=api.port,
            path="/v1/intents",
            bodies=bodies,
            connections=options.connections,
            duration=options.duration,
            cpu=load_cpu,
            expect=202,
            headers=auth,
        )
        cpu_after = api.cpu_seconds()
        server_cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
        other_share = other.share((server_cpu or 0.0) + load.generator_cpu_seconds)
    stored = _stored(stack) - before
    answered = load.requests - load.error_count
    if stored < answered:
        raise BenchError(f"{answered} intents were answered 202 but only {stored} are in the store")
    return ThroughputResult(
        tool=tool,
        layout=layout,
        seconds=load.seconds,
        answered=answered,
        accepted_per_second=answered / load.seconds,
        errors=load.errors,
        p50_ms=load.latency.p50_us / 1000,
        p99_ms=load.latency.p99_us / 1000,
        stored=stored,
        server_cpu_us_per_intent=server_cpu / answered * 1e6 if server_cpu and answered else None,
        other_load=other_share,
        bare_per_second=_ok_per_second(bare_load),
        bare_p50_ms=bare_load.latency.p50_us / 1000,
        bare_p99_ms=bare_load.latency.p99_us / 1000,
    )


def _ok_per_second(load: LoadResult) -> float:
    return (load.requests - load.error_count) / load.seconds


def _stored(stack: Stack) -> int:
    return int(stack.scalar(sa.select(sa.func.count()).select_from(NOTIFICATIONS)))


# -- part 2 -----------------------------------------------------------------------------

_SET_RATE = re.compile(r"SET: ([\d.]+) requests per second")


def run_redis_benchmark(stack: Stack) -> RedisResult | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None

    def sets(*extra: str) -> float:
        done = subprocess.run(
            [
                binary,
                "-h",
                HOST,
                "-p",
                str(stack.redis.port),
                "-t",
                "set",
                "-n",
                "200000",
                "-c",
                "50",
                "-q",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        found = _SET_RATE.search(done.stdout.replace("\r", "\n"))
        if done.returncode != 0 or found is None:
            raise BenchError(f"redis-benchmark failed: {done.stdout[-300:]} {done.stderr[-300:]}")
        return float(found.group(1))

    return RedisResult(sets(), sets("-P", "100"))


# -- part 3 -----------------------------------------------------------------------------


async def _drive(stack: Stack, port: int, options: IntakeOptions) -> tuple[dict[str, float], dict[str, Any]]:
    """The bulk load and the probes, open loop: each is sent on its schedule whatever the
    answers' pace, so a slow gateway shows up as latency, not as a lighter load."""
    base = f"http://{HOST}:{port}"
    headers = {"authorization": f"Bearer {stack.token}"}
    sent_at: dict[str, float] = {}
    accept_ms: list[float] = []
    figures = {"bulk_requests": 0, "bulk_intents": 0, "bulk_errors": 0, "probes": 0, "probe_errors": 0}
    users = itertools.cycle(range(options.users))
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0, limits=limits) as http:

        async def bulk(n: int) -> None:
            body = {
                "event": "order.shipped",
                "priority": "low",
                "user_ids": [f"u_{next(users):06d}" for _ in range(options.bulk_size)],
                "data": {"order_id": f"C-{n}", "carrier": "UPS"},
            }
            try:
                response = await http.post("/v1/intents/bulk", json=body)
            except httpx.HTTPError:
                figures["bulk_errors"] += 1
                return
            if response.status_code == 202:
                figures["bulk_requests"] += 1
                figures["bulk_intents"] += response.json()["accepted"]
            else:
                figures["bulk_errors"] += 1

        async def probe(n: int) -> None:
            body = {
                "event": "security.otp",
                "user_id": f"p_{n % PROBE_USERS:03d}",
                "priority": "urgent",
                "data": {"code": f"{n:06d}"},
            }
            wall, started = time.time(), time.perf_counter()
            try:
                response = await http.post("/v1/intents", json=body)
            except httpx.HTTPError:
                figures["probe_errors"] += 1
                return
            if response.status_code != 202:
                figures["probe_errors"] += 1
                return
            accept_ms.append((time.perf_counter() - started) * 1000)
            sent_at[response.json()["notification_id"]] = wall
            figures["probes"] += 1

        async def every(interval: float, action: Callable[[int], Any]) -> None:
            start = time.perf_counter()
            for n in itertools.count():
                due = start + n * interval
                if due - start >= options.latency_seconds:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                task = asyncio.create_task(action(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        await asyncio.gather(
            every(options.bulk_size / options.bulk_rate, bulk), every(1 / options.probe_rate, probe)
        )
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    ordered = sorted(accept_ms)
    return sent_at, {
        **figures,
        "accept_p50_ms": percentile(ordered, 50),
        "accept_p99_ms": percentile(ordered, 99),
    }


def run_latency(stack: Stack, options: IntakeOptions, log: Log) -> LatencyResult:
    # As one would deploy it: the critical queue's worker at normal priority, the others niced,
    # so that a campaign's deliveries use the cores intake and one-time codes leave idle.
    stack.worker("critical", ["critical"], relay=False)
    stack.worker("others", ["standard", "bulk"], relay=True, nice=10)
    with stack.api(cpu=None) as api:
        log(
            f"  {options.bulk_rate} low intents/s in bulk requests of {options.bulk_size}, "
            f"{options.probe_rate:g} urgent intents/s, {options.latency_seconds:g}s ..."
        )
        started = time.time()
        sent_at, figures = asyncio.run(_drive(stack, api.port, options))
        ended = time.time()
        stack.workers_alive()
        delivered = _wait_for_deliveries(stack, list(sent_at), timeout=30.0)
    bulk_delivered = int(
        stack.scalar(
            sa.select(sa.func.count())
            .select_from(ATTEMPTS.join(DELIVERIES, ATTEMPTS.c.delivery_id == DELIVERIES.c.id))
            .where(DELIVERIES.c.queue == "bulk", ATTEMPTS.c.outcome == "delivered")
        )
    )
    samples = sorted((delivered[n] - sent_at[n]) * 1000 for n in delivered)
    return LatencyResult(
        seconds=ended - started,
        bulk_requests=figures["bulk_requests"],
        bulk_intents=figures["bulk_intents"],
        bulk_errors=figures["bulk_errors"],
        bulk_delivered=bulk_delivered,
        probes=figures["probes"],
        probe_errors=figures["probe_errors"],
        accept_p50_ms=figures["accept_p50_ms"],
        accept_p99_ms=figures["accept_p99_ms"],
        delivered=len(samples),
        undelivered=len(sent_at) - len(samples),
        delivered_p50_ms=percentile(samples, 50),
        delivered_p99_ms=percentile(samples, 99),
        delivered_max_ms=samples[-1] if samples else float("nan"),
        samples_ms=[round(s, 1) for s in samples],
    )


def _wait_for_deliveries(stack: Stack, notification_ids: list[str], timeout: float) -> dict[str, float]:
    """Each notification's first delivered attempt (epoch seconds), waiting for stragglers."""
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while True:
        rows = stack.query(
            sa.select(DELIVERIES.c.notification_id, sa.func.min(ATTEMPTS.c.at))
            .select_from(ATTEMPTS.join(DELIVERIES, ATTEMPTS.c.delivery_id == DELIVERIES.c.id))
            .where(DELIVERIES.c.queue == "critical", ATTEMPTS.c.outcome == "delivered")
            .group_by(DELIVERIES.c.notification_id)
        )
        wanted = set(notification_ids)
        found = {nid: at.timestamp() for nid, at in rows if nid in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def as_json(result: Any) -> dict[str, Any]:
    return asdict(result)
