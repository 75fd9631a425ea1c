"""`notigate dev` (what `./dev run` starts): its own Redis, the API and a worker, end to end.

A newcomer's first minute, as a test: the command prints a key, the API accepts a user and
an intent with it, the worker delivers to the dev outbox, and Ctrl-C (SIGTERM here) stops
every child, Redis included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from gateway.redis_server import free_port
from tests.conftest import REPO
from tests.providers.outbox import sent

T = TypeVar("T")


def _until(
    check: Callable[[], T], timeout: float, what: str, process: subprocess.Popen[bytes], log: Path
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"notigate dev exited ({process.returncode}) before {what}:\n{log.read_text()}"
            )
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_runs_redis_api_and_worker_and_delivers_to_the_outbox(tmp_path: Path) -> None:
    var, api_port, redis_port = tmp_path / "var", free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "NOTIGATE_OUTBOX")}
    env.update(NOTIGATE_PORT=str(api_port), NOTIGATE_DEV_REDIS_PORT=str(redis_port))
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "dev", "--var", str(var)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        _until(lambda: _answers(f"{base}/schema/openapi.json"), 60, "API", process, log)
        key = (var / "dev-api-key").read_text().strip()
        assert key in log.read_text()  # the banner prints a ready key
        assert f"redis://127.0.0.1:{redis_port}" in log.read_text()  # its own Redis, not the machine's
        assert f"Console    {base}/console/" in log.read_text()
        headers = {"authorization": f"Bearer {key}"}
        assert httpx.get(f"{base}/console/").status_code == 200
        link = httpx.post(f"{base}/v1/console-links", json={}, headers=headers)
        assert link.status_code == 201, link.text  # dev keeps a console secret in var/
        user = {
            "user_id": "u_1",
            "timezone": "Europe/Paris",
            "quiet_hours": {"start": "00:00", "end": "00:00"},  # none: the test must not depend on the hour
            "contacts": {"email": "ada@example.com"},
        }
        assert httpx.put(f"{base}/v1/users/u_1", json=user, headers=headers).status_code in (200, 201)
        intent = {
            "event": "order.shipped",
            "user_id": "u_1",
            "data": {"order_id": "A-1001", "carrier": "UPS"},
        }
        accepted = httpx.post(f"{base}/v1/intents", json=intent, headers=headers)
        assert accepted.status_code == 202, accepted.text
        notification_id = accepted.json()["notification_id"]

        def statuses() -> dict[str, str]:
            status = httpx.get(f"{base}/v1/notifications/{notification_id}", headers=headers).json()
            found = {d["channel"]: d["status"] for d in status["deliveries"]}
            return found if all(s not in ("pending", "sending", "retrying") for s in found.values()) else {}

        channels = _until(statuses, 60, "every delivery settled", process, log)
        assert (channels["email"], channels["in_app"]) == ("delivered", "delivered")
        emails = [s for s in sent(var / "outbox") if s.channel == "email"]
        assert [s.to for s in emails] == ["ada@example.com"]
        assert emails[0].path.suffix == ".eml"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()[-4000:]
    assert not _listening(api_port) and not _listening(redis_port)  # nothing left behind
    # Everything it wrote stayed under --var.
    assert {p.name for p in var.iterdir()} >= {"dev-api-key", "notigate.db", "outbox", "redis"}


def test_a_busy_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIGATE_")}
        env.update(NOTIGATE_PORT=str(port), NOTIGATE_HOST="127.0.0.1")
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "dev", "--var", str(tmp_path / "var")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot serve the API on 127.0.0.1:{port}" in done.stderr
    assert "set NOTIGATE_PORT to a free port" in done.stderr
    assert "started" not in done.stderr and "http://" not in done.stdout  # no child, no banner
    assert not (tmp_path / "var").exists()
