"""`notigate diff`: the same corpus decided under two bundles, compared and reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.policy.checker import check
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.corpus import from_tests, generated
from gateway.policy.diff import compare
from gateway.policy.diff_command import stored
from gateway.policy.diff_render import breaches, parse_threshold, render
from gateway.services import Services
from tests.bundles import copy_bundle, email_only
from tests.conftest import shipped_paths
from tests.harness import ADA, admin_key, client, store_user

RUNTIME = "cel-expr-python"


@pytest.fixture(scope="module")
def twins() -> tuple[CompiledPolicy, CompiledPolicy]:
    """The shipped bundle compiled twice: equal, but not the same objects."""
    first = check(shipped_paths(), runtime=RUNTIME, run_tests=False).policy
    second = check(shipped_paths(), runtime=RUNTIME, run_tests=False).policy
    assert first is not None and second is not None
    return first, second


@pytest.fixture(scope="module")
def test_cases() -> list:  # type: ignore[type-arg]
    return from_tests(check(shipped_paths(), runtime=RUNTIME, run_tests=False).bundle)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), count=st.integers(0, 60), cases=st.data())
def test_a_bundle_diffed_against_itself_reports_no_change_for_any_corpus(
    twins: tuple[CompiledPolicy, CompiledPolicy],
    test_cases: list[Any],
    seed: int,
    count: int,
    cases: st.DataObject,
) -> None:
    before, after = twins
    picked = cases.draw(st.lists(st.sampled_from(test_cases), max_size=20)) if test_cases else []
    samples = picked + generated(before, count, seed=seed, seeds=test_cases)
    report = compare(before, after, samples)
    assert report.samples == len(samples)
    assert report.changed == 0 and report.classes == []
    assert all(e.changed == 0 for e in report.events)
    assert all(
        v.messages_before == v.messages_after and v.cost_before == v.cost_after for v in report.volumes
    )
    assert breaches(report, [parse_threshold("any-change"), parse_threshold("cost-up=0")]) == []


def test_the_generated_workload_is_seeded_and_covers_the_bundle(
    twins: tuple[CompiledPolicy, CompiledPolicy],
) -> None:
    policy = twins[0]
    one, again, other = (
        generated(policy, 300, seed=7),
        generated(policy, 300, seed=7),
        generated(policy, 300, seed=8),
    )
    assert one == again and one != other
    assert {s.intent.priority for s in one} == {"urgent", "normal", "low"}
    assert {"order.shipped", "security.otp", "social.like", "marketing.promo"} <= {
        s.intent.event for s in one
    }
    assert len({s.user.timezone for s in one}) > 3


def test_a_changed_rule_shows_its_routes_and_cost(tmp_path: Path) -> None:
    before = check(copy_bundle(tmp_path / "a"), runtime=RUNTIME, run_tests=False).policy
    changed = copy_bundle(tmp_path / "b")
    email_only(changed)
    after = check(changed, runtime=RUNTIME, run_tests=False).policy
    assert before is not None and after is not None
    samples = generated(before, 400, seed=3)
    report = compare(before, after, samples, per_day=10_000)
    orders = [e for e in report.events if e.event.startswith("order.") and e.changed]
    assert orders and all(set(e.channels_removed) <= {"push", "sms"} for e in orders)
    assert not [e for e in report.events if not e.event.startswith("order.") and e.changed]
    push = next(v for v in report.volumes if v.channel == "push")
    assert push.messages_after < push.messages_before
    assert report.classes and all(c.event.startswith("order.") for c in report.classes)
    example = report.classes[0].example
    assert "push" in report.classes[0].before and "push" not in report.classes[0].after
    assert any(line.startswith("send push") for line in example.before)
    assert not any(line.startswith("send push") for line in example.after)
    text = render(report, "text")
    assert "changed routes" in text and "order." in text and "push:" in text
    markdown = render(report, "markdown")
    assert "| channel | messages before |" in markdown and "<details>" in markdown
    data = json.loads(render(report, "json"))
    assert data["changed"] == report.changed and data["per_day"] == 10_000


def test_thresholds_set_the_exit_code(twins: tuple[CompiledPolicy, CompiledPolicy]) -> None:
    with pytest.raises(ValueError, match="cost-up=PERCENT"):
        parse_threshold("cost-down=3")
    with pytest.raises(ValueError, match="percentage"):
        parse_threshold("cost-up=lots")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_notigate_diff_against_a_git_ref_prints_the_changed_routes_and_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy repository whose branch changes one rule, diffed against main as CI would.

    ~7 s: each of the two runs extracts main's bundle and compiles both bundles."""
    paths = copy_bundle(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "-c", "user.email=ci@example.com", "-c", "user.name=CI", "add", ".")
    git(tmp_path, "-c", "user.email=ci@example.com", "-c", "user.name=CI", "commit", "-qm", "bundle")
    email_only(paths)
    args = ["diff", "main", "--policies", str(paths.policies), "--samples", "300", "--per-day", "1000"]
    assert main([*args, "--fail-on", "cost-up=50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy diff main (")
    assert "order.shipped normal" in out and "-push" in out
    assert "total cost:" in out
    assert main([*args, "--format", "markdown", "--fail-on", "any-change"]) == 1
    out, err = capsys.readouterr()
    assert "### Policy diff `main (" in out and "`order.shipped`" in out
    assert "decisions changed" in err
    assert main(["diff", "main", "--policies", str(paths.policies), "--fail-on", "sometimes"]) == 2


async def test_from_store_decides_the_stored_intents_with_their_stored_users(services: Services) -> None:
    """Intents accepted through the API are read back with their users, and decided again."""
    await store_user(services, ADA)
    await store_user(services, {**ADA, "user_id": "u_gone"})
    token = await admin_key(services)
    async with client(services, token) as http:
        for n, user in enumerate(("u_ada", "u_ada", "u_gone")):
            body = {
                "event": "order.shipped",
                "user_id": user,
                "data": {"order_id": f"S-{n}", "carrier": "UPS"},
            }
            assert (await http.post("/v1/intents", json=body)).status_code == 202
        assert (await http.delete("/v1/users/u_gone")).status_code in (200, 204)
    samples = await stored(services.settings.database_url, 1, 100)
    assert [(s.source, s.intent.user_id, s.intent.data["order_id"]) for s in samples] == [
        ("store", "u_ada", "S-0"),
        ("store", "u_ada", "S-1"),
    ]
    assert samples[0].user.contacts.email == ADA["contacts"]["email"]  # type: ignore[index]
    # the newest two when limited: S-1, and S-2 whose user is gone
    assert await stored(services.settings.database_url, 1, 2) == samples[1:]
    report = compare(services.policy, services.policy, samples)
    assert report.samples == 2 and report.changed == 0
    assert {v.channel for v in report.volumes} >= {"push", "email", "in_app"}


def test_the_generated_workload_only_sends_priorities_a_rule_routes(
    twins: tuple[CompiledPolicy, CompiledPolicy],
) -> None:
    policy = twins[0]
    for sample in generated(policy, 300, seed=5):
        rules = policy.candidates(sample.intent.event)
        assert any(r.priorities is None or sample.intent.priority in r.priorities for r in rules)
