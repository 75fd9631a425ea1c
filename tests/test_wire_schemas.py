"""schemas/ for the wire shapes are generated from gateway.model; they must not drift."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from gateway.wire_schemas import GENERATED, render
from tests.conftest import REPO


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_schema_matches_the_structs(name: str) -> None:
    committed = (REPO / "schemas" / name).read_text(encoding="utf-8")
    assert committed == render(name), f"run: python -m gateway.wire_schemas  (schemas/{name} is stale)"


def test_the_contract_example_intent_is_valid_and_typos_are_not() -> None:
    validator = Draft202012Validator(json.loads((REPO / "schemas" / "intent.schema.json").read_text()))
    example = {
        "event": "order.shipped",
        "user_id": "u_12345",
        "data": {"order_id": "A-1001", "carrier": "UPS"},
        "priority": "normal",
        "channels": ["push", "email"],
        "idempotency_key": "order-shipped-A-1001",
        "send_at": "2026-12-01T09:00:00Z",
        "locale": "en-GB",
    }
    assert list(validator.iter_errors(example)) == []
    assert list(validator.iter_errors({**example, "priorty": "low"}))
    assert list(validator.iter_errors({**example, "priority": "asap"}))
