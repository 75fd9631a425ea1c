"""The local "provider" of the delivery benchmark: answers every POST with 200 `{}`, fast.

    python -m bench.delivery_endpoint --port 8123

A bare HTTP/1.1 server on asyncio's Protocol API (uvloop when installed), keep-alive,
Content-Length bodies only, no framework: it must cost far less per request than either
client it serves, so that both the worker and the bare httpx client measure their own
work, not the endpoint's. It runs in its own process on its own core.

Besides the POSTs it serves two GETs for the bench:
- `GET /stats`: `{"posts", "bytes", "first", "last", "cpu"}` since the last reset (wall
  times as epoch seconds of the first and last POST; `cpu` is this process's CPU seconds);
- `GET /sample`: the head and body of the first POST since the last reset, so the bare
  client can send exactly what the webhook adapter sent;
and `GET /reset`, which zeroes the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections.abc import Sequence
from typing import Any

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.posts = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self.sample: tuple[bytes, bytes] | None = None

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "posts": self.posts,
                "bytes": self.bytes,
                "first": self.first,
                "last": self.last,
                "cpu": time.process_time(),
            }
        ).encode()

    def sample_json(self) -> bytes:
        if self.sample is None:
            return b"null"
        head, body = self.sample
        return json.dumps({"head": head.decode("latin-1"), "body": base64.b64encode(body).decode()}).encode()


class Endpoint(asyncio.Protocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = _content_length(head)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        if self.transport is None:
            return
        counters = self.counters
        if head.startswith(b"POST "):
            now = time.time()
            counters.posts += 1
            counters.bytes += len(body)
            counters.last = now
            if counters.first is None:
                counters.first = now
                counters.sample = (head, body)
            self.transport.write(_OK)
            return
        path = head.split(b" ", 2)[1] if b" " in head else b""
        if path == b"/reset":
            counters.reset()
            payload = b"{}"
        elif path == b"/sample":
            payload = counters.sample_json()
        else:
            payload = counters.as_json()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    start = at + len(b"\r\ncontent-length:")
    stop = lower.find(b"\r\n", start)
    return int(lower[start : stop if stop >= 0 else None])


async def serve(host: str, port: int) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Endpoint(counters), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
