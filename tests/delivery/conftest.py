"""Fixtures for delivery tests: a policy with quick retries, providers on local HTTP stubs."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.policy.checker import load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.providers.base import Adapter
from gateway.providers.console import ConsoleAdapter
from gateway.providers.registry import ProviderRegistry
from gateway.providers.webhook import WebhookAdapter
from gateway.redact import Secret
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.store import migrate
from tests.conftest import REPO, Clock, make_settings
from tests.stub_http import StubServer


def quick_bundle(root: Path, providers: Callable[[str], str] | None = None) -> CompiledPolicy:
    """The shipped bundle with every tier retrying after 150 ms, 300 ms; 3 attempts at most;
    `providers` may rewrite providers.yaml's text (the policy suites, which pin the shipped
    chains, are then left out)."""
    ignore = shutil.ignore_patterns("tests") if providers is not None else None
    shutil.copytree(REPO / "policies", root / "policies", ignore=ignore)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy2(REPO / "providers.yaml", root / "providers.yaml")
    if providers is not None:
        (root / "providers.yaml").write_text(providers((root / "providers.yaml").read_text()))
    defaults = root / "policies" / "defaults.yaml"
    text = re.sub(
        r"retry: \{schedule: \[[^\]]*\], max_attempts: \d+",
        "retry: {schedule: [150ms, 300ms], max_attempts: 3",
        defaults.read_text(),
    )
    defaults.write_text(text)
    return load_policy(
        BundlePaths.for_policies(root / "policies", schemas=REPO / "schemas"), runtime="cel-expr-python"
    )


@pytest.fixture(scope="session")
def quick_policy(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    """The shipped bundle with every tier retrying after 150 ms, 300 ms; 3 attempts at most."""
    return quick_bundle(tmp_path_factory.mktemp("quick-bundle"))


@asynccontextmanager
async def services_for(
    database_url: str, redis_server: RedisServer, tmp_path: Path, policy: CompiledPolicy
) -> AsyncIterator[Services]:
    """Services on a migrated store, running `policy`, closed on the way out."""
    opened = Services(make_settings(database_url, redis_server.url, tmp_path), policy=policy, clock=Clock())
    await migrate.upgrade(opened.database)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def quick_services(
    database_url: str, redis_server: RedisServer, tmp_path: Path, quick_policy: CompiledPolicy
) -> AsyncIterator[Services]:
    async with services_for(database_url, redis_server, tmp_path, quick_policy) as opened:
        yield opened


def registry(outbox: Path, **webhooks: StubServer) -> ProviderRegistry:
    """Every provider of providers.yaml writes to the outbox, except those named here: those
    are real webhook adapters posting to the given stub servers."""
    names = {
        "twilio": "sms",
        "sendgrid": "email",
        "smtp": "email",
        "fcm": "push",
        "inbox": "in_app",
        "webhook": "webhook",
    }
    adapters: dict[str, Adapter] = {}
    for name, channel in names.items():
        if name in webhooks:
            adapters[name] = WebhookAdapter(
                name,
                channel,
                signing_secret=Secret("test-secret"),
                url=webhooks[name].url + f"/{name}",
                timeout=2.0,
            )
        else:
            adapters[name] = ConsoleAdapter(name, channel, outbox)
    return ProviderRegistry(adapters, "test")
