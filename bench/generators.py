"""The two load generators behind one call: wrk when it is installed, else bench.loadgen.

Both run as a child process pinned to the generator's core, against 127.0.0.1 only, for a
fixed duration with a hard timeout, and come back as the same `LoadResult`.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import HOST, ROOT, BenchError, spawn
from bench.stats import Latency

WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"
TOOLS = ("wrk", "builtin")  # besides "auto"
_SLACK_SECONDS = 30.0  # beyond the duration before a generator is killed as hung
# wrk's own `status` count (codes > 399) is a subset of the script's non-200 count.
_WRK_ERRORS = {
    "unexpected": "unexpected status",
    "connect": "connect error",
    "read": "read error",
    "write": "write error",
    "timeout": "timeout",
}


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measured run: throughput, latency, every non-200 or socket error, CPU used."""

    requests: int
    seconds: float
    errors: dict[str, int]
    latency: Latency
    generator_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def choose_tool(requested: str) -> str:
    """`auto` picks wrk when it is on PATH: written in C, it is the cheaper generator."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if requested == "wrk" and not shutil.which("wrk"):
        raise BenchError("--loadgen wrk: wrk is not on PATH (apt-get install wrk), or use --loadgen builtin")
    return requested


def run_load(
    tool: str,
    *,
    port: int,
    path: str,
    bodies: Path,
    connections: int,
    duration: float,
    cpu: int | None,
    expect: int = 200,
    headers: Sequence[str] = (),
) -> LoadResult:
    """`expect` is the status of a success; every other answer is counted as an error."""
    argv = (
        _wrk_argv(port, path, bodies, connections, duration, expect, headers)
        if tool == "wrk"
        else _builtin_argv(port, path, bodies, connections, duration, expect, headers)
    )
    output, cpu_used = _run_child(argv, cpu, timeout=duration + _SLACK_SECONDS)
    return _parse_wrk(output, cpu_used) if tool == "wrk" else _parse_builtin(output, cpu_used)


def _wrk_argv(
    port: int, path: str, bodies: Path, connections: int, duration: float, expect: int, headers: Sequence[str]
) -> list[str]:
    return [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--script",
        str(WRK_SCRIPT),
        f"http://{HOST}:{port}{path}",
        "--",
        str(bodies),
        str(expect),
        *headers,
    ]


def _builtin_argv(
    port: int, path: str, bodies: Path, connections: int, duration: float, expect: int, headers: Sequence[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--host",
        HOST,
        "--port",
        str(port),
        "--path",
        path,
        "--bodies",
        str(bodies),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--expect",
        str(expect),
        *(part for header in headers for part in ("--header", header)),
    ]


def _run_child(argv: list[str], cpu: int | None, timeout: float) -> tuple[str, float]:
    """Run a generator to completion; its stdout and the CPU seconds it used.

    CPU comes from RUSAGE_CHILDREN around the run: the servers are still running, so the
    generator is the only child reaped in between.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = spawn(argv, cpu=cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE, new_session=False)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"{argv[0]} did not finish within {timeout:g}s") from None
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C) while waiting
            process.kill()
            process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:3])} exited with {process.returncode}:\n{err.decode(errors='replace')}"
        )
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.decode(), used


def _parse_wrk(output: str, cpu_used: float) -> LoadResult:
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no WRK_JSON line; its output was:\n{output}")
    raw: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    errors = {label: int(raw[key]) for key, label in _WRK_ERRORS.items() if raw[key]}
    latency = Latency(mean_us=raw["mean_us"], p50_us=raw["p50_us"], p99_us=raw["p99_us"])
    return LoadResult(raw["requests"], raw["duration_us"] / 1e6, errors, latency, cpu_used)


def _parse_builtin(output: str, cpu_used: float) -> LoadResult:
    raw: dict[str, Any] = json.loads(output)
    latency = Latency(**raw["latency_us"])
    return LoadResult(raw["requests"], raw["seconds"], raw["errors"], latency, cpu_used)
