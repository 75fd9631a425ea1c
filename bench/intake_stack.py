"""A private gateway for the intake benchmark: its own folder, Redis, database, key and users.

Everything a user would run, started the way they would start it: `notigate db upgrade`,
`notigate keys create`, `notigate users import`, the API under uvicorn and `notigate
worker` processes, all configured through the environment. Nothing outside the folder and
the private Redis is touched, and `close()` stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.procs import HOST, BenchError, Server, running_server, spawn, stop
from gateway.redis_server import RedisServer, RedisServerError
from gateway.store.database import Database

ZONES = ("Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Asia/Tokyo", "UTC")
PROBE_USERS = 50


class Stack:
    def __init__(self, root: Path, *, users: int, database_url: str | None = None) -> None:
        self.root = root
        self.users = users
        root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(root / "redis")
        self.database_url = database_url or f"sqlite+aiosqlite:///{root / 'notigate.db'}"
        self.token = ""
        self._workers: list[tuple[str, subprocess.Popen[bytes]]] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "NOTIGATE_REDIS_PREFIX": "bench",
            "NOTIGATE_PROVIDER_PROFILE": "dev",
            "NOTIGATE_OUTBOX": str(self.root / "outbox"),
            "NOTIGATE_LOG_LEVEL": "WARNING",
            # As docs/deploy/notigate.env.example deploys it (docs/deployment.md, "Memory"):
            # two malloc arenas, not one per thread that ever allocated.
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        }

    def start(self) -> Stack:
        try:
            self.redis.start()
        except RedisServerError as exc:
            raise BenchError(f"cannot start a private Redis: {exc}") from exc
        self.notigate("db", "upgrade")
        if self.database_url.startswith("postgresql"):
            self._truncate_postgres()
        self.token = self.notigate(
            "keys", "create", "bench", "--events", "*", "--admin", "--rate", "1000000", "--burst", "1000000"
        ).strip()
        people = self.root / "users.jsonl"
        people.write_text("\n".join(json.dumps(u) for u in make_users(self.users)) + "\n")
        self.notigate("users", "import", str(people))
        return self

    def close(self) -> None:
        for _, worker in self._workers:
            stop(worker)
        self._workers.clear()
        self.redis.stop()

    def notigate(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env={**_environ(), **self.env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchError(f"notigate {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    @contextlib.contextmanager
    def api(self, cpu: int | None, processes: int = 1, env: dict[str, str] | None = None) -> Iterator[Server]:
        """One process under uvicorn (pinned where `cpu` says), or `notigate serve --processes N`;
        `env` adds to the stack's settings."""
        settings = {**self.env, **(env or {})}
        if processes == 1:
            with running_server(
                "gateway", "bench.gateway_server:app", cpu=cpu, log_dir=self.root, env=settings
            ) as s:
                yield s
            return
        argv = [sys.executable, "-m", "gateway", "serve", "--host", HOST, "--processes", str(processes)]
        with running_server("gateway", argv, cpu=cpu, log_dir=self.root, env=settings) as s:
            yield s

    def worker(
        self, name: str, queues: Sequence[str], *, relay: bool, cpu: int | None = None, nice: int = 0
    ) -> None:
        """A `notigate worker` process for `queues`, stopped by `close()`."""
        argv = [sys.executable, "-m", "gateway", "worker", *(arg for q in queues for arg in ("--queue", q))]
        if not relay:
            argv.append("--no-relay")
        if nice:
            argv += ["--nice", str(nice)]
        with (self.root / f"worker-{name}.log").open("wb") as log:
            process = spawn(
                argv, cpu=cpu, stdout=log, stderr=subprocess.STDOUT, new_session=True, env=self.env
            )
        self._workers.append((f"worker-{name}", process))

    def named_workers(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """The workers started so far, by the name their log carries."""
        return list(self._workers)

    def workers_alive(self) -> None:
        for _, worker in self._workers:
            if worker.poll() is not None:
                raise BenchError(f"a worker exited with {worker.returncode}; see {self.root}/worker-*.log")

    def query(self, statement: Any) -> list[Any]:
        """Rows of one read-only statement against the stack's database."""

        async def run() -> list[Any]:
            database = Database(self.database_url)
            try:
                async with database.connect() as connection:
                    return list(await connection.execute(statement))
            finally:
                await database.dispose()

        return asyncio.run(run())

    def scalar(self, statement: Any) -> Any:
        return self.query(statement)[0][0]

    def _truncate_postgres(self) -> None:
        """A PostgreSQL database is not ours alone to create: empty the gateway's tables instead."""

        async def run() -> None:
            database = Database(self.database_url)
            try:
                async with database.begin() as connection:
                    names = ", ".join(
                        f'"{t}"'
                        for t in await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
                        if t != "alembic_version"
                    )
                    await connection.execute(sa.text(f"TRUNCATE {names} CASCADE"))
            finally:
                await database.dispose()

        asyncio.run(run())


def make_users(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Users with an email, a phone and one or two devices, spread over time zones, no quiet
    hours (so their deliveries go out now and load the workers, whatever the hour: without a
    window of their own the policy's default, 22:00-08:00, would hold the night zones'
    deliveries and release them all at 08:00 local, in the middle of a run), plus the probe
    users."""
    rng = random.Random(seed)
    people = []
    for i in range(count):
        devices = [{"platform": "android", "token": f"android-{i:06d}"}]
        if rng.random() < 0.4:
            devices.append({"platform": "ios", "token": f"ios-{i:06d}"})
        people.append(
            {
                "user_id": f"u_{i:06d}",
                "timezone": rng.choice(ZONES),
                "contacts": {"email": f"user{i}@example.com", "phone": f"+3361{i:07d}", "devices": devices},
                "quiet_hours": {"start": "00:00", "end": "00:00"},  # start == end: none
            }
        )
    for i in range(PROBE_USERS):
        people.append(
            {
                "user_id": f"p_{i:03d}",
                "timezone": "Europe/Paris",
                "quiet_hours": {"start": "00:00", "end": "23:59"},  # urgent must ignore these
                "contacts": {"email": f"probe{i}@example.com", "phone": f"+3362{i:07d}"},
            }
        )
    return people


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NOTIGATE_")}
