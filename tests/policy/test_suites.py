"""The policy test suites in policies/tests, run by pytest under every CEL runtime.

`notigate test` runs the same cases; here each case is its own pytest item so a failure
names it, and a second test proves both runtimes produce the very same decisions.
"""

from __future__ import annotations

import msgspec
import pytest

from gateway.policy.cel import available_runtimes
from gateway.policy.compiler import load_documents
from gateway.policy.engine import NoMatchingRule, decide
from gateway.policy.schema import SchemaSet
from gateway.policy.suites import Case, coverage_items, coverage_keys, load_cases, run_case
from tests.conftest import compiled_policy, shipped_paths


def _cases() -> list[Case]:
    paths = shipped_paths()
    bundle = load_documents(paths, SchemaSet(paths.schemas))
    assert not bundle.diagnostics, bundle.diagnostics
    cases: list[Case] = []
    for doc in bundle.suites:
        found, problems = load_cases(doc)
        assert not problems, problems
        cases += found
    return cases


CASES = _cases()


def test_the_suites_cover_every_reference_row() -> None:
    names = " ".join(case.name for case in CASES)
    for row in range(1, 16):
        assert f"R{row}:" in names or f"R{row} " in names, f"no policy test case for reference row R{row}"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.suite}::{c.name}" for c in CASES])
def test_policy_case(case: Case, runtime_name: str) -> None:
    result = run_case(case, compiled_policy(runtime_name))
    assert result.passed, "\n".join(result.problems)


def test_the_shipped_suites_exercise_every_rule_and_branch(runtime_name: str) -> None:
    policy = compiled_policy(runtime_name)
    covered = set()
    for case in CASES:
        covered |= coverage_keys(run_case(case, policy).trace)
    missed = [item.description for item in coverage_items(policy) if item.key not in covered]
    assert missed == []


def _comparable(case: Case, runtime: str) -> bytes:
    try:
        decision = decide(case.intent, case.user, case.now, case.history, compiled_policy(runtime))
    except NoMatchingRule as exc:
        return f"no rule for {exc.event}".encode()
    # Runtimes word their error messages differently; everything else must be identical.
    trace = [
        msgspec.structs.replace(s, value={"counted_as": s.value["counted_as"]})
        if isinstance(s.value, dict) and "error" in s.value
        else s
        for s in decision.trace
    ]
    return msgspec.json.encode(msgspec.structs.replace(decision, trace=trace))


@pytest.mark.skipif(len(available_runtimes()) < 2, reason="only one CEL runtime is installed")
def test_both_runtimes_make_identical_decisions() -> None:
    first, second = available_runtimes()[:2]
    for case in CASES:
        assert _comparable(case, first) == _comparable(case, second), case.name
