"""`notigate dev`: everything a newcomer needs running, in one command (`./dev run`).

Starts a private Redis (unless REDIS_URL points at one), then the API and the worker as
child processes with the dev provider profile, prints where to look, and stops them all
together on Ctrl-C. State lives under `var/` (or `--var DIR`), which git ignores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.redis_server import RedisServer, RedisServerError
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.keys import ApiKeyStore

DEV_REDIS_PORT = 6390


def run(settings: Settings, var: Path = Path("var")) -> int:
    if (problem := _bind_problem(settings.host, settings.port)) is not None:
        # Said before anything starts: the API would die after the banner claimed it runs.
        print(
            f"notigate dev: cannot serve the API on {settings.host}:{settings.port}: {problem}\n"
            f"  set NOTIGATE_PORT to a free port, e.g. NOTIGATE_PORT={settings.port + 1} ./dev run",
            file=sys.stderr,
        )
        return 1
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("NOTIGATE_PROVIDER_PROFILE", "dev")
    env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{var.resolve() / 'notigate.db'}")
    env.setdefault("NOTIGATE_OUTBOX", str(var.resolve() / "outbox"))
    if not env.get("NOTIGATE_INBOX_SECRET"):
        env["NOTIGATE_INBOX_SECRET"] = _saved_secret(var, "inbox-secret")
    if not env.get("NOTIGATE_UNSUBSCRIBE_SECRET"):
        env["NOTIGATE_UNSUBSCRIBE_SECRET"] = _saved_secret(var, "unsubscribe-secret")
    if not env.get("NOTIGATE_CONSOLE_SECRET"):
        env["NOTIGATE_CONSOLE_SECRET"] = _saved_secret(var, "console-secret")
    redis: RedisServer | None = None
    if "REDIS_URL" not in os.environ:
        raw = os.environ.get("NOTIGATE_DEV_REDIS_PORT") or str(DEV_REDIS_PORT)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            print(
                f"notigate dev: NOTIGATE_DEV_REDIS_PORT={raw!r} is not a TCP port (1-65535)", file=sys.stderr
            )
            return 1
        port = int(raw)
        redis = RedisServer(var / "redis", port, persist=True)
        try:
            redis.start()
        except RedisServerError as exc:
            print(
                f"notigate dev: cannot start Redis on 127.0.0.1:{port}: {exc}\n"
                "  set NOTIGATE_DEV_REDIS_PORT to a free port, or REDIS_URL to a running Redis",
                file=sys.stderr,
            )
            return 1
        env["REDIS_URL"] = redis.url
    children: list[subprocess.Popen[bytes]] = []
    try:
        key = _prepare(settings, env, var)
    except Exception as exc:
        print(f"notigate dev: cannot prepare the database: {exc}", file=sys.stderr)
        if redis is not None:
            redis.stop()
        return 1
    try:
        for name, args in _processes(settings):
            children.append(subprocess.Popen([sys.executable, "-m", "gateway", *args], env=env))  # noqa: S603
            print(f"notigate dev: started {name} (pid {children[-1].pid})", file=sys.stderr)
        _banner(settings, env, key, var)
        return _wait(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()


def _bind_problem(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port (bound as uvicorn binds it), or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _processes(settings: Settings) -> list[tuple[str, list[str]]]:
    return [
        ("api", ["serve", "--host", settings.host, "--port", str(settings.port)]),
        ("worker", ["worker"]),
    ]


def _prepare(settings: Settings, env: dict[str, str], var: Path) -> str:
    """Bring the schema up to date and make sure a dev API key exists; returns the key."""
    database_url = env["DATABASE_URL"]

    async def prepare() -> str:
        database = Database(database_url)
        try:
            await migrate.upgrade(database)
            saved = var / "dev-api-key"
            store = ApiKeyStore(database)
            if saved.exists() and await store.authenticate(saved.read_text().strip()) is not None:
                return saved.read_text().strip()
            name = f"dev-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
            _, token = await store.create(
                name, ["*"], admin=True, rate=1000.0, burst=2000, now=dt.datetime.now(dt.UTC)
            )
            saved.write_text(token + "\n")
            saved.chmod(0o600)
            return token
        finally:
            await database.dispose()

    return asyncio.run(prepare())


def _banner(settings: Settings, env: dict[str, str], key: str, var: Path) -> None:
    base = f"http://{settings.host}:{settings.port}"
    outbox = Path(env["NOTIGATE_OUTBOX"]).resolve()
    saved = var / "dev-api-key"
    print(
        f"""
Notigate is running (Ctrl-C stops everything)
  API        {base}        OpenAPI: {base}/schema
  Console    {base}/console/   (sign in with the API key below)
  API key    {key}
             (admin, every event; saved in {saved})
  Redis      {env["REDIS_URL"]}
  Database   {env["DATABASE_URL"]}
  Outbox     {outbox}   (the dev providers write what they would send here)

Try it:
  KEY=$(cat {saved})
  curl -s -X PUT {base}/v1/users/u_1 -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
       -d '{{"user_id": "u_1", "timezone": "Europe/Paris", "contacts": {{"email": "ada@example.com"}},
            "quiet_hours": {{"start": "00:00", "end": "00:00"}}}}'
  curl -s {base}/v1/intents -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
       -d '{{"event": "order.shipped", "user_id": "u_1", "data": {{"order_id": "A-1001", "carrier": "UPS"}}}}'
  curl -s {base}/v1/notifications/<notification_id> -H "authorization: Bearer $KEY"
""",
        file=sys.stderr,
        flush=True,
    )


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    # `kill <pid>` must stop the children too, exactly like Ctrl-C does; and Ctrl-C must work
    # even when we were started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        while True:
            for child in children:
                code = child.poll()
                if code is not None:
                    print(f"notigate dev: a process exited with status {code}; stopping", file=sys.stderr)
                    return code or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _saved_secret(var: Path, name: str) -> str:
    """A signing key (inbox tokens, unsubscribe and console links), kept in var/ so tokens and links
    survive a dev restart and every API process and worker signs and checks with the same one."""
    saved = var / name
    if saved.exists():
        return saved.read_text().strip()
    secret = secrets.token_hex(32)
    saved.write_text(secret + "\n")
    saved.chmod(0o600)
    return secret
