"""schemas/ for the wire shapes are generated from gateway.model; they must not drift."""

from __future__ import annotations

import datetime as dt
import json
from typing import get_args

import msgspec
import pytest
from jsonschema import Draft202012Validator

from gateway.model import Intent, TraceKind, UserState
from gateway.policy.engine import decide
from gateway.wire_schemas import GENERATED, render
from tests.conftest import REPO, compiled_policy


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


def test_a_decision_with_its_trace_validates_and_its_step_kinds_are_documented() -> None:
    """Trace step kinds are a closed set: the schema's enum, each one documented."""
    schema = json.loads((REPO / "schemas" / "decision.schema.json").read_text())
    kinds = schema["$defs"]["TraceStep"]["properties"]["step"]["enum"]
    assert sorted(kinds) == sorted(get_args(TraceKind))
    policy = compiled_policy("cel-python")
    intent = Intent(event="order.shipped", user_id="u_1", data={"order_id": "A-1", "carrier": "UPS"})
    decision = decide(
        intent, UserState(user_id="u_1"), dt.datetime(2026, 11, 21, 18, tzinfo=dt.UTC), [], policy
    )
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(msgspec.to_builtins(decision))) == []
    wrong = msgspec.to_builtins(decision) | {
        "trace": [{**msgspec.to_builtins(decision.trace[0]), "step": "guess"}]
    }
    assert list(validator.iter_errors(wrong))
    documented = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    assert [kind for kind in kinds if f"`{kind}`" not in documented] == []
