"""Child processes of the HTTP benchmark: pinned to a core, bounded, never left behind.

The machine has two cores; the server under test gets one and the load generator the
other, so neither steals cycles from the other and the figures measure the server. A
child is pinned before it execs (in `preexec_fn`), because a program like wrk starts its
threads at once and threads inherit the affinity they were born with.

Servers run in their own session so a Ctrl-C in the terminal reaches only the bench,
which then stops them from its `finally` blocks; on Linux they also get SIGKILL if the
bench itself dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The benchmark could not produce trustworthy figures; the message says why."""


# -- cores ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which core each party runs on; None where pinning is unavailable."""

    available: tuple[int, ...]
    engine: int | None
    server: int | None
    generator: int | None

    @property
    def note(self) -> str:
        if self.server is None:
            return "unpinned: os.sched_setaffinity is not available here"
        if self.server == self.generator:
            return f"server and load generator share cpu {self.server}: HTTP figures are pessimistic"
        return f"engine on cpu {self.engine}; server on cpu {self.server}, generator on cpu {self.generator}"

    def engine_cores(self) -> tuple[int, ...]:
        return self.available if self.engine is None else (self.engine,)

    def http_cores(self) -> tuple[int, ...]:
        if self.server is None or self.generator is None:
            return self.available
        return tuple(sorted({self.server, self.generator}))


def plan_cpus() -> CpuPlan:
    """The first allowed core for the engine and the server, the last for the generator."""
    if not hasattr(os, "sched_getaffinity"):
        return CpuPlan(tuple(range(os.cpu_count() or 1)), None, None, None)
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    return CpuPlan(cpus, engine=cpus[0], server=cpus[0], generator=cpus[-1])


def pin_self(cpu: int | None) -> None:
    """Pin the calling process (all its future threads too) to `cpu`, where supported."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _child_setup(cpu: int | None) -> Callable[[], None]:
    """What a child runs between fork and exec: pin it, and tie its life to ours."""

    def setup() -> None:
        pin_self(cpu)
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    cpu: int | None,
    stdout: int | IO[bytes],
    stderr: int | IO[bytes],
    new_session: bool,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in the project root, pinned to `cpu`; `env` adds to our environment."""
    return subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_child_setup(cpu),
        start_new_session=new_session,
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a live process has used so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU of a live process and all its descendants (a server with worker processes)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return own
    return own + sum(tree_cpu_seconds(int(child)) or 0.0 for child in children)


def busy_seconds(cpus: Iterable[int]) -> float | None:
    """Time the given cores spent running processes since boot, whoever's (/proc/stat), else None.

    Steal time counts as busy: a hypervisor that takes the core away disturbs us as much as
    a neighbour process does. Interrupt and softirq time do not: on loopback that is mostly
    our own packets, which no process is charged for.
    """
    wanted = {f"cpu{n}" for n in cpus}
    ticks = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in values[:8])
            ticks += user + nice + system + steal
    return ticks / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much of our cores' capacity something other than the benchmark used meanwhile.

    A benchmark on a shared machine (another engineer's test run, a CI neighbour) silently
    measures less than the code can do; this turns that into a figure the report can show.
    """

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = sorted(set(cpus))
        self.busy_start = busy_seconds(self.cpus)
        self.wall_start = time.monotonic()

    def share(self, own_cpu_seconds: float) -> float | None:
        """Other processes' busy time over the cores' capacity since construction."""
        busy_end = busy_seconds(self.cpus)
        if self.busy_start is None or busy_end is None:
            return None
        capacity = (time.monotonic() - self.wall_start) * len(self.cpus)
        return max(0.0, busy_end - self.busy_start - own_cpu_seconds) / capacity


# -- servers ----------------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel just handed out on loopback; uvicorn binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def uvicorn_argv(factory: str, port: int) -> list[str]:
    """One worker, uvloop and httptools, no access log: the fastest stock uvicorn setup."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        factory,
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@contextlib.contextmanager
def running_server(
    name: str,
    factory: str | Sequence[str],
    *,
    cpu: int | None,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[Server]:
    """Start `factory` under uvicorn, wait until it accepts connections, always stop it.

    `factory` may instead be a whole command line, to which `--port PORT` is added.
    """
    port = free_port()
    log = log_dir / f"{name}.log"
    argv = uvicorn_argv(factory, port) if isinstance(factory, str) else [*factory, "--port", str(port)]
    with log.open("wb") as sink:
        process = spawn(
            argv,
            cpu=cpu,
            stdout=sink,
            stderr=subprocess.STDOUT,
            new_session=True,
            env=env,
        )
    server = Server(name, port, process, log)
    try:
        _wait_until_listening(server, startup_timeout)
        yield server
    finally:
        stop(process)


def _wait_until_listening(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"the {server.name} server exited with {server.process.returncode} before serving:\n"
                f"{server.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"the {server.name} server did not listen within {timeout:g}s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
