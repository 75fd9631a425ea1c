"""Part 2: `POST /v1/dry-run` over loopback against a bare Litestar endpoint, same run.

The absolute requests/s of a Python server depends on the machine; the ratio to a bare
endpoint on the same framework, server, core and bodies depends much less on it, so the
goal is set on the ratio. Both servers run on the server core and the generator on the
other. Every distinct body is first posted once and must answer 200; each endpoint then
gets a warm-up; the measured time is cut into rounds that alternate bare and dry-run, so a
machine that gets busier or quieter mid-run shifts both figures alike rather than the
ratio. Any response other than 200, in warm-up or measurement, fails the bench.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gateway_server import PROFILE_ENV
from bench.generators import LoadResult, choose_tool, run_load
from bench.procs import HOST, ROOT, BenchError, CpuPlan, OtherLoad, Server, running_server
from bench.profiling import Profile
from bench.stats import Latency
from bench.workload import Case

HTTP_GOAL_RATIO = 0.5
PROFILE_SECONDS = 5.0
Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class HttpSettings:
    loadgen: str = "auto"
    connections: int = 16
    duration: float = 10.0  # measured seconds per endpoint, split over the rounds
    warmup: float = 2.0
    rounds: int = 5
    bodies: int = 500
    runtime: str = "cel-expr-python"
    profile: bool = False  # also run a dry-run server under cProfile, after the measurement

    @property
    def slice_seconds(self) -> float:
        return self.duration / self.rounds


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    factory: str
    path: str


BARE = Target("bare", "bench.bare_server:app", "/bare")
DRY_RUN = Target("dry-run", "bench.gateway_server:app", "/v1/dry-run")
TARGETS = (BARE, DRY_RUN)  # measured in this order in every round


@dataclass(frozen=True, slots=True)
class Slice:
    """One round's measured run against one endpoint."""

    load: LoadResult
    server_cpu_seconds: float | None
    other_load: float | None


@dataclass(frozen=True, slots=True)
class TargetResult:
    """All rounds of one endpoint, added up."""

    target: Target
    slices: list[Slice]

    @property
    def requests(self) -> int:
        return sum(s.load.requests for s in self.slices)

    @property
    def seconds(self) -> float:
        return sum(s.load.seconds for s in self.slices)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.slices:
            total.update(s.load.errors)
        return dict(total)

    @property
    def latency(self) -> Latency:
        """Exact request-weighted mean; p50 and p99 of the worst round (they do not add up)."""
        mean = sum(s.load.latency.mean_us * s.load.requests for s in self.slices) / max(1, self.requests)
        return Latency(
            mean_us=mean,
            p50_us=max(s.load.latency.p50_us for s in self.slices),
            p99_us=max(s.load.latency.p99_us for s in self.slices),
        )

    @property
    def server_cpu_share(self) -> float | None:
        """CPU the server used while measured, as a fraction of its one core."""
        used = [s.server_cpu_seconds for s in self.slices]
        return None if None in used else sum(u for u in used if u is not None) / self.seconds

    @property
    def generator_cpu_share(self) -> float:
        return sum(s.load.generator_cpu_seconds for s in self.slices) / self.seconds

    @property
    def other_load(self) -> float | None:
        shares = [s.other_load for s in self.slices]
        if None in shares:
            return None
        return (
            sum((o or 0.0) * s.load.seconds for o, s in zip(shares, self.slices, strict=True)) / self.seconds
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.target.path,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.per_second, 1),
            **self.latency.as_dict(),
            "errors": self.errors,
            "server_cpu_percent": _percent(self.server_cpu_share),
            "generator_cpu_percent": _percent(self.generator_cpu_share),
            "other_load_percent": _percent(self.other_load),
            "rounds_requests_per_second": [round(s.load.per_second, 1) for s in self.slices],
        }


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


@dataclass(frozen=True, slots=True)
class HttpResult:
    tool: str
    settings: HttpSettings
    cpus: CpuPlan
    dry_run: TargetResult
    bare: TargetResult
    profile: Profile | None = None

    @property
    def ratio(self) -> float:
        return self.dry_run.per_second / self.bare.per_second

    @property
    def round_ratios(self) -> list[float]:
        return [
            d.load.per_second / b.load.per_second
            for d, b in zip(self.dry_run.slices, self.bare.slices, strict=True)
        ]

    @property
    def passed(self) -> bool:
        return self.ratio >= HTTP_GOAL_RATIO

    def warnings(self) -> list[str]:
        """Reasons to doubt that the figures measure the servers, not the generator or neighbours."""
        found = []
        for result in (self.bare, self.dry_run):
            name, server, other = result.target.name, result.server_cpu_share, result.other_load
            if result.generator_cpu_share > 0.9:
                found.append(f"{name}: the generator used {result.generator_cpu_share:.0%} of its core")
            if server is not None and server < 0.9:
                found.append(f"{name}: the server used only {server:.0%} of its core (not saturated)")
            if other is not None and other > 0.05:
                found.append(f"{name}: other processes used {other:.0%} of the measured cores")
        if self.cpus.server is not None and self.cpus.server == self.cpus.generator:
            found.append("server and generator share one core")
        return found

    def as_dict(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "tool": self.tool,
            "connections": settings.connections,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "rounds": settings.rounds,
            "distinct_bodies": settings.bodies,
            "cel_runtime": settings.runtime,
            "cpus": {"server": self.cpus.server, "generator": self.cpus.generator},
            "bare": self.bare.as_dict(),
            "dry_run": self.dry_run.as_dict(),
            "ratio": round(self.ratio, 3),
            "round_ratios": [round(r, 3) for r in self.round_ratios],
            "goal_ratio": HTTP_GOAL_RATIO,
            "pass": self.passed,
            "warnings": self.warnings(),
            "profile": self.profile.as_dict() if self.profile else None,
        }


@dataclass(frozen=True, slots=True)
class _Bench:
    """What every load run of one bench shares."""

    tool: str
    workdir: Path
    settings: HttpSettings
    cpus: CpuPlan

    @property
    def bodies_file(self) -> Path:
        return self.workdir / "bodies.jsonl"

    def server(
        self, target: Target, env: dict[str, str] | None = None
    ) -> contextlib.AbstractContextManager[Server]:
        env = {"NOTIGATE_CEL_RUNTIME": self.settings.runtime, **self._store_env(), **(env or {})}
        return running_server(
            target.name, target.factory, cpu=self.cpus.server, log_dir=self.workdir, env=env
        )

    def _store_env(self) -> dict[str, str]:
        """A migrated database of the bench's own, with an API key: the app refuses to start on
        an old or empty schema and every route takes a key; the bench must not depend on (or
        touch) the checkout's `var/`."""
        database = self.workdir / "gateway.db"
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "NOTIGATE_REDIS_PREFIX": f"bench-{self.workdir.name}",
        }
        if not database.exists():
            self._notigate(env, "db", "upgrade")
            key = self._notigate(
                env,
                "keys",
                "create",
                "bench",
                "--events",
                "*",
                "--admin",
                "--rate",
                "1000000",
                "--burst",
                "1000000",
            )
            (self.workdir / "api-key").write_text(key.strip())
        return env

    @staticmethod
    def _notigate(env: dict[str, str], *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(f"notigate {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    @property
    def headers(self) -> list[str]:
        """The API key, sent to the bare server too, so both parse the same request."""
        key = self.workdir / "api-key"
        return [f"Authorization: Bearer {key.read_text()}"] if key.exists() else []

    def load(self, server: Server, target: Target, duration: float) -> LoadResult:
        result = run_load(
            self.tool,
            port=server.port,
            path=target.path,
            bodies=self.bodies_file,
            connections=self.settings.connections,
            duration=duration,
            cpu=self.cpus.generator,
            headers=self.headers,
        )
        if result.error_count:
            raise BenchError(
                f"{target.name}: {result.error_count} failed requests {result.errors}; "
                f"server log:\n{server.log_tail()}"
            )
        return result

    def measure(self, server: Server, target: Target) -> Slice:
        other = OtherLoad(self.cpus.http_cores())
        own_start, server_start = time.process_time(), server.cpu_seconds()
        load = self.load(server, target, self.settings.slice_seconds)
        own, server_end = time.process_time() - own_start, server.cpu_seconds()
        if server_start is None or server_end is None:
            return Slice(load, None, None)
        server_cpu = server_end - server_start
        return Slice(load, server_cpu, other.share(own + server_cpu + load.generator_cpu_seconds))


def run_http(cases: Sequence[Case], settings: HttpSettings, cpus: CpuPlan, log: Log = print) -> HttpResult:
    """Measure the bare and the dry-run endpoint in alternating rounds, same bodies and tool."""
    tool = choose_tool(settings.loadgen)
    bodies = [case.dry_run_body() for case in cases[: settings.bodies]]
    with tempfile.TemporaryDirectory(prefix="notigate-bench-") as scratch:
        bench = _Bench(tool, Path(scratch), settings, cpus)
        bench.bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        with contextlib.ExitStack() as stack:
            servers = {target: stack.enter_context(_ready(bench, target, bodies, log)) for target in TARGETS}
            slices = _rounds(bench, servers, log)
        profile = _profile_dry_run(bench, log) if settings.profile else None
    return HttpResult(
        tool,
        settings,
        cpus,
        dry_run=TargetResult(DRY_RUN, slices[DRY_RUN]),
        bare=TargetResult(BARE, slices[BARE]),
        profile=profile,
    )


@contextlib.contextmanager
def _ready(bench: _Bench, target: Target, bodies: Sequence[bytes], log: Log) -> Iterator[Server]:
    """A started server that answered every body with 200 and has been warmed up."""
    log(f"  {target.name}: starting {target.factory} on {HOST}, cpu {bench.cpus.server}")
    with bench.server(target) as server:
        _check_every_body(server, target.path, bodies, bench.headers)
        log(f"  {target.name}: each of {len(bodies)} bodies answered 200; warm-up {bench.settings.warmup:g}s")
        bench.load(server, target, bench.settings.warmup)
        yield server


def _rounds(bench: _Bench, servers: dict[Target, Server], log: Log) -> dict[Target, list[Slice]]:
    """Alternate the endpoints round by round so drift in the machine hits both alike."""
    slices: dict[Target, list[Slice]] = {target: [] for target in servers}
    rounds = bench.settings.rounds
    for number in range(1, rounds + 1):
        log(f"  round {number}/{rounds}: {bench.settings.slice_seconds:g}s per endpoint, {bench.tool}")
        for target, server in servers.items():
            slices[target].append(bench.measure(server, target))
    return slices


def _profile_dry_run(bench: _Bench, log: Log) -> Profile:
    """A fresh dry-run server under cProfile, loaded like the measured one, then stopped."""
    dump = bench.workdir / "dry-run.prof"
    duration = PROFILE_SECONDS
    log(f"  profile: dry-run server under cProfile, {duration:g}s of load (not measured)")
    with bench.server(DRY_RUN, {PROFILE_ENV: str(dump)}) as server:
        bench.load(server, DRY_RUN, duration)
    if not dump.exists():
        raise BenchError(f"the profiled dry-run server wrote no profile:\n{server.log_tail()}")
    stats = pstats.Stats(str(dump), stream=io.StringIO())
    return Profile.from_stats(f"the dry-run server ({bench.settings.runtime}), {duration:g}s of load", stats)


def _check_every_body(server: Server, path: str, bodies: Sequence[bytes], headers: Sequence[str]) -> None:
    """Post each distinct body once: a body the server rejects fails here, named, not as a rate."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        for index, body in enumerate(bodies):
            extra = dict(h.split(": ", 1) for h in headers)
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **extra})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise BenchError(
                    f"{server.name}: body #{index} got {response.status} from {path}: "
                    f"{answer[:500].decode(errors='replace')}\nbody: {body[:500].decode(errors='replace')}"
                )
    finally:
        connection.close()
