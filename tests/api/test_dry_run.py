"""POST /v1/dry-run and GET /v1/policy over HTTP: same answers as decide(), contract-shaped errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.api.context import Gateway
from gateway.model import Decision, DryRunRequest, UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.engine import decide
from gateway.settings import Settings
from tests.conftest import REPO

USER = {
    "user_id": "u_ada",
    "timezone": "America/Los_Angeles",
    "contacts": {
        "email": "ada@example.com",
        "phone": "+14155550100",
        "devices": [{"platform": "ios", "token": "t-ios"}, {"platform": "android", "token": "t-and"}],
    },
}
INTENT = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1001", "carrier": "UPS"}}
AT = "2026-11-21T18:00:00Z"


class StoredUsers:
    def __init__(self, *users: UserState) -> None:
        self.users = {u.user_id: u for u in users}

    async def get_user(self, user_id: str) -> UserState | None:
        return self.users.get(user_id)


@pytest.fixture
def client(policy: CompiledPolicy) -> Iterator[TestClient]:  # type: ignore[type-arg]
    settings = Settings(policies_dir=REPO / "policies")
    users = StoredUsers(msgspec.convert(USER, UserState))
    gateway = Gateway(
        settings=settings,
        policy=policy,
        users=users,
        clock=lambda: dt.datetime(2026, 11, 21, 18, 0, tzinfo=dt.UTC),
    )
    with TestClient(create_app(gateway=gateway)) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "field"}
    return error


def test_dry_run_returns_exactly_what_decide_returns(client: TestClient, policy: CompiledPolicy) -> None:  # type: ignore[type-arg]
    body = {"intent": INTENT, "user": USER, "at": AT}
    response = client.post("/v1/dry-run", json=body)
    assert response.status_code == 200
    request = msgspec.convert(body, DryRunRequest, strict=False)
    assert request.user is not None and request.at is not None
    expected = decide(request.intent, request.user, request.at, [], policy)
    assert msgspec.json.decode(response.content, type=Decision) == expected


def test_dry_run_speaks_the_contract(client: TestClient, policy: CompiledPolicy) -> None:  # type: ignore[type-arg]
    decision = client.post("/v1/dry-run", json={"intent": INTENT, "user": USER, "at": AT}).json()
    assert decision["policy_version"] == policy.version
    assert (decision["event"], decision["category"], decision["tier"]) == (
        "order.shipped",
        "transactional",
        "standard",
    )
    push = decision["deliveries"][0]
    assert set(push) >= {
        "channel",
        "send_at",
        "deferred",
        "queue",
        "template",
        "providers",
        "recipients",
        "estimated_cost",
    }
    assert (push["channel"], push["send_at"], push["deferred"], push["recipients"]) == ("push", None, None, 2)
    assert decision["suppressed"] == [
        {
            "channel": "sms",
            "reason": "opted_out",
            "detail": "sms is opt-in and the user has not opted in",
            "rule": "order-updates",
            "digest": None,
        }
    ]
    assert decision["fallback"] == ["push", "email"]
    match = next(step for step in decision["trace"] if step["step"] == "match")
    assert match["rule"] == "order-updates"
    assert match["file"] == "policies/transactional.yaml"
    assert isinstance(match["line"], int)
    condition = next(step for step in decision["trace"] if step["step"] == "condition")
    assert condition["expr"] == "has(intent.data.digital) && intent.data.digital == true"
    assert condition["value"] is False


def test_dry_run_uses_the_stored_user_and_the_clock_when_absent(client: TestClient) -> None:  # type: ignore[type-arg]
    decision = client.post("/v1/dry-run", json={"intent": INTENT}).json()
    assert decision["evaluated_at"] == "2026-11-21T18:00:00Z"
    assert [d["channel"] for d in decision["deliveries"]] == ["push", "email", "in_app"]


def test_dry_run_history_changes_the_decision(client: TestClient) -> None:  # type: ignore[type-arg]
    history = [
        {"event": "order.shipped", "channel": c, "at": "2026-11-21T17:58:00Z", "data": INTENT["data"]}
        for c in ("push", "email", "in_app")
    ]
    decision = client.post(
        "/v1/dry-run", json={"intent": INTENT, "user": USER, "at": AT, "history": history}
    ).json()
    assert decision["deliveries"] == []
    assert {s["channel"]: s["reason"] for s in decision["suppressed"]} == {
        "push": "duplicate",
        "email": "duplicate",
        "in_app": "duplicate",
        "sms": "opted_out",
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"intent": {**INTENT, "priority": "asap"}}, 422, "invalid_value", "intent.priority"),
        ({"intent": {"event": "order.shipped"}}, 422, "missing_field", "intent.user_id"),
        ({"intent": {**INTENT, "colour": "red"}}, 422, "unknown_field", "intent.colour"),
        ({"intent": {**INTENT, "event": "Order Shipped"}}, 422, "invalid_value", "intent.event"),
        ({"intent": {**INTENT, "send_at": "2026-12-01T09:00:00"}}, 422, "invalid_value", "intent.send_at"),
        ({"intent": {**INTENT, "channels": []}}, 422, "invalid_value", "intent.channels"),
        ({"intent": {**INTENT, "channels": ["fax"]}}, 422, "unknown_channel", "intent.channels[0]"),
        (
            {"intent": INTENT, "user": {**USER, "timezone": "Mars/Olympus"}},
            422,
            "invalid_value",
            "user.timezone",
        ),
        ({"intent": INTENT, "user": {**USER, "user_id": "u_other"}}, 422, "user_mismatch", "user.user_id"),
        ({"intent": {**INTENT, "event": "unknown.thing"}}, 422, "no_matching_rule", "intent.event"),
        (
            {"intent": INTENT, "history": [{"event": "order.shipped", "channel": "push"}]},
            422,
            "missing_field",
            "history[0].at",
        ),
        ({"intent": INTENT, "at": "yesterday"}, 422, "invalid_value", "at"),
    ],
)
def test_bad_input_gets_a_contract_error_naming_the_field(
    client: TestClient[Any],
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    response = client.post("/v1/dry-run", json=body)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.post(
        "/v1/dry-run", content=b'{"intent": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"
    big = (
        b'{"intent": {"event": "order.shipped", "user_id": "u_ada", "data": {"x": "'
        + b"a" * 1_100_000
        + b'"}}}'
    )
    response = client.post("/v1/dry-run", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_unknown_routes_answer_in_the_error_shape(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = client.get("/v1/dry-run")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_policy_endpoint_lists_version_files_and_rules(client: TestClient, policy: CompiledPolicy) -> None:  # type: ignore[type-arg]
    summary = client.get("/v1/policy").json()
    assert summary["version"] == policy.version
    assert summary["cel_runtime"] == policy.runtime
    assert {f["path"] for f in summary["files"]} >= {
        "policies/defaults.yaml",
        "policies/marketing.yaml",
        "providers.yaml",
    }
    digital = next(r for r in summary["rules"] if r["name"] == "digital-order-updates")
    assert digital["condition"] == "has(intent.data.digital) && intent.data.digital == true"
    assert digital["file"] == "policies/transactional.yaml"
    assert digital["channels"] == ["email", "in_app"]
    assert summary["channels"] == ["email", "in_app", "push", "sms", "webhook"]


def test_openapi_describes_the_dry_run(client: TestClient) -> None:  # type: ignore[type-arg]
    spec = client.get("/schema/openapi.json").json()
    operation = spec["paths"]["/v1/dry-run"]["post"]
    assert "requestBody" in operation
    assert "Intent" in spec["components"]["schemas"]
    assert "Decision" in spec["components"]["schemas"]


async def test_the_full_app_serves_the_dry_run_behind_an_api_key(services) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import admin_key, client

    token = await admin_key(services, "reader", admin=False, events=["order.*"])
    async with client(services) as anonymous:
        refused = await anonymous.post("/v1/dry-run", json={"intent": INTENT, "user": USER, "at": AT})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"
    async with client(services, token) as http:
        answered = await http.post("/v1/dry-run", json={"intent": INTENT, "user": USER, "at": AT})
        policy = await http.get("/v1/policy")
    assert answered.status_code == 200
    assert answered.json()["rule"] == "order-updates"
    assert policy.json()["version"] == services.policy.version


def test_an_unknown_user_is_decided_for_as_intake_decides(client: TestClient) -> None:  # type: ignore[type-arg]
    """Intake accepts an intent for an id nothing stores (only the feed delivers); the dry run
    says exactly that, and its first trace step says the user is unknown."""
    response = client.post("/v1/dry-run", json={"intent": {**INTENT, "user_id": "u_nobody"}, "at": AT})
    assert response.status_code == 200, response.text
    decision = response.json()
    assert [d["channel"] for d in decision["deliveries"]] == ["in_app"]
    assert {s["channel"]: s["reason"] for s in decision["suppressed"]} == {
        "push": "no_address",
        "email": "no_address",
        "sms": "opted_out",
    }
    assert decision["trace"][0]["step"] == "user" and decision["trace"][0]["value"] == "unknown"
    stored = client.post("/v1/dry-run", json={"intent": INTENT, "at": AT}).json()
    assert stored["trace"][0]["step"] != "user"
