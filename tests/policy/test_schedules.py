"""`schedules:` in policy files: compiled from the shipped bundle, errors located at the value."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from gateway.policy.checker import check
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from tests.conftest import REPO, RUNTIMES

SCHEDULE = """
schedules:
  - name: nightly
    cron: {cron}
    event: {event}
    segment: {segment}
    on_error: no_match
    data: {data}
"""


def test_the_shipped_weekly_digest_is_monday_nine_local_for_marketing_email(policy: CompiledPolicy) -> None:
    (digest,) = policy.schedules
    assert digest.name == "weekly-digest-monday"
    assert digest.cron == "0 9 * * 1"
    assert digest.event == "marketing.weekly_digest"
    assert digest.priority == "low"
    assert digest.misfire == dt.timedelta(hours=1)
    assert digest.origin.file.endswith("policies/marketing.yaml")


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path / "providers.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def diagnostics_with(bundle: Path, runtime: str, **fields: str) -> list[str]:
    values = {
        "cron": '"0 3 * * *"',
        "event": "marketing.weekly_digest",
        "segment": "has(user.contacts.email)",
        "data": '{week: "$week", articles: [], unsubscribe_url: "https://example.com/u"}',
        **fields,
    }
    path = bundle / "policies" / "social.yaml"
    text = (REPO / "policies" / "social.yaml").read_text(encoding="utf-8")
    base = len(text.splitlines())
    path.write_text(text.rstrip("\n") + "\n" + SCHEDULE.format(**values), encoding="utf-8")
    result = check(BundlePaths.for_policies(Path("policies"), schemas=REPO / "schemas"), runtime=runtime)
    return [_shift(d.format(), base) for d in result.diagnostics]


def _shift(line: str, base: int) -> str:
    """file:LINE:col -> file:+offset:col, the offset counted from the appended block's first line."""
    file, number, rest = line.split(":", 2)
    return f"{file}:+{int(number) - base}:{rest}"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_valid_schedule_compiles(bundle: Path, runtime: str) -> None:
    assert diagnostics_with(bundle, runtime) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_bad_cron_is_located_at_the_expression(bundle: Path, runtime: str) -> None:
    assert diagnostics_with(bundle, runtime, cron='"0 25 * * *"') == [
        "policies/social.yaml:+4:11: cron: cron '0 25 * * *' is not valid: Bad hour"
    ]
    assert diagnostics_with(bundle, runtime, cron='"0 9 * * 1 2026"') == [
        "policies/social.yaml:+4:11: cron: cron '0 9 * * 1 2026' has 6 fields; write five: minute hour "
        "day-of-month month day-of-week, e.g. '0 9 * * 1' (Monday 09:00)"
    ]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_bad_segment_is_located_and_quoted(bundle: Path, runtime: str) -> None:
    found = diagnostics_with(bundle, runtime, segment="is_vip(user)")
    assert len(found) == 1
    assert found[0].startswith("policies/social.yaml:+6:14: cel-check: in CEL expression 'is_vip(user)'")
    found = diagnostics_with(bundle, runtime, segment='"intent.priority == \\"low\\""')
    assert found == [
        "policies/social.yaml:+6:14: cel-check: in CEL expression 'intent.priority == \"low\"': a "
        "schedule's segment sees only `user` and `now` (the occurrence), not `intent`"
    ]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_unrouted_event_and_unknown_placeholders_are_errors(bundle: Path, runtime: str) -> None:
    # `marketing.*` routes it, but there is nothing to render it with.
    assert diagnostics_with(bundle, runtime, event="marketing.nope") == [
        "policies/social.yaml:+5:12: unknown-template: schedule 'nightly' fires 'marketing.nope', "
        "but templates/marketing.nope/ does not exist"
    ]
    found = diagnostics_with(bundle, runtime, event="billing.invoice")
    assert found == [
        "policies/social.yaml:+5:12: unknown-event: schedule 'nightly' fires 'billing.invoice' at "
        "priority normal, which no rule routes"
    ]
    found = diagnostics_with(bundle, runtime, data='{week: "$month"}')
    assert found == [
        "policies/social.yaml:+8:11: schedule-data: '$month' uses $month; a schedule's data may use "
        "$date, $occurrence, $schedule, $week"
    ]
