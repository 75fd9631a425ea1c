"""The delivery benchmark's measurements; `bench/delivery.py` runs them and prints the report.

- `Endpoint`: the local provider (`bench/delivery_endpoint.py`) in its own process.
- `run_worker`: one `notigate worker` draining a preloaded backlog of N email deliveries
  through the webhook adapter to the endpoint. Before the backlog exists, a first worker
  is started on the same stack and stopped once every queue has polled Redis: its CPU then
  is the start-up cost, which is not billed to deliveries, and its CPU over the next
  seconds is what an idle worker burns (polling three queues, the relay).
- `run_bare`: `bench/delivery_bare.py` posting the adapter's captured request N times, with
  httpx or aiohttp.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.delivery_profile import Breakdown, breakdown
from bench.delivery_stack import CHANNEL, DeliveryStack
from bench.procs import HOST, BenchError, CpuPlan, OtherLoad, Server, cpu_seconds, running_server, spawn, stop
from bench.stats import percentile

Log = Callable[[str], None]
QUEUES = ("bulk", "critical", "standard")  # the shipped tiers' queues: one worker serves all


class Endpoint:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = f"http://{HOST}:{server.port}/hook"
        self._connection = http.client.HTTPConnection(HOST, server.port, timeout=10)

    def _get(self, path: str) -> Any:
        self._connection.request("GET", path)
        return json.loads(self._connection.getresponse().read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/stats")
        return result

    def sample(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._get("/sample")
        return result

    def reset(self) -> None:
        self._get("/reset")


@contextlib.contextmanager
def endpoint(cpu: int | None, log_dir: Path) -> Iterator[Endpoint]:
    argv = [sys.executable, "-m", "bench.delivery_endpoint"]
    with running_server("endpoint", argv, cpu=cpu, log_dir=log_dir) as server:
        yield Endpoint(server)


@dataclass
class WorkerRun:
    label: str
    deliveries: int
    seconds: float  # first POST to every delivery `delivered` in the store
    from_spawn_seconds: float  # worker started to every delivery `delivered`
    per_second: float
    startup_cpu_s: float  # the probe worker's CPU when every queue had polled
    idle_cpu_share: float  # an idle worker's CPU, as a share of one core
    total_cpu_s: float  # the measured worker's CPU when the last delivery was stored
    cpu_at_first_post_s: float | None
    cpu_us_per_delivery: float  # (total - start-up) / deliveries
    net_cpu_us_per_delivery: float  # the same less what an idle worker would have burnt meanwhile
    other_threads_cpu_us_per_delivery: float  # aiosqlite's threads (SQLite work), whole life
    send_p50_ms: float
    send_p99_ms: float
    endpoint_posts: int
    endpoint_cpu_share: float | None
    redis_cpu_us_per_delivery: float | None
    other_load: float | None
    profile: dict[str, Any] | None = field(default=None)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a live process (Linux /proc)."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


class CpuSampler:
    """(epoch time, CPU seconds) of a process every `interval`, to read CPU at any moment after."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            used = cpu_seconds(self.pid)
            if used is not None:
                self.samples.append((time.time(), used))
            self._stop.wait(self.interval)

    def at(self, when: float) -> float | None:
        """CPU at the last sample taken at or before `when`."""
        before = [cpu for at, cpu in self.samples if at <= when]
        return before[-1] if before else None


def _worker_log(stack: DeliveryStack, name: str) -> str:
    try:
        return "\n".join((stack.root / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"


def _spawn_worker(
    stack: DeliveryStack, name: str, cpu: int | None, argv: list[str]
) -> subprocess.Popen[bytes]:
    with (stack.root / f"{name}.log").open("wb") as log:
        return spawn(argv, cpu=cpu, stdout=log, stderr=subprocess.STDOUT, new_session=True, env=stack.env)


def probe_startup(stack: DeliveryStack, cpu: int | None, idle_seconds: float) -> tuple[float, float]:
    """(CPU when every queue first polled Redis, idle CPU share after) of a worker with no work."""
    client = redis.Redis.from_url(stack.redis.url)
    keys = [f"bench:queue:{q}:health-check" for q in QUEUES]
    process = _spawn_worker(stack, "worker-probe", cpu, [sys.executable, "-m", "gateway", "worker"])
    try:
        deadline = time.monotonic() + 60
        while int(client.exists(*keys)) < len(keys):  # type: ignore[arg-type]
            if process.poll() is not None:
                tail = _worker_log(stack, "worker-probe")
                raise BenchError(f"the worker exited with {process.returncode} at start:\n{tail}")
            if time.monotonic() > deadline:
                raise BenchError("the worker did not poll its queues within 60 s")
            time.sleep(0.01)
        startup = cpu_seconds(process.pid)
        time.sleep(idle_seconds)
        idle = cpu_seconds(process.pid)
    finally:
        stop(process)
        client.close()
    if startup is None or idle is None:
        raise BenchError("cannot read the worker's CPU time from /proc")
    return startup, (idle - startup) / idle_seconds


def run_worker(
    stack: DeliveryStack,
    point: Endpoint,
    cpus: CpuPlan,
    *,
    label: str,
    startup_cpu: float,
    idle_share: float,
    profile_to: Path | None = None,
    timeout: float = 600.0,
) -> WorkerRun:
    """Start one worker on the preloaded stack; time it until the store shows every delivery sent."""
    n = stack.deliveries
    point.reset()
    if profile_to is None:
        argv = [sys.executable, "-m", "gateway", "worker"]
    else:
        argv = [sys.executable, "-m", "bench.delivery_profiled", str(profile_to)]
    redis_pid = stack.redis.process.pid if stack.redis.process else None
    redis_before = cpu_seconds(redis_pid) if redis_pid else None
    endpoint_before = point.stats()["cpu"]
    bench_before = time.process_time()
    other = OtherLoad(cpus.available)
    spawned = time.time()
    name = f"worker-{label}"
    process = _spawn_worker(stack, name, cpus.server, argv)
    try:
        with CpuSampler(process.pid) as sampler:
            deadline = time.monotonic() + timeout
            next_check = 0.0
            while True:
                if process.poll() is not None:
                    raise BenchError(
                        f"the worker exited with {process.returncode}:\n{_worker_log(stack, name)}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{stack.delivered()} of {n} deliveries were delivered within {timeout:g} s"
                    )
                sent = n if stack.dev else point.stats()["posts"]  # the dev profile posts nothing
                if sent >= n and stack.delivered() >= n:
                    done = time.time()
                    total = cpu_seconds(process.pid)
                    threads = thread_cpu(process.pid)
                    break
                if time.monotonic() >= next_check:  # a failed or retried delivery voids the figures
                    _check_statuses(stack)
                    next_check = time.monotonic() + 1.0
                time.sleep(0.02 if sent >= n else 0.1)
        stats = point.stats()
        redis_after = cpu_seconds(redis_pid) if redis_pid else None
        if total is None:
            raise BenchError("cannot read the worker's CPU time from /proc")
        own = (
            (total - startup_cpu)
            + (stats["cpu"] - endpoint_before)
            + ((redis_after or 0.0) - (redis_before or 0.0))
            + (time.process_time() - bench_before)
        )
        other_share = other.share(own)
    finally:
        if profile_to is None:
            stop(process)
        else:  # let it shut down and write its profile
            stop(process, grace=60.0)
    if stats["posts"] != (0 if stack.dev else n):
        raise BenchError(f"the endpoint received {stats['posts']} POSTs for {n} deliveries")
    _check_statuses(stack, final=True)
    first = stack.first_written() if stack.dev else stats["first"]
    durations = stack.send_durations_ms()
    others = sum(cpu for tid, cpu in threads.items() if tid != process.pid)
    billed = total - startup_cpu
    seconds = done - first
    result = WorkerRun(
        label=label,
        deliveries=n,
        seconds=seconds,
        from_spawn_seconds=done - spawned,
        per_second=n / seconds,
        startup_cpu_s=startup_cpu,
        idle_cpu_share=idle_share,
        total_cpu_s=total,
        cpu_at_first_post_s=sampler.at(first),
        cpu_us_per_delivery=billed / n * 1e6,
        net_cpu_us_per_delivery=(billed - idle_share * (done - spawned)) / n * 1e6,
        other_threads_cpu_us_per_delivery=others / n * 1e6,
        send_p50_ms=percentile(durations, 50),
        send_p99_ms=percentile(durations, 99),
        endpoint_posts=stats["posts"],
        endpoint_cpu_share=(stats["cpu"] - endpoint_before) / (done - spawned),
        redis_cpu_us_per_delivery=(redis_after - redis_before) / n * 1e6
        if redis_after is not None and redis_before is not None
        else None,
        other_load=other_share,
    )
    return result


def _check_statuses(stack: DeliveryStack, final: bool = False) -> None:
    counts = {key: c for key, c in stack.statuses().items() if key[1] != "suppressed"}
    allowed = {"delivered"} if final else {"pending", "sending", "delivered"}
    wrong = {key: c for key, c in counts.items() if key[1] not in allowed or key[0] != CHANNEL}
    if wrong:
        raise BenchError(f"deliveries that did not go as they should: {wrong}; all: {counts}")


def profile_breakdown(stats_file: Path, deliveries: int) -> Breakdown:
    if not stats_file.exists():
        raise BenchError(f"the profiled worker wrote no profile to {stats_file}")
    return breakdown(stats_file, f"notigate worker, {deliveries:,} deliveries (event-loop thread CPU)")


@dataclass
class BareRun:
    client: str  # httpx or aiohttp
    requests: int
    concurrency: int
    body_bytes: int
    seconds: float
    per_second: float
    cpu_us_per_post: float
    p50_ms: float
    p99_ms: float
    endpoint_posts: int
    failures: dict[str, int]
    other_load: float | None


def run_bare(
    point: Endpoint, cpus: CpuPlan, folder: Path, *, requests: int, concurrency: int, client: str
) -> BareRun:
    """Post the adapter's captured request (`sample.json` in `folder`) `requests` times with `client`."""
    point.reset()
    endpoint_before = point.stats()["cpu"]
    bench_before = time.process_time()
    other = OtherLoad(cpus.available)
    out = folder / "bare.json"
    with out.open("wb") as sink, (folder / "bare.log").open("wb") as log:
        process = spawn(
            [
                sys.executable,
                "-m",
                "bench.delivery_bare",
                "--url",
                point.url,
                "--sample",
                str(folder / "sample.json"),
                "--requests",
                str(requests),
                "--concurrency",
                str(concurrency),
                "--client",
                client,
            ],
            cpu=cpus.server,
            stdout=sink,
            stderr=log,
            new_session=True,
        )
        try:
            code = process.wait(600)
        finally:
            stop(process)
    if code != 0:
        raise BenchError(f"the bare client failed ({code}): {(folder / 'bare.log').read_text()[-500:]}")
    data = json.loads(out.read_text())
    stats = point.stats()
    posts = stats["posts"]
    other_share = other.share(
        data["cpu_seconds"] + stats["cpu"] - endpoint_before + time.process_time() - bench_before
    )
    if data["failures"] or data["requests"] != requests or posts != requests:
        raise BenchError(
            f"bare client: {data['requests']} of {requests} POSTs answered 200, failures {data['failures']}, "
            f"endpoint counted {posts}"
        )
    return BareRun(
        client=client,
        requests=data["requests"],
        concurrency=concurrency,
        body_bytes=data["body_bytes"],
        seconds=data["seconds"],
        per_second=data["requests"] / data["seconds"],
        cpu_us_per_post=data["cpu_seconds"] / data["requests"] * 1e6,
        p50_ms=data["latency"]["p50_us"] / 1000,
        p99_ms=data["latency"]["p99_us"] / 1000,
        endpoint_posts=posts,
        failures=data["failures"],
        other_load=other_share,
    )


def save_sample(point: Endpoint, folder: Path) -> int:
    """Keep the first request the adapter sent, for the bare client; returns its body size."""
    sample = point.sample()
    if sample is None:
        raise BenchError("the endpoint captured no request from the worker")
    (folder / "sample.json").write_text(json.dumps(sample))
    return len(base64.b64decode(sample["body"]))


def as_json(result: Any) -> dict[str, Any]:
    return asdict(result)
