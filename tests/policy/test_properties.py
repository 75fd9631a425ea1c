"""Invariants of the shipped policies, over generated intents, users, clocks and histories.

Each property is a promise the product makes whatever the input: urgent messages are
never held back by opt-outs, quiet hours or caps; nothing goes to a channel without an
address; quiet hours defer exactly to their end; caps are never exceeded; fallback chains
never repeat a channel; every suppression is explained; the same inputs decide the same.
The clocks cluster around daylight-saving changes, and the zones include half-hour and
45-minute offsets, where off-by-an-hour mistakes live.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model import (
    Contacts,
    Decision,
    Delivery,
    Device,
    HistoryEntry,
    Intent,
    Preference,
    QuietHours,
    UserState,
    zone,
)
from gateway.policy.cel_functions import glob_event
from gateway.policy.compiled import CompiledPolicy, Rule
from gateway.policy.engine import NoMatchingRule, _preference, decide
from gateway.policy.tracing import NO_TRACE
from gateway.timeutil import DailyWindow, minute_of_day
from tests.conftest import compiled_policy

UTC = dt.UTC
ROUTED_EVENTS = [
    "order.shipped",
    "order.delivered",
    "order.receipt",
    "payment.failed",
    "security.fraud_alert",
    "security.otp",
    "security.password_changed",
    "security.new_login",
    "marketing.weekly_digest",
    "marketing.promo",
    "social.like",
    "social.comment",
    "social.follow",
    "social.mention",
]
EVENTS = [*ROUTED_EVENTS, "unknown.event"]
CHANNELS = ["push", "email", "sms", "in_app", "webhook"]
ZONES = [
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Paris",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]
# Instants near 2026's daylight-saving changes in the zones above, plus ordinary days.
ANCHORS = [
    dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # US spring forward
    dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # US fall back
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # EU spring forward
    dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # EU fall back
    dt.datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe / Adelaide fall back
    dt.datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe spring forward (30 minutes)
    dt.datetime(2026, 9, 26, 14, 0, tzinfo=UTC),  # Chatham spring forward
    dt.datetime(2026, 6, 15, 12, 0, tzinfo=UTC),
    dt.datetime(2026, 11, 21, 18, 0, tzinfo=UTC),
]

clocks = st.builds(
    lambda anchor, offset: anchor + dt.timedelta(seconds=offset),
    st.sampled_from(ANCHORS),
    st.integers(min_value=-2 * 86400, max_value=2 * 86400),
)
hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))
user_ids = st.sampled_from(["u_1", "u_2"])
data = st.fixed_dictionaries(
    {"order_id": st.sampled_from(["A-1", "A-2"])},
    optional={"digital": st.booleans(), "actor_id": user_ids, "amount": st.integers(1, 2000)},
)


@st.composite
def users(draw: st.DrawFn, user_id: str) -> UserState:
    devices = draw(
        st.lists(
            st.builds(
                Device,
                platform=st.sampled_from(["ios", "android", "web"]),
                token=st.sampled_from(["t1", "t2", "t3"]),
                active=st.booleans(),
            ),
            max_size=3,
            unique_by=lambda device: device.token,  # the model refuses one token listed twice
        )
    )
    return UserState(
        user_id=user_id,
        timezone=draw(st.none() | st.sampled_from(ZONES)),
        contacts=Contacts(
            email=draw(st.none() | st.just("someone@example.com")),
            phone=draw(st.none() | st.just("+14155550100")),
            devices=devices,
            webhook=draw(st.none() | st.just("https://hooks.example.com/n")),
        ),
        preferences=draw(
            st.lists(
                st.builds(
                    Preference,
                    event=st.sampled_from(
                        [
                            "*",
                            "order.*",
                            "marketing.*",
                            "social.*",
                            "security.*",
                            "order.shipped",
                            "social.like",
                        ]
                    ),
                    channel=st.sampled_from(["*", *CHANNELS]),
                    enabled=st.booleans(),
                    frequency_cap=st.none() | st.integers(0, 4),
                ),
                max_size=4,
            )
        ),
        quiet_hours=draw(st.none() | st.builds(QuietHours, start=hhmm, end=hhmm)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Intent, UserState, dt.datetime, list[HistoryEntry]]:
    now = draw(clocks)
    user_id = draw(user_ids)
    intent_data = draw(data)
    intent = Intent(
        event=draw(st.sampled_from(EVENTS)),
        user_id=user_id,
        data=intent_data,
        priority=draw(st.sampled_from(["urgent", "normal", "low"])),
        channels=draw(
            st.one_of(
                st.none(),
                st.none(),
                st.none(),
                st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
            )
        ),
        idempotency_key=draw(st.none() | st.sampled_from(["k1", "k2"])),
        send_at=draw(
            st.none() | st.builds(lambda s: now + dt.timedelta(seconds=s), st.integers(-3600, 3 * 86400))
        ),
    )
    history = draw(
        st.lists(
            st.builds(
                lambda event, channel, ago, batched, priority, same, key: HistoryEntry(
                    event=event,
                    channel=channel,
                    at=now - dt.timedelta(seconds=ago),
                    batched=batched,
                    priority=priority,
                    data=intent_data if same else {"order_id": "other"},
                    idempotency_key=key,
                ),
                st.sampled_from(ROUTED_EVENTS),
                st.sampled_from(CHANNELS[:4]),
                # Most history is recent, where caps and dedup windows bite.
                st.one_of(st.integers(1, 3600), st.integers(1, 86400), st.integers(1, 8 * 86400)),
                st.booleans(),
                st.none() | st.sampled_from(["urgent", "normal", "low"]),
                st.booleans(),
                st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["k1", "k3"])),
            ),
            max_size=40,
        )
    )
    burst = draw(
        st.none()
        | st.tuples(st.sampled_from(ROUTED_EVENTS), st.sampled_from(CHANNELS[:4]), st.integers(1, 12))
    )
    if burst is not None:  # a run of recent sends on one channel: what caps are for
        event, channel, count = burst
        history += [
            HistoryEntry(event=event, channel=channel, at=now - dt.timedelta(minutes=5 * i + 1))
            for i in range(count)
        ]
    return intent, draw(users(user_id)), now, history


PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decide(policy: CompiledPolicy, scenario: Any) -> Decision | None:
    intent, user, now, history = scenario
    try:
        return decide(intent, user, now, history, policy)
    except NoMatchingRule:
        # Only when no unconditional rule admits this event at this priority (an unknown
        # event, or marketing and social events sent as urgent, which the policy refuses).
        assert not any(
            rule.specificity(intent.event) is not None
            and rule.condition is None
            and (rule.priorities is None or intent.priority in rule.priorities)
            for rule in policy.rules
        )
        return None


def _rule(policy: CompiledPolicy, decision: Decision) -> Rule:
    rule = policy.rule(decision.rule)
    assert rule is not None
    return rule


def _quiet_window(policy: CompiledPolicy, user: UserState) -> DailyWindow:
    if user.quiet_hours is not None:
        return DailyWindow.parse(user.quiet_hours.start, user.quiet_hours.end)
    return policy.defaults.quiet_hours


def _is_quiet(window: DailyWindow, at: dt.datetime, tz_name: str) -> bool:
    return window.contains_minute(minute_of_day(at.astimezone(zone(tz_name))))


def _quiet_applies(policy: CompiledPolicy, decision: Decision, delivery: Delivery) -> bool:
    rule = _rule(policy, decision)
    bypass = policy.priorities[decision.priority].bypass | rule.bypass
    return policy.channels[delivery.channel].quiet_hours and rule.quiet_hours and "quiet_hours" not in bypass


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_same_inputs_same_decision(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    first, second = _decide(policy, scenario), _decide(policy, scenario)
    assert msgspec.json.encode(first) == msgspec.json.encode(second)


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_intake_without_a_trace_decides_exactly_as_dry_run_does(runtime_name: str, scenario: Any) -> None:
    """Intake passes NO_TRACE; only the trace may differ (empty), never what is decided."""
    policy = compiled_policy(runtime_name)
    intent, user, now, history = scenario
    traced = _decide(policy, scenario)
    if traced is None:
        with pytest.raises(NoMatchingRule):
            decide(intent, user, now, history, policy, tracer=NO_TRACE)
        return
    untraced = decide(intent, user, now, history, policy, tracer=NO_TRACE)
    assert untraced.trace == [] and traced.trace
    assert msgspec.structs.replace(untraced, trace=traced.trace) == traced


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_every_channel_is_accounted_for_exactly_once(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    intent = scenario[0]
    rule = _rule(policy, decision)
    sent = [d.channel for d in decision.deliveries] + [d.channel for d in decision.standby]
    held = [s.channel for s in decision.suppressed]
    assert len(sent) == len(set(sent))
    assert len(held) == len(set(held))
    assert not set(sent) & set(held)
    extra = set(intent.channels or ()) - set(rule.channels)
    assert set(sent) | set(held) == set(rule.channels) | extra


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_every_suppression_carries_a_reason_and_a_rule(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    known = (
        {r.name for r in policy.rules}
        | {c.name for c in policy.caps}
        | {c.name for r in policy.rules for c in r.caps}
        | {c.name for c in policy.constraints}
        | set(policy.tiers)
        | {"idempotency_window", "user-preference"}
    )
    for suppression in decision.suppressed:
        assert suppression.reason in (
            "opted_out",
            "no_address",
            "frequency_capped",
            "duplicate",
            "muted",
            "policy",
            "expired",
        )
        assert suppression.detail
        assert suppression.rule in known
    for delivery in [*decision.deliveries, *decision.standby]:
        assert delivery.rule == decision.rule


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_urgent_is_never_held_back_by_opt_out_quiet_hours_or_caps(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None or decision.priority != "urgent":
        return
    assert not [s for s in decision.suppressed if s.reason in ("opted_out", "frequency_capped")]
    for delivery in [*decision.deliveries, *decision.standby]:
        assert delivery.deferred in (None, "scheduled")


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_nothing_goes_to_a_channel_without_an_address(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    contacts = scenario[1].contacts
    for delivery in [*decision.deliveries, *decision.standby]:
        address = policy.channels[delivery.channel].address
        expected = {
            "devices": sum(1 for d in contacts.devices if d.active),
            "email": int(contacts.email is not None),
            "phone": int(contacts.phone is not None),
            "webhook": int(contacts.webhook is not None),
            "inbox": 1,
        }[address]
        assert delivery.recipients == expected >= 1


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_quiet_hours_defer_to_their_end_never_into_or_past_it(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    intent, user, now, _ = scenario
    tz_name = user.timezone or policy.defaults.timezone
    window = _quiet_window(policy, user)
    for delivery in [*decision.deliveries, *decision.standby]:
        if not _quiet_applies(policy, decision, delivery):
            continue
        goes = delivery.send_at or now
        assert not _is_quiet(window, goes, tz_name), f"{delivery.channel} scheduled inside quiet hours"
        if delivery.deferred == "quiet_hours" and _rule(policy, decision).delivery_window is None:
            # Deferred exactly to the window's end: the minute before was quiet, and every
            # minute from the moment it was held back until then is quiet too.
            before = [now]
            if intent.send_at is not None and intent.send_at > now:
                before.append(intent.send_at)
            if delivery.batch is not None and not delivery.batch.full:
                before.append(delivery.batch.closes_at)
            held = max(before)
            assert held < goes
            assert _is_quiet(window, goes - dt.timedelta(seconds=1), tz_name)
            probe = held
            while probe < goes:
                assert _is_quiet(window, probe, tz_name), f"deferred past the end of quiet hours: {probe}"
                probe += dt.timedelta(minutes=10)


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_caps_are_never_exceeded(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None or decision.priority == "urgent":
        return
    intent, user, now, history = scenario
    rule = _rule(policy, decision)
    if "caps" in rule.bypass:
        return
    for delivery in decision.deliveries:
        for cap in (*rule.caps, *policy.caps):
            if not cap.applies_to(delivery.channel):
                continue
            sent = sum(
                1
                for h in history
                if h.at > now - cap.window
                and not h.batched
                and h.priority != "urgent"
                and cap.counts(h.event, h.channel, h.category or policy.category_of(h.event) or "")
            )
            assert sent + 1 <= cap.limit, f"cap {cap.name} exceeded on {delivery.channel}"
        preference = _preference(user.preferences, intent.event, delivery.channel)
        if preference is not None and preference.frequency_cap is not None:
            sent = sum(
                1
                for h in history
                if h.at > now - dt.timedelta(days=1)
                and not h.batched
                and h.priority != "urgent"
                and glob_event(preference.event, h.event)
                and preference.channel in ("*", h.channel)
            )
            assert sent + 1 <= preference.frequency_cap


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_fallback_never_repeats_a_channel(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    assert len(decision.fallback) == len(set(decision.fallback))
    delivered = {d.channel for d in decision.deliveries}
    standby = [d.channel for d in decision.standby]
    assert set(standby) <= set(decision.fallback)
    assert set(decision.fallback) <= delivered | set(standby)
    rule = _rule(policy, decision)
    strategy = rule.strategy or policy.priorities[decision.priority].strategy
    if strategy == "first":
        assert len(delivered & set(decision.fallback)) <= 1
        assert standby == decision.fallback[1:]


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_opt_outs_hold_unless_the_policy_bypasses_them(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    intent, user, _, _ = scenario
    rule = _rule(policy, decision)
    if "opt_out" in policy.priorities[decision.priority].bypass | rule.bypass:
        return
    for delivery in [*decision.deliveries, *decision.standby]:
        preference = _preference(user.preferences, intent.event, delivery.channel)
        if preference is not None:
            assert preference.enabled
        else:
            assert not policy.channels[delivery.channel].opt_in


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_overrides_narrow_low_priority_never_texts_and_costs_add_up(runtime_name: str, scenario: Any) -> None:
    policy = compiled_policy(runtime_name)
    decision = _decide(policy, scenario)
    if decision is None:
        return
    intent, _, now, _ = scenario
    channels = {d.channel for d in [*decision.deliveries, *decision.standby]}
    if intent.channels is not None:
        assert channels <= set(intent.channels)
    if intent.priority == "low":
        assert "sms" not in channels
    tier = policy.tiers[decision.tier]
    for delivery in [*decision.deliveries, *decision.standby]:
        first = policy.providers.providers[delivery.providers[0]]
        assert delivery.estimated_cost == round(first.cost * delivery.recipients, 6)
        assert tier.cost_ceiling is None or first.cost <= tier.cost_ceiling
        assert delivery.expires_at == (delivery.send_at or now) + tier.expiry
    assert abs(decision.estimated_cost - sum(d.estimated_cost for d in decision.deliveries)) < 1e-9
