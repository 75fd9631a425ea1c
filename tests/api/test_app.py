"""The app leaves the process's logging as `notigate serve` set it, and still logs what fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway.api import policy_routes
from gateway.api.app import create_app
from gateway.api.context import Gateway
from gateway.settings import Settings
from tests.conftest import compiled_policy

DRY_RUN = {"intent": {"event": "order.shipped", "user_id": "u_1", "data": {"order_id": "A", "carrier": "U"}}}


@pytest.fixture
def configured_root() -> Iterator[logging.Handler]:
    """The root logger as `cli.configure_logging` leaves it: one handler, the chosen level."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.NullHandler()
    root.handlers, root.level = [handler], logging.WARNING
    try:
        yield handler
    finally:
        root.handlers, root.level = saved


def _app() -> Any:
    return create_app(gateway=Gateway(settings=Settings(), policy=compiled_policy("cel-expr-python")))


def test_building_the_app_keeps_the_process_logging(configured_root: logging.Handler) -> None:
    """Litestar's default logging config would swap the root logger's handlers for its own and
    set it to INFO, ignoring NOTIGATE_LOG_LEVEL and writing to whatever stderr was then."""
    root = logging.getLogger()
    before = root.handlers[:]  # ours, and pytest's own capture handlers
    assert configured_root in before
    with TestClient(_app()) as client:
        assert client.post("/v1/dry-run", json=DRY_RUN).status_code == 200
    assert root.handlers == before and root.level == logging.WARNING


def test_an_unhandled_error_is_answered_500_and_logged_with_its_traceback(
    configured_root: logging.Handler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(policy_routes, "dry_run", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.api"), TestClient(_app()) as client:
        answer = client.post("/v1/dry-run", json=DRY_RUN)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    (record,) = [r for r in caplog.records if r.name == "gateway.api"]
    assert record.getMessage() == "unhandled error on POST /v1/dry-run"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug in the gateway"
