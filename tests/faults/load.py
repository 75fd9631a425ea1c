"""An open-loop load of unique intents against a real API, retried as a careful producer would.

Intent n is due at start + n / rate, whatever the answers so far (a slow or dead gateway
does not slow the offered load down). Each carries its own idempotency key, and a POST
that gets no answer (connection refused or dropped, timeout) or a 5xx is retried with the
same key until it is answered: a 202 or a 200 means accepted, and the gateway promises that
the key then names exactly one notification, delivered once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    url: Callable[[], str]  # the API's address, read at each try (it may move)
    token: str
    users: int
    rate: float  # intents offered per second
    seconds: float
    give_up_after: float = 90.0  # per intent: past this, a still-unanswered POST fails the drill
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> notification id
    retries: int = 0
    refused: list[str] = field(default_factory=list)  # 4xx answers: a drill expects none

    def intent(self, n: int) -> dict[str, object]:
        return {
            "event": "order.shipped",
            "user_id": f"u_{n % self.users}",
            "data": {"order_id": f"D-{n}", "carrier": "UPS"},
            "idempotency_key": f"drill-{n}",
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(self.rate * self.seconds)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        async with httpx.AsyncClient(
            timeout=10.0, limits=limits, headers={"authorization": f"Bearer {self.token}"}
        ) as http:
            sends = []
            for n in range(total):
                delay = start + n / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sends.append(asyncio.create_task(self._send(http, n)))
            await asyncio.gather(*sends)

    async def _send(self, http: httpx.AsyncClient, n: int) -> None:
        body = self.intent(n)
        deadline = asyncio.get_running_loop().time() + self.give_up_after
        while True:
            try:
                response = await http.post(f"{self.url()}/v1/intents", json=body)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code < 500:
                if response.status_code in (200, 202):
                    self.accepted[str(body["idempotency_key"])] = response.json()["notification_id"]
                else:
                    self.refused.append(f"{response.status_code} {response.text[:200]}")
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"intent {n} was never answered within {self.give_up_after}s")
            self.retries += 1
            await asyncio.sleep(0.2)
