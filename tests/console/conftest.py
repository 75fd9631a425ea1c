"""A live gateway (uvicorn and a worker, each on its own thread and event loop, on SQLite and
the suite's Redis) and one headless Chromium per test module, for the console's browser tests.

Screenshots of every page go to `var/screenshots/` (git-ignored); the run's summary prints where.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from gateway.api.app import create_app
from gateway.providers.registry import ProviderRegistry
from gateway.queue.worker import WorkerProcess
from gateway.redact import Secret
from gateway.redis_server import RedisServer, free_port
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.keys import ApiKeyStore
from tests.conftest import REPO, make_settings
from tests.console.browser import CHROMIUM_ARGS, INSTALL_HINT, chromium_path

T = TypeVar("T")
SCREENSHOTS = REPO / "var" / "screenshots"
LAPTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class LiveGateway:
    url: str
    admin_key: str
    settings: Settings
    outbox: Path

    def http(self, key: str | None = None) -> httpx.Client:
        token = self.admin_key if key is None else key
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {token}"}, timeout=10)

    def key(self, name: str, events: list[str], *, admin: bool = False) -> str:
        async def create() -> str:
            database = Database(self.settings.database_url)
            try:
                _, token = await ApiKeyStore(database).create(
                    name, events, admin=admin, rate=1000.0, burst=1000, now=dt.datetime.now(dt.UTC)
                )
                return token
            finally:
                await database.dispose()

        return run_apart(create)


def run_apart(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a thread of its own: Playwright's sync API keeps an
    event loop running on the test's thread, where `asyncio.run` is refused."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()


class _Thread:
    """An event loop on its own thread running one coroutine until told to stop."""

    def __init__(self, name: str, main: Callable[[asyncio.Event], Any]) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(main,), name=name, daemon=True)

    def _run(self, main: Callable[[asyncio.Event], Any]) -> None:
        async def runner() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self.ready.set()
            await main(self.stop_event)

        try:
            asyncio.run(runner())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self.ready.set()

    def start(self) -> _Thread:
        self.thread.start()
        self.ready.wait(30)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)


def _serve(settings: Settings) -> Callable[[asyncio.Event], Any]:
    async def main(stop: asyncio.Event) -> None:
        # log_config=None: uvicorn's own handlers would write to the stderr pytest captured when
        # the server started, closed by the time the server logs its stop ("Logging error").
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            log_config=None,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        await task

    return main


def _work(settings: Settings, outbox: Path) -> Callable[[asyncio.Event], Any]:
    async def main(stop: asyncio.Event) -> None:
        services = Services(settings)
        registry = ProviderRegistry.load(
            settings.bundle_paths().providers, "dev", {"NOTIGATE_OUTBOX": str(outbox)}
        )
        process = WorkerProcess(settings, services=services, registry=registry)
        task = asyncio.create_task(process.run())
        await stop.wait()
        process.stop.set()
        await task

    return main


def _wait_until_up(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"the gateway at {url} did not become ready within {within}s")


@pytest.fixture(scope="module")
def live_gateway(redis_server: RedisServer) -> Iterator[LiveGateway]:
    """`notigate serve` and `notigate worker` as they run for real, in threads of this process,
    stopped after the module: nothing of theirs may run (or log) beside the rest of the suite."""
    root = Path(tempfile.mkdtemp(prefix="console-gateway-"))
    outbox = root / "outbox"
    settings = make_settings(
        f"sqlite+aiosqlite:///{root / 'notigate.db'}",
        redis_server.url,
        root,
        port=free_port(),
        scheduler_interval=0.0,
        console_secret=Secret("console-test-secret-" + "x" * 20),
    )

    async def prepare() -> str:
        database = Database(settings.database_url)
        try:
            await migrate.upgrade(database)
            _, token = await ApiKeyStore(database).create(
                "console-admin", ["*"], admin=True, rate=1000.0, burst=1000, now=dt.datetime.now(dt.UTC)
            )
            return token
        finally:
            await database.dispose()

    token = run_apart(prepare)
    api = _Thread("console-api", _serve(settings)).start()
    worker = _Thread("console-worker", _work(settings, outbox)).start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        _wait_until_up(url)
        yield LiveGateway(url=url, admin_key=token, settings=settings, outbox=outbox)
    finally:
        worker.stop()
        api.stop()
    for thread in (api, worker):
        if thread.error is not None:
            raise thread.error


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module's tests. Not for the session: Playwright's sync API keeps an
    event loop running on this thread while it is open, and the rest of the suite (run by the
    same xdist worker afterwards) needs `asyncio.run` there."""
    executable = chromium_path()
    if executable is None:
        pytest.fail(INSTALL_HINT, pytrace=False)  # never skipped: CI must run these
    with sync_playwright() as playwright:
        # Playwright starts Chromium with `--headless` and a fresh `--user-data-dir` of its own.
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, live_gateway: LiveGateway) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) at laptop size; page errors fail the test."""
    context = browser.new_context(viewport=LAPTOP, base_url=live_gateway.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"the console raised in the browser: {errors}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def sign_in(page: Page, key: str, at: str = "/console/") -> None:
    page.goto(at)
    page.get_by_label("API key or console link").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in:").wait_for()
