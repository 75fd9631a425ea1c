"""Live reload in one process: a good change is swapped in, a bad one refused, the loop keeps going.

The bundle is a copy of the shipped one in a temporary directory (without its test suites, so
each check takes a fraction of a second); the end-to-end test with real `serve` and `worker`
processes is tests/faults/test_live_reload.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.metrics import REGISTRY
from gateway.policy.checker import load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.queue.worker import WorkerProcess
from gateway.redis_server import RedisServer
from gateway.reload import LiveBundle, ReloadRefused
from gateway.services import Services
from tests.bundles import break_cel, copy_bundle, email_only
from tests.conftest import make_settings, open_services
from tests.harness import eventually, running_worker

RUNTIME = "cel-expr-python"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveBundle]:
    paths = copy_bundle(tmp_path)
    bundle = LiveBundle(load_policy(paths, runtime=RUNTIME), lambda: paths, runtime=RUNTIME)
    yield bundle
    await bundle.stop()


def channels(policy: CompiledPolicy, rule: str = "order-updates") -> tuple[str, ...]:
    found = policy.rule(rule)
    assert found is not None
    return tuple(found.channels)


async def test_a_valid_change_is_swapped_in_and_the_same_files_again_are_unchanged(live: LiveBundle) -> None:
    old = live.policy
    loaded = sample("notigate_policy_reloads_total", outcome="loaded")
    email_only(live.paths())
    assert await live.reload("test") == "loaded"
    assert live.policy is not old and live.policy.version != old.version
    assert channels(live.policy) == ("email", "in_app")
    assert "push" in channels(old)  # the old bundle is untouched: a decision under way keeps it
    assert live.status().last_outcome == "loaded" and live.status().loaded_at == live.last_reload_at
    assert sample("notigate_policy_reloads_total", outcome="loaded") == loaded + 1
    assert sample("notigate_policy_info", version=live.policy.version) == 1
    current = live.policy
    assert await live.reload("test") == "unchanged"
    assert live.policy is current


async def test_an_invalid_change_is_refused_and_the_last_good_bundle_keeps_serving(
    live: LiveBundle, caplog: pytest.LogCaptureFixture
) -> None:
    good = live.policy
    refused = sample("notigate_policy_reloads_total", outcome="refused")
    break_cel(live.paths())
    assert await live.reload("test") == "refused"
    assert live.policy is good
    status = live.status()
    assert status.last_outcome == "refused" and status.last_refused is not None
    assert status.last_refused.version.startswith("sha256:") and status.last_refused.version != good.version
    assert any("transactional.yaml:" in d for d in status.last_refused.diagnostics)
    assert sample("notigate_policy_reloads_total", outcome="refused") == refused + 1
    assert sample("notigate_policy_refused_info", version=status.last_refused.version) == 1
    assert sample("notigate_policy_info", version=good.version) == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.reload"]
    assert any("refused" in m and "transactional.yaml:" in m and good.version in m for m in logged)


async def test_a_part_that_cannot_take_the_new_bundle_refuses_it(live: LiveBundle) -> None:
    good = live.policy
    swapped: list[str] = []

    async def needs_credentials(old: CompiledPolicy, new: CompiledPolicy) -> None:
        raise ReloadRefused("providers: TWILIO_AUTH_TOKEN is not set")

    live.listeners.append(lambda old, new: swapped.append(new.version))
    live.preparers.append(needs_credentials)
    email_only(live.paths())
    assert await live.reload("test") == "refused"
    assert live.policy is good and swapped == []
    refused = live.status().last_refused
    assert refused is not None
    assert refused.diagnostics == ["providers: TWILIO_AUTH_TOKEN is not set"]


async def test_the_check_runs_off_the_event_loop(live: LiveBundle) -> None:
    """While a reload compiles, other tasks keep running (a check on the loop would starve them)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    email_only(live.paths())
    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = ticks
        assert await live.reload("test") == "loaded"
        assert ticks > before + 1
    finally:
        task.cancel()


async def test_a_file_change_is_seen_and_reloaded(live: LiveBundle) -> None:
    old = live.policy.version
    live.start("watch")
    assert live.status().watching == "watch"
    await asyncio.sleep(0.2)  # the watch is set up on its own task
    email_only(live.paths())
    await eventually(lambda: _is_not(live, old), within=15, every=0.1)
    assert channels(live.policy) == ("email", "in_app")


async def test_a_template_change_is_seen_too(live: LiveBundle) -> None:
    old = live.policy.version
    live.start("watch")
    await asyncio.sleep(0.2)
    template = live.paths().templates / "order.shipped" / "push.yaml"
    template.write_text(template.read_text() + "\n# reworded\n")
    await eventually(lambda: _is_not(live, old), within=15, every=0.1)


async def test_sighup_reloads(live: LiveBundle) -> None:
    old = live.policy.version
    live.start("off")
    email_only(live.paths())
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: _is_not(live, old), within=15, every=0.1)
    assert live.status().watching == "off"


async def _is_not(live: LiveBundle, version: str) -> bool:
    return live.policy.version != version


@pytest.fixture
async def worker_services(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """A gateway on a copy of the bundle, with watching off: the test says when to reload."""
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    paths = copy_bundle(tmp_path / "bundle")
    settings = make_settings(
        sqlite_url, redis_server.url, tmp_path, policies_dir=paths.policies, policy_reload="off"
    )
    services = await open_services(settings)
    yield services
    await services.close()


async def test_a_worker_swaps_its_provider_adapters_when_providers_yaml_changes(
    worker_services: Services,
) -> None:
    providers = worker_services.settings.bundle_paths().providers
    async with running_worker(worker_services, live=True, relay=False) as process:
        await eventually(lambda: _has_pipeline(process), within=30)
        bundle = process.services.bundle
        old = process.registry
        assert old is not None and old.specs["sendgrid"].cost == 0.001
        providers.write_text(providers.read_text().replace("cost: 0.001", "cost: 0.002", 1))
        assert await bundle.reload("test") == "loaded"
        assert process.registry is not old and process.pipeline is not None
        assert process.pipeline.registry is process.registry
        assert process.registry.specs["sendgrid"].cost == 0.002
        assert bundle.policy.providers.providers["sendgrid"].cost == 0.002
        current, version = process.registry, bundle.policy.version
        # A providers file the worker cannot build adapters from is refused as a whole.
        providers.write_text(providers.read_text().replace("adapter: devfile", "adapter: twilio", 1))
        assert await bundle.reload("test") == "refused"
        assert process.registry is current and bundle.policy.version == version
        refusal = bundle.status().last_refused
        assert refusal is not None and "profile adapter 'twilio' is not available" in refusal.diagnostics[0]


async def _has_pipeline(process: WorkerProcess) -> bool:
    return process.pipeline is not None
