"""The published OpenAPI document is the API: held to a live gateway by schemathesis.

One `notigate serve` process on 127.0.0.1 (SQLite, the suite's Redis, every optional feature
configured so no route answers 503 for want of a setting) is fuzzed operation by operation
with schemathesis, valid and invalid inputs alike: no answer may be a server error, carry a
status the document does not list, or break the schema it documents. The same process serves
`/schema` with nothing fetched from elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.app import create_app
from gateway.redis_server import RedisServer, free_port
from tests.conftest import REPO, make_settings, open_services
from tests.harness import ADA, admin_key, store_user

EXAMPLES = 4  # per operation and generation mode: ~330 requests in all
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# An endless stream: held to its documented status and media type by hand below.
STREAM = "/v1/inbox/stream"


class LiveGateway:
    def __init__(self, base: str, key: str, inbox_token: str) -> None:
        self.base = base
        self.key = key
        self.inbox_token = inbox_token


def _webhook_key() -> str:
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


async def _prepare(database_url: str, redis_url: str, tmp_path: Path) -> str:
    services = await open_services(make_settings(database_url, redis_url, tmp_path))
    try:
        await store_user(services, ADA)
        return await admin_key(services)
    finally:
        await services.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("contract")
    database_url = f"sqlite+aiosqlite:///{tmp / 'notigate.db'}"
    key = asyncio.run(_prepare(database_url, redis_server.url, tmp))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIGATE_", "TWILIO_", "SENDGRID_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "NOTIGATE_REDIS_PREFIX": f"contract{uuid.uuid4().hex[:8]}",
        "NOTIGATE_OUTBOX": str(tmp / "outbox"),
        "NOTIGATE_INBOX_SECRET": "i" * 40,
        "NOTIGATE_UNSUBSCRIBE_SECRET": "u" * 40,
        "NOTIGATE_CONSOLE_SECRET": "c" * 40,
        "NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY": _webhook_key(),
        "TWILIO_AUTH_TOKEN": "twilio-auth-token-for-tests",
        "NOTIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, tmp / "serve.log")
        answer = httpx.post(
            f"{base}/v1/users/{ADA['user_id']}/inbox-token", headers={"authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 201, answer.text
        yield LiveGateway(base, key, answer.json()["token"])
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"notigate serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"notigate serve was not ready within 30 s:\n{log.read_text()}")


def _fuzz(
    operation: Any, mode: GenerationMode, headers: dict[str, str], base: str, statuses: list[int]
) -> list[str]:
    """The first failure schemathesis finds on one operation in one mode, as readable lines;
    every status answered goes to `statuses`."""
    found: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base, headers=headers, timeout=10)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, FailureGroup) as failure:  # a check's failure, or several
            if not found:  # the first is enough to act on; more of the same would drown it
                found.append(f"{operation.label} [{mode.value}]: {str(failure).strip()[:1500]}")

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
        if mode is not GenerationMode.NEGATIVE:
            raise
    return found


def test_every_operation_answers_as_the_document_says(live: LiveGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{live.base}/schema/openapi.json")
    failures: list[str] = []
    answered: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of the document loads
        operation = result.ok()
        if operation.path == STREAM:
            continue
        token = live.inbox_token if operation.path.startswith("/v1/inbox") else live.key
        statuses = answered.setdefault(operation.label, [])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(operation, mode, {"authorization": f"Bearer {token}"}, live.base, statuses)
    assert not failures, "\n\n".join(failures)
    # The run reached the handlers, not just the doors: every operation was called, and most
    # answered a success at least once (the others need ids no generator can guess).
    assert len(answered) >= 42 and all(answered.values())
    succeeded = [label for label, seen in answered.items() if any(200 <= s < 300 for s in seen)]
    assert len(succeeded) >= 15, answered


def test_the_inbox_stream_is_server_sent_events_with_a_query_token(live: LiveGateway) -> None:
    operation = httpx.get(f"{live.base}/schema/openapi.json").json()["paths"][STREAM]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "token" in {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    with httpx.stream("GET", f"{live.base}{STREAM}", params={"token": live.inbox_token}, timeout=5) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        first = next(answer.iter_lines())
    assert first == "event: unread"
    refused = httpx.get(f"{live.base}{STREAM}", params={"token": "it_forged.token"}, timeout=5)
    assert refused.status_code == 401 and "401" in operation["responses"]
    assert refused.json()["error"]["code"] == "invalid_inbox_token"


def test_the_reference_page_needs_nothing_but_the_gateway(live: LiveGateway) -> None:
    page = httpx.get(f"{live.base}/schema", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    linked = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert linked, page.text
    for url in linked:
        assert url.startswith("/schema/"), f"{url} is not served by the gateway itself"
        asset = httpx.get(f"{live.base}{url}", timeout=5)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert any(u.endswith("swagger-ui-bundle.js") for u in linked)


async def test_every_operation_is_described_with_the_real_error_shape(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    services = await open_services(make_settings(sqlite_url, redis_server.url, tmp_path))
    try:
        spec = create_app(services.settings, services=services).openapi_schema.to_schema()
    finally:
        await services.close()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    operations = [(f"{m.upper()} {p}", op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(operations) >= 43
    for label, operation in operations:
        assert operation.get("description"), f"{label} has no description"
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), f"{label}: parameter {parameter['name']} is not described"
        for status, response in operation["responses"].items():
            if int(status) >= 400 and label != "GET /readyz":  # readiness answers its checks
                assert response["content"]["application/json"]["schema"] == error, f"{label} {status}"
        statuses = set(operation["responses"])
        if any(operation.get("security", [])):  # an API key or an inbox token
            assert {"401", "503"} <= statuses, f"{label}: a credential is checked, so 401 and 503 apply"
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= statuses, f"{label} takes a body"
    assert list(dict(operations)["GET /metrics"]["responses"]["200"]["content"]) == [
        "text/plain; version=1.0.0"
    ]
