"""Real gateway processes for the fault tests: workers and API servers, started, killed, paused.

Each process logs to a file beside the outbox, so a failing test can show what they said.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from gateway.redis_server import free_port
from gateway.services import Services
from tests.conftest import REPO


def env_of(services: Services, outbox: Path, **extra: str) -> dict[str, str]:
    """What a process needs to join the test's gateway: its store, Redis, prefix and policy."""
    s = services.settings
    return {
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "NOTIGATE_REDIS_PREFIX": s.redis_prefix,
        "NOTIGATE_OUTBOX": str(outbox),
        "NOTIGATE_JOB_TIMEOUT": "2",
        "NOTIGATE_RELAY_RECONCILE": "0.5",
        "NOTIGATE_PROVIDER_PROFILE": "dev",
        "NOTIGATE_POLICIES": str(REPO / "policies"),
        **extra,
    }


def _spawn(
    args: list[str], settings_env: dict[str, str], name: str, failpoints: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env, "NOTIGATE_FAILPOINTS": failpoints}
    log = Path(settings_env["NOTIGATE_OUTBOX"]).parent / f"{name}-{uuid.uuid4().hex[:6]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def worker(settings_env: dict[str, str], failpoints: str = "") -> subprocess.Popen[bytes]:
    """A real `notigate worker` process."""
    return _spawn(["worker"], settings_env, "worker", failpoints)


class Api:
    """A real `notigate serve` process on a port of its own (kept across restarts)."""

    def __init__(self, settings_env: dict[str, str], port: int | None = None) -> None:
        self.env = settings_env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, failpoints: str = "", within: float = 60.0) -> Api:
        self.process = _spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(self.port)], self.env, "api", failpoints
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the API exited at start with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the API did not answer on {self.url} within {within}s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def logs(folder: Path) -> str:
    """The tail of every process log of a test, for its failure message."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
        for p in sorted([*folder.glob("worker-*.log"), *folder.glob("api-*.log")])
    )
