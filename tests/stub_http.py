"""A real HTTP/1.1 server on 127.0.0.1 with scripted answers, recording every request.

Tests point real clients (httpx, the providers' SDKs) at it to see exactly what went over
the wire and to make the "provider" answer 200, 429 with Retry-After, 500, hang past a
timeout, or close the connection without answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # answer late (to trip client timeouts)
    hang_up: bool = False  # close the connection without answering
    raw: bytes | None = None  # send exactly these bytes (a malformed answer)


Script = Callable[[Request], Reply]


class StubServer:
    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda request: Reply())
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StubServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def reply(self, *replies: Reply) -> None:
        """Answer with these, in turn, then keep answering with the last one."""
        queue = list(replies)

        def script(request: Request) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.script = script

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read(reader)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.script(request)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.hang_up:
                    return
                writer.write(reply.raw if reply.raw is not None else _encode(reply))
                if reply.raw is not None:
                    await writer.drain()
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _read(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return Request(method, path, headers, body)


def _encode(reply: Reply) -> bytes:
    body = reply.body
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        reply.headers.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in reply.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@contextlib.asynccontextmanager
async def stub_server(script: Script | None = None) -> AsyncIterator[StubServer]:
    server = await StubServer(script).start()
    try:
        yield server
    finally:
        await server.stop()
