"""The yardstick of the delivery benchmark: bare client POSTs to the same local endpoint.

    python -m bench.delivery_bare --url http://127.0.0.1:8123/hook --sample sample.json \\
        --requests 5000 --concurrency 50 --client aiohttp

Sends `--requests` POSTs of the very body and headers the webhook adapter sent (captured
by the endpoint, see `bench/delivery_endpoint.py`), from `--concurrency` tasks sharing one
client, on the same stock asyncio loop the worker runs: `--client httpx` (one
`httpx.AsyncClient`, default pool limits, no redirects) or `aiohttp` (one
`aiohttp.ClientSession`, default connector). What the worker spends per delivery beyond the
faster of the two is the gateway's own work.

Prints one JSON object: requests, failures by kind, seconds, the CPU seconds this process
used while posting (not while starting), and latency (µs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.stats import Latency

# The headers the webhook adapter sets itself; httpx adds host, accept, content-length etc.
ADAPTER_HEADERS = ("content-type", "idempotency-key", "notigate-signature", "user-agent")


def sample_request(sample: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The captured body, and the adapter's own headers from the captured head."""
    body = base64.b64decode(sample["body"])
    headers = {}
    for line in sample["head"].split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ADAPTER_HEADERS:
            headers[name.strip().lower()] = value.strip()
    return body, headers


Post = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


@asynccontextmanager
async def httpx_client(request_timeout: float) -> AsyncIterator[Post]:
    client = httpx.AsyncClient(timeout=request_timeout, follow_redirects=False)

    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        return (await client.post(url, content=body, headers=headers)).status_code

    try:
        yield post
    finally:
        await client.aclose()


@asynccontextmanager
async def aiohttp_client(request_timeout: float) -> AsyncIterator[Post]:
    timeout = aiohttp.ClientTimeout(sock_connect=request_timeout, sock_read=request_timeout)
    session = aiohttp.ClientSession(timeout=timeout)

    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status

    try:
        yield post
    finally:
        await session.close()


CLIENTS = {"httpx": httpx_client, "aiohttp": aiohttp_client}


async def post_all(
    url: str,
    body: bytes,
    headers: dict[str, str],
    requests: int,
    concurrency: int,
    request_timeout: float,
    client: str = "httpx",
) -> dict[str, Any]:
    latencies: list[int] = []
    failures: Counter[str] = Counter()
    todo = iter(range(requests))
    async with CLIENTS[client](request_timeout) as post:

        async def lane() -> None:
            for _ in todo:  # one iterator shared by every lane: `requests` POSTs in all
                started = time.perf_counter_ns()
                try:
                    status = await post(url, body, headers)
                except (httpx.HTTPError, aiohttp.ClientError, TimeoutError) as exc:
                    failures[type(exc).__name__] += 1
                    continue
                if status != 200:
                    failures[f"http_{status}"] += 1
                    continue
                latencies.append(time.perf_counter_ns() - started)

        cpu_start, wall_start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        seconds = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
    return {
        "client": client,
        "requests": len(latencies),
        "failures": dict(failures),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "latency": Latency.from_ns(latencies).as_dict(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--sample", type=Path, required=True, help="JSON from the endpoint's GET /sample")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="httpx")
    args = parser.parse_args(argv)
    body, headers = sample_request(json.loads(args.sample.read_text()))
    result = asyncio.run(
        post_all(args.url, body, headers, args.requests, args.concurrency, args.timeout, args.client)
    )
    result["body_bytes"] = len(body)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
