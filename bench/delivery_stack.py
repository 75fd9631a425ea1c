"""A private gateway for the delivery benchmark, with a backlog of email deliveries in its store.

Built like the intake benchmark's stack (`bench/intake_stack.py`: its own folder, a private
Redis, a SQLite database migrated with `notigate db upgrade`, users loaded with `notigate
users import`), with two differences:

- the live provider profile, and a providers file of its own (`NOTIGATE_PROVIDERS`) that
  routes every channel to a `webhook` provider posting to the bench's local endpoint, signed
  with `BENCH_WEBHOOK_SECRET`. The shipped policies and templates are used as they are: only
  who delivers changes. With `guard=True` the email provider also gets a rate limit and a
  circuit breaker that never refuse, so the run pays for the shared Redis guard;
- users with an email address only and no quiet hours, each sent one `order.shipped`
  intent restricted to `channels: ["email"]` (the example data of its template), so every
  intent makes exactly one delivery, due now. `preload()` accepts them in-process through
  the gateway's own intake (as `POST /v1/intents/bulk` would) while no worker runs, and
  checks that the store holds exactly that.

The bundle is a private copy of the shipped `policies/` without `policies/tests/`: those
suites pin the shipped providers (twilio, sendgrid, ...), which this providers file
replaces. Templates and schemas are the shipped ones (NOTIGATE_TEMPLATES, NOTIGATE_SCHEMAS).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench.intake_stack import Stack
from bench.procs import ROOT, BenchError
from gateway.model import Intent
from gateway.redis_server import RedisServerError

CHANNEL = "email"
EVENT = "order.shipped"
PROVIDER = "bench-email"
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
PRELOAD_CHUNK = 500
# Far above anything one worker can send, and the shipped breaker's shape: admitted every time.
GUARD_LIMITS = (
    "    rate_limit: {rate: 1000000, per: 1s, burst: 1000000}\n"
    "    circuit_breaker: {failure_rate: 0.5, min_calls: 20, window: 60s, open_for: 30s}\n"
)
# Every channel a shipped rule uses needs a route, or the policy does not compile.
ROUTED_CHANNELS = ("push", "email", "sms", "in_app", "webhook")


def providers_yaml(url: str, *, guard: bool, outbox: Path) -> str:
    """One webhook provider per channel, all posting to `url`; only email's is ever used.
    Under the `dev` profile every one writes to `outbox` instead, as `./dev run` does."""
    lines = ["apiVersion: notigate/v1", "kind: Providers", "providers:"]
    for channel in ROUTED_CHANNELS:
        name = _provider(channel)
        lines.append(f"  {name}:\n    channel: {channel}\n    adapter: webhook\n    cost: 0\n    timeout: 5s")
        lines.append(f"    credentials: {{signing_secret: {SECRET_ENV}}}")
        lines.append(f"    settings: {{url: {json.dumps(url)}}}")
        if guard and channel == CHANNEL:
            lines.append(GUARD_LIMITS.rstrip("\n"))
    lines.append(
        f"profiles:\n  dev:\n    adapter: devfile\n    settings: {{directory: {json.dumps(str(outbox))}}}"
    )
    lines.append("routes:")
    for channel in ROUTED_CHANNELS:
        lines.append(f"  {channel}: [{_provider(channel)}]")
    return "\n".join(lines) + "\n"


def _provider(channel: str) -> str:
    return f"bench-{channel.replace('_', '-')}"


def bench_users(count: int) -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"d_{i:06d}",
            "timezone": "UTC",
            "quiet_hours": {"start": "00:00", "end": "00:00"},  # start == end: none
            "contacts": {"email": f"reader{i}@example.com"},
        }
        for i in range(count)
    ]


def bench_intents(count: int) -> list[Intent]:
    """One intent per user, distinct data (no content dedup), the template example's fields."""
    decode = msgspec.json.Decoder(Intent).decode
    return [
        decode(
            json.dumps(
                {
                    "event": EVENT,
                    "user_id": f"d_{i:06d}",
                    "priority": "normal",
                    "channels": [CHANNEL],
                    "data": {
                        "order_id": f"D-{i}",
                        "carrier": "UPS",
                        "tracking_url": f"https://track.example.com/D-{i}",
                        "eta": "2026-12-01",
                    },
                }
            )
        )
        for i in range(count)
    ]


class DeliveryStack(Stack):
    def __init__(
        self,
        root: Path,
        *,
        deliveries: int,
        endpoint_url: str,
        guard: bool,
        concurrency: int,
        redis_cpu: int | None,
        dev: bool = False,
    ) -> None:
        super().__init__(root, users=deliveries)
        self.deliveries = deliveries
        self.guard = guard
        self.dev = dev  # the dev profile: files in `outbox`, no POST to the endpoint
        self.outbox = root / "outbox"
        self.concurrency = concurrency
        self.redis_cpu = redis_cpu
        self.providers_file = root / "providers.yaml"
        self.providers_file.write_text(providers_yaml(endpoint_url, guard=guard, outbox=self.outbox))
        # The shipped policies without their test suites, which pin the shipped providers.
        (root / "policies").mkdir()
        for policy in (ROOT / "policies").glob("*.yaml"):
            shutil.copy(policy, root / "policies" / policy.name)
        self.secret = os.urandom(16).hex()

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "NOTIGATE_PROVIDER_PROFILE": "dev" if self.dev else "live",
            "NOTIGATE_PROVIDERS": str(self.providers_file),
            "NOTIGATE_POLICIES": str(self.root / "policies"),
            "NOTIGATE_TEMPLATES": str(ROOT / "templates"),
            "NOTIGATE_SCHEMAS": str(ROOT / "schemas"),
            "NOTIGATE_WORKER_CONCURRENCY": str(self.concurrency),
            SECRET_ENV: self.secret,
        }

    @property
    def database_file(self) -> Path:
        return self.root / "notigate.db"

    def start(self) -> DeliveryStack:
        try:
            self.redis.start()
        except RedisServerError as exc:
            raise BenchError(f"cannot start a private Redis: {exc}") from exc
        if self.redis_cpu is not None and self.redis.process is not None:
            os.sched_setaffinity(self.redis.process.pid, {self.redis_cpu})
        self.notigate("db", "upgrade")
        people = self.root / "users.jsonl"
        people.write_text("\n".join(json.dumps(u) for u in bench_users(self.deliveries)) + "\n")
        self.notigate("users", "import", str(people))
        return self

    def preload(self) -> None:
        """Accept one intent per user with no worker running; their jobs wait in Redis."""
        asyncio.run(self._preload(bench_intents(self.deliveries)))
        counts = self.statuses()
        # The other channels of the rule are stored as `suppressed` (the decision's record of
        # why not); the worker never sees them.
        due = {key: n for key, n in counts.items() if key[1] != "suppressed"}
        if due != {(CHANNEL, "pending"): self.deliveries}:
            raise BenchError(
                f"after accepting {self.deliveries} intents the store should hold as many pending "
                f"{CHANNEL} deliveries and nothing else to send; it holds {counts}"
            )

    async def _preload(self, intents: Sequence[Intent]) -> None:
        from gateway.services import Services
        from gateway.settings import Settings

        services = Services(Settings.from_env(self.env))
        await services.start()
        try:
            for start in range(0, len(intents), PRELOAD_CHUNK):
                await services.intake.accept_many(intents[start : start + PRELOAD_CHUNK], "bench")
        finally:
            await services.close()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """One read on the SQLite file (WAL: it never blocks the worker's writes)."""
        connection = sqlite3.connect(self.database_file, timeout=5.0)
        try:
            return list(connection.execute(statement))
        finally:
            connection.close()

    def statuses(self) -> dict[tuple[str, str], int]:
        return {
            (c, s): n
            for c, s, n in self.sql("SELECT channel, status, count(*) FROM deliveries GROUP BY 1, 2")
        }

    def delivered(self) -> int:
        return int(self.sql("SELECT count(*) FROM deliveries WHERE status = 'delivered'")[0][0])

    def first_written(self) -> float:
        """Under the dev profile: when the first message file was written (epoch seconds)."""
        files = list((self.outbox / "email").glob("*.eml"))
        if not files:
            raise BenchError(f"the dev profile wrote no message to {self.outbox}")
        return min(f.stat().st_mtime for f in files)

    def send_durations_ms(self) -> list[float]:
        """The pipeline's own timing of each delivered send (around `adapter.send`)."""
        rows = self.sql("SELECT duration_ms FROM attempts WHERE outcome = 'delivered' ORDER BY duration_ms")
        return [float(r[0]) for r in rows if r[0] is not None]
