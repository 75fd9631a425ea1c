"""Policy test suites (`policies/tests/*.yaml`): pinned clock, user, history -> expectations.

Product teams change policies by pull request; these suites are how they say what a
change must (and must not) decide. Each case runs through the real `decide()`; a failure
shows expected against got, with the trace. Coverage is measured over the traces: which
rules matched, which conditions went both ways, which caps and constraints ever bit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.model import Decision, HistoryEntry, Intent, TraceStep, UserState
from gateway.policy.compiled import CompiledPolicy, Origin
from gateway.policy.diagnostics import Diagnostic
from gateway.policy.engine import NoMatchingRule, decide
from gateway.policy.source import PathKey, SourceDoc
from gateway.timeutil import parse_duration

CoverageKey = tuple[str, str, bool]


@dataclass
class Case:
    suite: str
    name: str
    origin: Origin
    intent: Intent
    user: UserState
    now: dt.datetime
    history: list[HistoryEntry]
    expect: dict[str, Any]


@dataclass
class CaseResult:
    case: Case
    problems: list[str]
    decision: Decision | None
    trace: list[TraceStep]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class CoverageItem:
    key: CoverageKey
    origin: Origin
    description: str


@dataclass
class SuiteReport:
    results: list[CaseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # malformed cases
    covered: set[CoverageKey] = field(default_factory=set)
    skipped: list[tuple[Case, str]] = field(default_factory=list)  # (case, why it did not run)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


# --- loading --------------------------------------------------------------------------


def load_cases(doc: SourceDoc) -> tuple[list[Case], list[Diagnostic]]:
    data = doc.data
    suite = data["name"]
    options = data.get("options", {})
    users = data.get("fixtures", {}).get("users", {})
    histories = data.get("fixtures", {}).get("histories", {})
    cases, problems = [], []
    for index, spec in enumerate(data["tests"]):
        key: PathKey = ("tests", index)
        loc = doc.loc(key)
        origin = Origin(doc.name, loc.line, loc.col)
        try:
            now_text = spec.get("now", options.get("now"))
            if now_text is None:
                raise ValueError("no clock: set `now` on the test or `options.now` on the suite")
            now = msgspec.convert(now_text, dt.datetime, strict=False)
            if now.tzinfo is None:
                raise ValueError(f"`now` {now_text!r} needs a UTC offset, e.g. 2026-11-21T18:00:00Z")
            user_spec = spec.get("user", options.get("user"))
            if isinstance(user_spec, str):
                if user_spec not in users:
                    raise ValueError(
                        f"unknown user fixture {user_spec!r}; defined: {', '.join(sorted(users))}"
                    )
                user_spec = users[user_spec]
            intent = msgspec.convert(spec["intent"], Intent, strict=False)
            if user_spec is None:
                user_spec = {"user_id": intent.user_id}
            user = msgspec.convert(user_spec, UserState, strict=False)
            history_spec = spec.get("history", [])
            if isinstance(history_spec, str):
                if history_spec not in histories:
                    raise ValueError(f"unknown history fixture {history_spec!r}")
                history_spec = histories[history_spec]
            history = _history(history_spec, now)
        except (msgspec.ValidationError, ValueError) as exc:
            problems.append(
                Diagnostic(
                    file=origin.file,
                    line=origin.line,
                    col=origin.col,
                    code="test-invalid",
                    message=f"test {spec.get('name')!r}: {exc}",
                )
            )
            continue
        cases.append(
            Case(
                suite=suite,
                name=spec["name"],
                origin=origin,
                intent=intent,
                user=user,
                now=now,
                history=history,
                expect=spec.get("expect", {}),
            )
        )
    return cases, problems


def _history(entries: list[dict[str, Any]], now: dt.datetime) -> list[HistoryEntry]:
    """History rows may say `ago: 2m` instead of `at`, and `count: N` for N identical rows."""
    history = []
    for raw in entries:
        entry = dict(raw)
        count = entry.pop("count", 1)
        if "ago" in entry:
            entry["at"] = (now - parse_duration(entry.pop("ago"))).isoformat()
        item = msgspec.convert(entry, HistoryEntry, strict=False)
        history.extend([item] * count)
    return history


# --- running --------------------------------------------------------------------------


def run_case(case: Case, policy: CompiledPolicy) -> CaseResult:
    try:
        decision = decide(case.intent, case.user, case.now, case.history, policy)
    except NoMatchingRule as exc:
        expected_error = case.expect.get("error")
        problems = [] if expected_error == "no_matching_rule" else [f"decide() failed: {exc}"]
        return CaseResult(case, problems, None, exc.trace)
    return CaseResult(case, compare(case.expect, decision), decision, decision.trace)


def run_suites(
    policy: CompiledPolicy,
    docs: Iterable[SourceDoc],
    blocked: Callable[[Case], str | None] = lambda case: None,
) -> SuiteReport:
    """Run every case, except those `blocked` names a reason for (a broken file they need)."""
    report = SuiteReport()
    for doc in docs:
        cases, problems = load_cases(doc)
        report.diagnostics += problems
        for case in cases:
            why = blocked(case)
            if why is not None:
                report.skipped.append((case, why))
                continue
            result = run_case(case, policy)
            report.results.append(result)
            report.covered |= coverage_keys(result.trace)
    return report


def failure_diagnostics(report: SuiteReport) -> list[Diagnostic]:
    found = list(report.diagnostics)
    for result in report.failures:
        origin = result.case.origin
        found.append(
            Diagnostic(
                file=origin.file,
                line=origin.line,
                col=origin.col,
                code="test-failed",
                message=f"test {result.case.name!r}: " + "; ".join(result.problems),
            )
        )
    return found


# --- comparing ------------------------------------------------------------------------

_DELIVERY_FIELDS = (
    "send_at",
    "deferred",
    "tier",
    "queue",
    "template",
    "providers",
    "recipients",
    "estimated_cost",
    "rule",
)


def compare(expect: Mapping[str, Any], decision: Decision) -> list[str]:
    problems = []
    if "error" in expect:
        return [f"expected error {expect['error']!r}, got a decision"]
    for name in ("rule", "category", "tier"):
        if name in expect and expect[name] != getattr(decision, name):
            problems.append(f"{name}: expected {expect[name]!r}, got {getattr(decision, name)!r}")
    if "fallback" in expect and list(expect["fallback"]) != decision.fallback:
        problems.append(f"fallback: expected {expect['fallback']}, got {decision.fallback}")
    if "estimated_cost" in expect and abs(float(expect["estimated_cost"]) - decision.estimated_cost) > 1e-9:
        problems.append(f"estimated_cost: expected {expect['estimated_cost']}, got {decision.estimated_cost}")
    for group, actual in (("deliveries", decision.deliveries), ("standby", decision.standby)):
        if group in expect:
            problems += _compare_items(group, expect[group], {d.channel: d for d in actual}, _DELIVERY_FIELDS)
    if "suppressed" in expect:
        problems += _compare_items(
            "suppressed",
            expect["suppressed"],
            {s.channel: s for s in decision.suppressed},
            ("reason", "rule", "digest"),
        )
    return problems


def _compare_items(
    group: str, expected: list[Any], actual: Mapping[str, Any], fields: tuple[str, ...]
) -> list[str]:
    wanted = {
        (e if isinstance(e, str) else e["channel"]): ({} if isinstance(e, str) else e) for e in expected
    }
    problems = []
    if set(wanted) != set(actual):
        problems.append(f"{group}: expected channels {sorted(wanted)}, got {sorted(actual)}")
    for channel, spec in wanted.items():
        item = actual.get(channel)
        if item is None:
            continue
        for name in fields:
            if name not in spec:
                continue
            want, got = spec[name], getattr(item, name)
            if name == "send_at" and want is not None:
                want = msgspec.convert(want, dt.datetime, strict=False)
            if want != got:
                shown = got.isoformat() if isinstance(got, dt.datetime) else got
                problems.append(f"{group}.{channel}.{name}: expected {spec[name]!r}, got {shown!r}")
    return problems


# --- coverage -------------------------------------------------------------------------


def coverage_keys(trace: Iterable[TraceStep]) -> set[CoverageKey]:
    keys: set[CoverageKey] = set()
    for step in trace:
        if step.rule is None:
            continue
        value = step.value
        if isinstance(value, dict) and "counted_as" in value:
            value = value["counted_as"] == "match"
        if step.step == "match" and value is True:
            keys.add(("match", step.rule, True))
        elif step.step in ("condition", "constraint") and isinstance(value, bool):
            keys.add((step.step, step.rule, value))
        elif step.step in ("cap", "dedup", "batch", "delivery_window"):
            keys.add((step.step, step.rule, True))
    return keys


def coverage_items(policy: CompiledPolicy) -> list[CoverageItem]:
    items = []
    for rule in policy.rules:
        items.append(
            CoverageItem(("match", rule.name, True), rule.origin, f"rule {rule.name!r} never matched")
        )
        if rule.condition is not None:
            for outcome in (True, False):
                items.append(
                    CoverageItem(
                        ("condition", rule.name, outcome),
                        rule.condition.origin,
                        f"condition of rule {rule.name!r} never {str(outcome).lower()}",
                    )
                )
        if rule.dedup is not None:
            items.append(
                CoverageItem(
                    ("dedup", rule.name, True),
                    rule.where("dedup"),
                    f"dedup window of rule {rule.name!r} never caught a duplicate",
                )
            )
        if rule.batch is not None:
            items.append(
                CoverageItem(
                    ("batch", rule.name, True),
                    rule.batch.origin,
                    f"batching of rule {rule.name!r} never used",
                )
            )
        if rule.delivery_window is not None:
            items.append(
                CoverageItem(
                    ("delivery_window", rule.name, True),
                    rule.where("delivery_window"),
                    f"delivery window of rule {rule.name!r} never deferred a message",
                )
            )
    for constraint in policy.constraints:
        items.append(
            CoverageItem(
                ("constraint", constraint.name, True),
                constraint.origin,
                f"constraint {constraint.name!r} never applied",
            )
        )
        if constraint.condition is not None:
            items.append(
                CoverageItem(
                    ("constraint", constraint.name, False),
                    constraint.condition.origin,
                    f"condition of constraint {constraint.name!r} never false",
                )
            )
    caps = {cap.name: cap for cap in policy.caps}
    for rule in policy.rules:
        caps.update({cap.name: cap for cap in rule.caps})
    for cap in caps.values():
        items.append(CoverageItem(("cap", cap.name, True), cap.origin, f"cap {cap.name!r} never reached"))
    return sorted(items, key=lambda i: (i.origin.file, i.origin.line, i.origin.col, i.key))


def coverage_percent(items: list[CoverageItem], covered: set[CoverageKey]) -> float:
    if not items:
        return 100.0
    return 100.0 * sum(1 for i in items if i.key in covered) / len(items)
