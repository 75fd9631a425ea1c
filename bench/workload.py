"""A reproducible, weighted mix of `decide()` inputs shaped like production traffic.

A benchmark over one intent measures one code path; the gateway's cost depends on which
rules match, how many CEL conditions run, how long the history is and whether the clock
falls in quiet hours or a delivery window. This module builds a mix that exercises all of
that against the shipped policies: every category, the three priorities, `channels`
overrides, scheduled and expired intents, users in several time zones with and without
quiet hours and preferences, histories of 0-30 entries (some hitting dedup, caps, open
batches and idempotency replays) and clocks spread over a week.

Everything comes from one seeded `random.Random`, so two runs time the same inputs.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.model import (
    Contacts,
    Decision,
    Device,
    DryRunRequest,
    HistoryEntry,
    Intent,
    Preference,
    Priority,
    QuietHours,
    UserState,
)
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.corpus import generated
from gateway.policy.engine import NoMatchingRule, decide, fingerprint

WEEK_START = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)  # a Monday: clocks cover Mon..Sun
MAX_HISTORY = 30
USERS = 300

# (zone, weight); None falls back to the policy's default zone (UTC).
TIMEZONES: tuple[tuple[str | None, int], ...] = (
    ("America/Los_Angeles", 3),
    ("America/New_York", 2),
    ("Europe/Paris", 3),
    ("Europe/Amsterdam", 1),
    ("Asia/Kolkata", 3),
    ("Asia/Tokyo", 1),
    ("Australia/Sydney", 1),
    ("UTC", 1),
    (None, 1),
)
QUIET_HOURS = (("22:00", "08:00"), ("23:00", "07:00"), ("21:30", "06:30"), ("00:00", "00:00"))
PREFERENCE_POOL = (
    Preference(event="marketing.*", channel="push", enabled=False),
    Preference(event="marketing.*", channel="email", frequency_cap=2),
    Preference(event="*", channel="sms", enabled=True),
    Preference(event="order.*", channel="sms", enabled=True),
    Preference(event="social.*", channel="push", enabled=False),
    Preference(event="social.mention", frequency_cap=5),
    Preference(event="security.*", enabled=False),
    Preference(event="marketing.weekly_digest", enabled=True),
    Preference(event="*", channel="email", enabled=False),
)
CATEGORY_OF_PREFIX = {
    "order": "transactional",
    "payment": "transactional",
    "security": "security",
    "marketing": "marketing",
    "social": "social",
}
# Recent deliveries a history store would hold for an active user: (event, channel).
BACKGROUND = (
    ("order.shipped", "push"),
    ("order.shipped", "email"),
    ("order.delivered", "push"),
    ("order.delivered", "in_app"),
    ("payment.failed", "email"),
    ("security.otp", "sms"),
    ("marketing.promo", "email"),
    ("marketing.promo", "push"),
    ("marketing.weekly_digest", "email"),
    ("social.like", "push"),
    ("social.comment", "push"),
    ("social.mention", "email"),
    ("social.mention", "in_app"),
)
# Open-batch windows and sizes of the social rules (policies/social.yaml).
BATCH_RULES = {"social.like": (300, 50), "social.comment": (600, 20), "social.follow": (900, 30)}


@dataclass(frozen=True, slots=True)
class Case:
    """One call of `decide()`: the mix entry it came from and the arguments."""

    kind: str
    intent: Intent
    user: UserState
    now: dt.datetime
    history: list[HistoryEntry]

    def dry_run_body(self) -> bytes:
        """The same inputs as a `POST /v1/dry-run` body."""
        request = DryRunRequest(intent=self.intent, user=self.user, at=self.now, history=self.history)
        return msgspec.json.encode(request)


@dataclass
class _Draft:
    """What a mix entry builds before the shared history is added."""

    intent: Intent
    history: list[HistoryEntry] = field(default_factory=list)


Builder = Callable[["_Context"], _Draft]


@dataclass(frozen=True, slots=True)
class MixEntry:
    kind: str
    weight: int
    build: Builder


@dataclass(frozen=True, slots=True)
class _Context:
    """The random source, the user and the clock a mix entry builds its intent for."""

    rng: random.Random
    user: UserState
    now: dt.datetime

    def ago(self, low_s: float, high_s: float) -> dt.datetime:
        return self.now - dt.timedelta(seconds=round(self.rng.uniform(low_s, high_s)))

    def priority(self, urgent: float = 0.0, low: float = 0.0) -> Priority:
        roll = self.rng.random()
        if roll < urgent:
            return "urgent"
        return "low" if roll < urgent + low else "normal"

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def entry(self, event: str, channel: str, at: dt.datetime, **extra: Any) -> HistoryEntry:
        """A history row as the gateway's store writes it: category, priority, fingerprint."""
        priority: Priority = "urgent" if event in ("security.otp", "security.fraud_alert") else "normal"
        values: dict[str, Any] = {
            "category": CATEGORY_OF_PREFIX[event.split(".", 1)[0]],
            "priority": priority,
            "fingerprint": f"{self.rng.getrandbits(128):032x}",
            "notification_id": f"n_{self.rng.getrandbits(48):012x}",
        }
        values.update(extra)
        return HistoryEntry(event=event, channel=channel, at=at, **values)

    def duplicates(self, intent: Intent, channels: Sequence[str], within_s: float) -> list[HistoryEntry]:
        """Rows for the very same message sent moments ago: the producer retried."""
        at = self.ago(5, within_s)
        return [
            self.entry(
                intent.event,
                channel,
                at,
                fingerprint=fingerprint(intent.user_id, intent.event, channel, intent.data),
            )
            for channel in channels
        ]


# -- mix entries ------------------------------------------------------------------------


def _order(event: str) -> Builder:
    def build(ctx: _Context) -> _Draft:
        order_id = f"A-{ctx.rng.randrange(10_000, 99_999)}"
        channels = ctx.rng.choice((["email", "in_app"], ["push"], ["sms"])) if ctx.chance(0.1) else None
        key = f"{event}-{order_id}" if ctx.chance(0.6) else None
        intent = Intent(
            event=event,
            user_id=ctx.user.user_id,
            priority=ctx.priority(urgent=0.05, low=0.1),
            channels=channels,
            idempotency_key=key,
            data={"order_id": order_id, "carrier": ctx.rng.choice(("UPS", "DHL", "FedEx")), "items": 2},
        )
        draft = _Draft(intent)
        if ctx.chance(0.1):
            draft.history += ctx.duplicates(intent, ("push", "email", "in_app"), within_s=500)
        elif key is not None and ctx.chance(0.04):
            draft.history.append(ctx.entry(event, "email", ctx.ago(600, 20 * 3600), idempotency_key=key))
        return draft

    return build


def _digital_receipt(ctx: _Context) -> _Draft:
    data = {"order_id": f"D-{ctx.rng.randrange(1000, 9999)}", "digital": True, "total": "19.99"}
    return _Draft(Intent(event="order.receipt", user_id=ctx.user.user_id, data=data))


def _delayed_order(ctx: _Context) -> _Draft:
    send_at = ctx.now + dt.timedelta(minutes=ctx.rng.randrange(30, 360))
    data = {"order_id": f"A-{ctx.rng.randrange(10_000, 99_999)}", "days": 2}
    return _Draft(Intent(event="order.delayed", user_id=ctx.user.user_id, send_at=send_at, data=data))


def _payment_failed(ctx: _Context) -> _Draft:
    data = {"amount": f"{ctx.rng.randrange(5, 500)}.00", "currency": "EUR"}
    intent = Intent(event="payment.failed", user_id=ctx.user.user_id, priority=ctx.priority(0.25), data=data)
    draft = _Draft(intent)
    if ctx.chance(0.1):
        draft.history += ctx.duplicates(intent, ("push", "email", "in_app"), within_s=300)
    return draft


def _otp(ctx: _Context) -> _Draft:
    send_at = ctx.now - dt.timedelta(minutes=20) if ctx.chance(0.03) else None
    intent = Intent(
        event="security.otp",
        user_id=ctx.user.user_id,
        priority="urgent",
        send_at=send_at,
        data={"code": f"{ctx.rng.randrange(1_000_000):06d}"},
    )
    draft = _Draft(intent)
    if ctx.chance(0.08):
        draft.history += ctx.duplicates(intent, ("sms",), within_s=25)
    return draft


def _fraud_alert(ctx: _Context) -> _Draft:
    data = {"amount": f"{ctx.rng.randrange(100, 2000)}.00", "merchant": "ACME"}
    return _Draft(
        Intent(event="security.fraud_alert", user_id=ctx.user.user_id, priority=ctx.priority(0.8), data=data)
    )


def _account_change(ctx: _Context) -> _Draft:
    event = ctx.rng.choice(("security.password_changed", "security.new_login"))
    data = {"device": ctx.rng.choice(("Firefox", "iPhone", "Pixel")), "ip": "203.0.113.7"}
    return _Draft(Intent(event=event, user_id=ctx.user.user_id, data=data))


def _weekly_digest(ctx: _Context) -> _Draft:
    intent = Intent(
        event="marketing.weekly_digest",
        user_id=ctx.user.user_id,
        priority=ctx.priority(low=0.7),
        data={"week": "2026-W47"},
    )
    draft = _Draft(intent)
    if ctx.chance(0.05):
        draft.history += ctx.duplicates(intent, ("email",), within_s=20 * 3600)
    elif ctx.chance(0.1):
        draft.history += [ctx.entry("marketing.promo", "email", ctx.ago(600, 23 * 3600)) for _ in range(3)]
    return draft


def _promo(ctx: _Context) -> _Draft:
    data = {"headline": ctx.rng.choice(("Winter sale", "Flash sale", "New arrivals")), "campaign": "c-47"}
    intent = Intent(
        event="marketing.promo", user_id=ctx.user.user_id, priority=ctx.priority(low=0.4), data=data
    )
    draft = _Draft(intent)
    if ctx.chance(0.1):
        draft.history.append(ctx.entry("marketing.promo", "push", ctx.ago(600, 20 * 3600)))
    return draft


def _batched_social(event: str) -> Builder:
    window_s, max_size = BATCH_RULES[event]

    def build(ctx: _Context) -> _Draft:
        actor = ctx.user.user_id if ctx.chance(0.04) else f"u_{ctx.rng.randrange(USERS):05d}"
        data = {"actor_id": actor, "post_id": f"p_{ctx.rng.randrange(1000)}"}
        intent = Intent(event=event, user_id=ctx.user.user_id, priority=ctx.priority(low=0.2), data=data)
        draft = _Draft(intent)
        for channel, pending in _open_batch(ctx, max_size).items():
            draft.history += [
                ctx.entry(event, channel, ctx.ago(1, window_s - 5), batched=True) for _ in range(pending)
            ]
        return draft

    return build


def _open_batch(ctx: _Context, max_size: int) -> dict[str, int]:
    """How many messages already wait in the push and in-app batches.

    Mostly none or a few; now and then the push batch is one short of full (where that fits
    in MAX_HISTORY rows), so this intent fills it and it goes at once.
    """
    roll = ctx.rng.random()
    if roll < 0.35:
        return {}
    if roll < 0.85:
        pending = ctx.rng.randrange(1, 10)
        return {"push": pending, "in_app": pending}
    return {"push": min(max_size - 1, MAX_HISTORY)}


def _mention(ctx: _Context) -> _Draft:
    data = {"actor_id": f"u_{ctx.rng.randrange(USERS):05d}", "excerpt": "thanks @you, see the thread"}
    intent = Intent(event="social.mention", user_id=ctx.user.user_id, data=data)
    draft = _Draft(intent)
    if ctx.chance(0.1):
        draft.history += ctx.duplicates(intent, ("push", "email", "in_app"), within_s=500)
    return draft


def _push_flood(ctx: _Context) -> list[HistoryEntry]:
    """Ten pushes in the last hour: the next push is over the bundle-wide cap."""
    return [ctx.entry("social.mention", "push", ctx.ago(60, 3500)) for _ in range(10)]


MIX: tuple[MixEntry, ...] = (
    MixEntry("order.shipped", 12, _order("order.shipped")),
    MixEntry("order.delivered", 9, _order("order.delivered")),
    MixEntry("order.receipt (digital)", 3, _digital_receipt),
    MixEntry("order.delayed (send_at)", 2, _delayed_order),
    MixEntry("payment.failed", 4, _payment_failed),
    MixEntry("security.otp", 5, _otp),
    MixEntry("security.fraud_alert", 1, _fraud_alert),
    MixEntry("security account change", 2, _account_change),
    MixEntry("marketing.weekly_digest", 5, _weekly_digest),
    MixEntry("marketing.promo", 8, _promo),
    MixEntry("social.like", 18, _batched_social("social.like")),
    MixEntry("social.comment", 9, _batched_social("social.comment")),
    MixEntry("social.follow", 7, _batched_social("social.follow")),
    MixEntry("social.mention", 5, _mention),
)


# -- users, clocks, histories -----------------------------------------------------------


def make_user(rng: random.Random, index: int) -> UserState:
    """A user with a realistic spread of zones, quiet hours, contacts and preferences."""
    zones, weights = zip(*TIMEZONES, strict=True)
    start, end = rng.choice(QUIET_HOURS)
    quiet = QuietHours(start=start, end=end) if rng.random() < 0.45 else None
    device_count = rng.choices((0, 1, 2, 3), weights=(10, 50, 30, 10))[0]
    devices = [
        Device(
            platform=rng.choice(("ios", "android", "web")),
            token=f"token-{index}-{n}-{rng.getrandbits(64):016x}",
            active=rng.random() < 0.9,
        )
        for n in range(device_count)
    ]
    contacts = Contacts(
        email=f"user{index}@example.com" if rng.random() < 0.92 else None,
        phone=f"+1415555{index:04d}" if rng.random() < 0.55 else None,
        devices=devices,
    )
    preferences = rng.sample(PREFERENCE_POOL, k=rng.choices((0, 1, 2, 3), weights=(40, 30, 20, 10))[0])
    return UserState(
        user_id=f"u_{index:05d}",
        timezone=rng.choices(zones, weights=weights)[0],
        locale=rng.choice((None, "en-US", "fr-FR", "hi-IN")),
        contacts=contacts,
        preferences=preferences,
        quiet_hours=quiet,
    )


def _background(ctx: _Context, count: int) -> list[HistoryEntry]:
    """Unrelated recent deliveries over the last two days: they cost a scan, rarely a hit."""
    return [ctx.entry(*ctx.rng.choice(BACKGROUND), ctx.ago(30, 48 * 3600)) for _ in range(count)]


def _history(ctx: _Context, specific: list[HistoryEntry]) -> list[HistoryEntry]:
    """The case's own rows plus background, at most MAX_HISTORY, oldest first."""
    wanted = min(MAX_HISTORY, int(ctx.rng.expovariate(1 / 8)))
    extra = list(_push_flood(ctx)) if ctx.chance(0.06) else []
    rows = specific + extra
    rows += _background(ctx, max(0, wanted - len(rows)))
    return sorted(rows[:MAX_HISTORY], key=lambda h: h.at)


def bundle_cases(policy: CompiledPolicy, count: int, seed: int = 1) -> list[Case]:
    """The package's generated workload (what `notigate diff` decides) as bench cases: for a
    bundle this module's hand-weighted mix was not written for. Intents no rule takes (every
    candidate's condition false) are left out: they time an error, not a decision."""
    cases = []
    for s in generated(policy, count, seed=seed):
        try:
            decide(s.intent, s.user, s.now, s.history, policy)
        except NoMatchingRule:
            continue
        cases.append(Case(s.intent.event, s.intent, s.user, s.now, list(s.history)))
    return cases


def build_cases(count: int, seed: int = 1) -> list[Case]:
    """`count` cases drawn from MIX by weight; the same seed gives the same cases."""
    rng = random.Random(seed)
    users = [make_user(rng, i) for i in range(USERS)]
    weights = [entry.weight for entry in MIX]
    cases = []
    for entry in rng.choices(MIX, weights=weights, k=count):
        now = WEEK_START + dt.timedelta(seconds=rng.randrange(7 * 24 * 3600))
        ctx = _Context(rng, rng.choice(users), now)
        draft = entry.build(ctx)
        cases.append(Case(entry.kind, draft.intent, ctx.user, now, _history(ctx, draft.history)))
    return cases


# -- what the mix exercises -------------------------------------------------------------


@dataclass
class MixProfile:
    """What the decisions of a mix did, so the report shows the mix is not one code path."""

    cases: int
    kinds: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    history_sizes: list[int] = field(default_factory=list)

    def add(self, case: Case, decision: Decision) -> None:
        self.kinds[case.kind] += 1
        self.rules[decision.rule] += 1
        self.history_sizes.append(len(case.history))
        outcomes = {f"suppressed:{s.reason}" for s in decision.suppressed}
        outcomes |= {f"deferred:{d.deferred}" for d in decision.deliveries if d.deferred}
        if decision.standby:
            outcomes.add("fallback standby")
        if not decision.deliveries:
            outcomes.add("nothing delivered")
        self.outcomes.update(outcomes)

    def as_dict(self) -> dict[str, Any]:
        sizes = sorted(self.history_sizes)
        return {
            "cases": self.cases,
            "kinds": dict(self.kinds.most_common()),
            "outcomes_share": {k: round(v / self.cases, 3) for k, v in self.outcomes.most_common()},
            "history_entries": {"mean": round(sum(sizes) / len(sizes), 1), "max": sizes[-1]},
        }


def profile_mix(cases: Sequence[Case], policy: CompiledPolicy) -> MixProfile:
    """Decide every case once (untimed): proves each one routes, and warms caches up.

    A case that raises is a bug in this module, not a slow path to time, so it propagates.
    """
    profile = MixProfile(cases=len(cases))
    for case in cases:
        profile.add(case, decide(case.intent, case.user, case.now, case.history, policy))
    return profile
