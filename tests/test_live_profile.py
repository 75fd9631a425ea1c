"""README's "Running it for real", as an operator follows it, with a local SendGrid stand-in.

The commands the README gives (`notigate db upgrade`, `keys create`, `serve`, `worker`) run
as processes under `NOTIGATE_PROVIDER_PROFILE=live` with only SendGrid's credentials set:
the email goes through the SendGrid SDK to the stand-in, the providers without credentials
are left out with one warning instead of stopping the worker, and both processes log what
they run with.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO

import httpx

from gateway.redis_server import RedisServer, free_port
from tests.conftest import REPO
from tests.providers import wire_sendgrid
from tests.stub_http import Reply, StubServer


def _environment(tmp_path: Path, redis_url: str, sendgrid_url: str, port: int) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIGATE_", "TWILIO_", "SENDGRID_"))}
    return {
        **kept,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notigate.db'}",
        "REDIS_URL": redis_url,
        "NOTIGATE_REDIS_PREFIX": f"live{uuid.uuid4().hex[:8]}",
        "NOTIGATE_PROVIDER_PROFILE": "live",
        "NOTIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "NOTIGATE_INBOX_SECRET": "i" * 40,
        "NOTIGATE_UNSUBSCRIBE_SECRET": "u" * 40,
        "NOTIGATE_CONSOLE_SECRET": "c" * 40,
        "SENDGRID_API_KEY": wire_sendgrid.API_KEY,
        "SENDGRID_BASE_URL": sendgrid_url,
        "NOTIGATE_EMAIL_FROM": wire_sendgrid.SENDER,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(free_port()),  # nothing listens: never reached while SendGrid delivers
    }


def _notigate(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _spawn(env: dict[str, str], sink: IO[bytes], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, env=env, stdout=sink, stderr=sink
    )


async def _until_ready(base: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 90  # two cold Python processes compile the policy on a busy CI
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), "\n".join(log.read_text() for log in logs)
            try:
                if (await http.get(f"{base}/readyz", timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the API was not ready in time:\n" + logs[0].read_text())


async def test_the_live_profile_sends_through_the_configured_provider_only(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sendgrid = await StubServer(lambda request: Reply(202, headers={"x-message-id": "m-1"})).start()
    port = free_port()
    env = _environment(tmp_path, redis_server.url, sendgrid.url, port)
    _notigate(env, "db", "upgrade")
    key = _notigate(env, "keys", "create", "ops", "--events", "*", "--admin").strip().splitlines()[-1]
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    commands = [["serve", "--host", "127.0.0.1", "--port", str(port)], ["worker"]]
    sinks = [log.open("wb") for log in logs]
    processes = [_spawn(env, sink, *args) for args, sink in zip(commands, sinks, strict=True)]
    base, auth = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {key}"}
    try:
        await _until_ready(base, processes, logs)
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as http:
            user = {
                "user_id": "u_1",
                "timezone": "Europe/Paris",
                "quiet_hours": {"start": "00:00", "end": "00:00"},
                "contacts": {"email": "ada@example.com"},
            }
            assert (await http.put("/v1/users/u_1", json=user)).status_code == 201
            intent = {
                "event": "order.shipped",
                "user_id": "u_1",
                "data": {"order_id": "A-1", "carrier": "UPS"},
            }
            accepted = await http.post("/v1/intents", json=intent)
            assert accepted.status_code == 202, accepted.text
            notification = f"/v1/notifications/{accepted.json()['notification_id']}"
            for _ in range(600):
                email = next(
                    d for d in (await http.get(notification)).json()["deliveries"] if d["channel"] == "email"
                )
                if email["status"] not in ("pending", "sending", "scheduled"):
                    break
                await asyncio.sleep(0.1)
        assert (email["status"], email["provider"]) == ("delivered", "sendgrid"), email
        (sent,) = [r for r in sendgrid.requests if r.path == "/v3/mail/send"]
        assert sent.json()["personalizations"][0]["to"][0]["email"] == "ada@example.com"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        for sink in sinks:
            sink.close()
        await sendgrid.stop()
    api_log, worker_log = (log.read_text() for log in logs)
    for log in (api_log, worker_log):
        assert (
            "provider profile live" in log and f"Redis {redis_server.url}" in log
        )  # (masked: test_settings)
        assert wire_sendgrid.API_KEY not in log
    assert "providers left out of their chains" in worker_log
    for variable in ("TWILIO_ACCOUNT_SID", "FIREBASE_SERVICE_ACCOUNT_JSON", "WEBHOOK_SIGNING_SECRET"):
        assert variable in worker_log
    assert "with providers inbox, sendgrid, smtp" in worker_log
