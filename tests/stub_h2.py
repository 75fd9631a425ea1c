"""A real HTTP/2 server (the `h2` protocol library) on 127.0.0.1, cleartext with prior
knowledge (h2c), with scripted answers: what `stub_http` is for HTTP/1.1 providers, for
providers that speak only HTTP/2 (APNs). Same `Request`, `Reply` and script, so a wire
module serves both harnesses; `Reply.raw` sends bytes that are no HTTP/2 frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events

from tests.stub_http import Reply, Request, Script


class H2StubServer:
    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda request: Reply())
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> H2StubServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        connection = h2.connection.H2Connection(config=config)
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65535):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers}, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        task = asyncio.create_task(
                            self._answer(connection, writer, event.stream_id, headers, bytes(body))
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                writer.write(connection.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(
        self,
        connection: h2.connection.H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        request = Request(
            headers.pop(":method", ""),
            headers.pop(":path", ""),
            {k: v for k, v in headers.items() if not k.startswith(":")},
            body,
        )
        self.requests.append(request)
        reply = self.script(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hang_up or reply.raw is not None:
            writer.write(reply.raw or b"")
            writer.close()
            return
        payload = (
            reply.body
            if isinstance(reply.body, bytes)
            else reply.body.encode()
            if isinstance(reply.body, str)
            else json.dumps(reply.body).encode()
        )
        response = [(":status", str(reply.status)), *((k.lower(), v) for k, v in reply.headers.items())]
        connection.send_headers(stream_id, response, end_stream=not payload)
        if payload:
            connection.send_data(stream_id, payload, end_stream=True)
        writer.write(connection.data_to_send())
        with contextlib.suppress(ConnectionError):
            await writer.drain()


@contextlib.asynccontextmanager
async def h2_stub_server(script: Script | None = None) -> AsyncIterator[H2StubServer]:
    server = await H2StubServer(script).start()
    try:
        yield server
    finally:
        await server.stop()
