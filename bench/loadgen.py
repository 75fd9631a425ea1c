"""A closed-loop HTTP/1.1 load generator for when wrk is not installed.

    python -m bench.loadgen --port 8000 --path /v1/dry-run --bodies bodies.jsonl \\
        --connections 16 --duration 10

N keep-alive TCP connections each send one pre-encoded POST (cycling through the bodies
file, one JSON document per line), read the whole response (status line, headers and
Content-Length body) and only then send the next; any status but `--expect` (200) is
counted as an error. It speaks just enough HTTP for that and
fails any response it cannot frame, so it cannot count half a response as a success.

It runs on asyncio's Protocol API and uvloop to stay far cheaper per request than the
Python server it drives; the bench checks that by reporting the CPU both used. Prints one
JSON object: requests, seconds, errors by kind, latency (µs) and its own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from bench.stats import Latency

_CONTENT_LENGTH = b"\r\ncontent-length:"


def build_requests(
    host: str, port: int, path: str, bodies: Sequence[bytes], headers: Sequence[str] = ()
) -> list[bytes]:
    """Every request fully encoded up front: sending one is a single write."""
    extra = "".join(f"{header}\r\n" for header in headers)
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]


class _Run:
    """State shared by every connection of one run."""

    def __init__(self, requests: Sequence[bytes], expect: int) -> None:
        self.requests = requests
        self.expect = expect
        self.latencies_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self.stopping = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: _Run, first: int) -> None:
        self.run = run
        self.index = first
        self.buffer = bytearray()
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self) -> None:
        assert self.transport is not None
        if self.run.stopping:
            self.transport.close()
            return
        requests = self.run.requests
        request = requests[self.index % len(requests)]
        self.index += 1
        self.sent_at = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        framed = _frame(self.buffer)
        if framed is None:
            return
        status, size = framed
        if status < 0:
            self.fail("unframeable response (no Content-Length)")
            return
        if len(self.buffer) < size:
            return
        if not self.run.stopping:
            self.run.latencies_ns.append(time.perf_counter_ns() - self.sent_at)
            if status != self.run.expect:
                self.run.errors[f"status {status}"] += 1
        del self.buffer[:size]
        if self.buffer:
            self.fail("bytes after the response (the server answered twice?)")
            return
        self.send()

    def fail(self, why: str) -> None:
        self.run.errors[why] += 1
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.stopping:
            self.run.errors["connection lost" + (f": {exc}" if exc else "")] += 1
        if not self.closed.done():
            self.closed.set_result(None)


def _frame(buffer: bytearray) -> tuple[int, int] | None:
    """(status, total response size) once the head is in; None until then; status -1 if unframeable."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).lower()
    status = int(head[9:12])
    at = head.find(_CONTENT_LENGTH)
    if at < 0:
        return -1, 0
    start = at + len(_CONTENT_LENGTH)
    end = head.find(b"\r\n", start)
    length = int(head[start : end if end >= 0 else len(head)])
    return status, head_end + 4 + length


async def run(
    host: str, port: int, requests: Sequence[bytes], connections: int, duration: float, expect: int = 200
) -> dict[str, Any]:
    """Drive `connections` connections for `duration` seconds; the figures of the run."""
    loop = asyncio.get_running_loop()
    state = _Run(requests, expect)
    clients: list[_Connection] = []
    for n in range(connections):
        first = n * len(requests) // connections  # connections start at different bodies
        _, client = await loop.create_connection(functools.partial(_Connection, state, first), host, port)
        clients.append(client)
    cpu_start, started = time.process_time(), time.perf_counter()
    for client in clients:
        client.send()
    await asyncio.sleep(duration)
    state.stopping = True
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_start
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), timeout=5)
    return {
        "requests": len(state.latencies_ns),
        "seconds": elapsed,
        "errors": dict(state.errors),
        "latency_us": Latency.from_ns(state.latencies_ns).as_dict(),
        "cpu_seconds": cpu,
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--expect", type=int, default=200, help="the status of a success (default 200)")
    parser.add_argument("--header", action="append", default=[], help="an extra header, 'Name: value'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        raise SystemExit(f"loadgen: {args.host} is not a loopback address; this tool only loads 127.0.0.0/8")
    bodies = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    requests = build_requests(args.host, args.port, args.path, bodies, args.header)
    coroutine = run(args.host, args.port, requests, args.connections, args.duration, args.expect)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
