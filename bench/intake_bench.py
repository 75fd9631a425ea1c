"""The intake benchmark's throughput and Redis parts; `bench/intake.py` runs them and prints the report.

1. Throughput: `POST /v1/intents` on one API process pinned to one core, driven closed-loop
   by wrk (or bench.loadgen) on the other core for `--duration` seconds, beside the bare
   Litestar endpoint `POST /bare/intents` decoding the same bodies. Every accepted intent
   is then counted in the store: the figure is intents stored, not answers sent.
2. Redis: `redis-benchmark` SETs, one at a time and pipelined, against the same private
   Redis, so a reader can tell a slow Redis from a slow gateway.
The whole-gateway parts (urgent latency quiet and under a bulk peak, the soak) are in
`bench/intake_load.py`; the bodies posted, in `bench/intake_bodies.py`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from bench.generators import LoadResult, choose_tool, run_load
from bench.intake_bodies import intake_bodies
from bench.intake_stack import Stack
from bench.procs import HOST, BenchError, CpuPlan, OtherLoad, running_server
from gateway.store.tables import NotificationRow

Log = Callable[[str], None]
NOTIFICATIONS = NotificationRow.__table__  # type: ignore[attr-defined]

ACCEPT_GOAL = 2000.0  # intents/s, sustained
NO_SHEDDING = {"NOTIGATE_SHED_BACKLOG": "1000000000", "NOTIGATE_SHED_WAIT": "1000000000"}


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    duration: float = 60.0
    connections: int = 64
    api_processes: int = 1
    users: int = 20_000
    bare_seconds: float = 10.0
    loadgen: str = "auto"
    database_url: str | None = None


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


# -- part 1 -----------------------------------------------------------------------------


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
    # No worker drains the queues here: admission control would shed the mix's `low` intents
    # once they pile up, and this part measures intake, not shedding.
    with stack.api(api_cpu, options.api_processes, env=NO_SHEDDING) as api:
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


def run_redis_benchmark(stack: Stack, requests: int = 200_000) -> RedisResult | None:
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
                str(requests),
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


def as_json(result: Any) -> dict[str, Any]:
    return asdict(result)
