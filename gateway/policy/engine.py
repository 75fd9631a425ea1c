"""`decide()`: the pure function from (intent, user, clock, history, policy) to a Decision.

No I/O and no clock reads happen here, so the dry-run endpoint, the intake path, the
policy test suites and the property tests all get the very same answer for the same
inputs. Every step that changes the outcome appends a `TraceStep` naming the rule (or cap,
or constraint), its file and line, and the CEL expression and value involved.

Per channel of the matched rule, checks run in a fixed order and the first that fails
names the suppression: the producer's override, policy constraints, mutes, consent,
addressability, templates, provider cost, dedup, caps. Channels that pass are scheduled
(`send_at`, batch windows, delivery windows, quiet hours) and split into deliveries now
and standby fallbacks according to the priority's strategy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from gateway.model import (
    Batch,
    Decision,
    DeferralReason,
    Delivery,
    HistoryEntry,
    Intent,
    Preference,
    Suppression,
    SuppressionReason,
    TraceKind,
    TraceStep,
    UserState,
    zone,
)
from gateway.policy.cel import CelEvalError, CelInput
from gateway.policy.cel_functions import glob_event
from gateway.policy.compiled import (
    Batching,
    Cap,
    ChannelDef,
    CompiledPolicy,
    Condition,
    Constraint,
    Origin,
    Plan,
    ProviderRoute,
    Rule,
    Tier,
)
from gateway.policy.tracing import Tracer
from gateway.timeutil import DailyWindow, format_duration

_canonical = msgspec.json.Encoder(order="sorted")
_QUIET_DEFAULT_NONE = DailyWindow(0, 0)
_MAX_RESCHEDULES = 16


class NoMatchingRule(Exception):
    """No rule of the policy matches the intent: the producer sent an event we don't route."""

    def __init__(self, event: str, trace: list[TraceStep]) -> None:
        super().__init__(f"no policy rule matches event {event!r}")
        self.event = event
        self.trace = trace


class _Candidate(msgspec.Struct, frozen=True):
    channel: str
    definition: ChannelDef
    template: str
    providers: list[str]
    recipients: int
    cost: float
    fingerprint: str


class _Split(msgspec.Struct, frozen=True):
    """What the tier's strategy makes of the channels that passed their checks."""

    now: list[str]  # sent at once
    standby: list[str]  # held, each sent only if the channels before it on the chain fail
    chain: list[str]  # the live fallback chain the decision reports


def decide(
    intent: Intent,
    user: UserState,
    now: dt.datetime,
    history: Sequence[HistoryEntry],
    policy: CompiledPolicy,
    *,
    tracer: Tracer | None = None,
) -> Decision:
    """Decide what to send for `intent`, where, when and how, and explain why (to `tracer`:
    a fresh `Tracer` unless given; `NO_TRACE` skips the explanation, not the decision)."""
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    run = _Run(intent, user, now.astimezone(dt.UTC), history, policy, tracer or Tracer())
    return run.decide()


def fingerprint(user_id: str, event: str, channel: str, data: Mapping[str, Any]) -> str:
    """The content-dedup key: same user, event, channel and data give the same fingerprint.

    One digest of (user, event, canonical data) serves every channel of a decision; the
    channel is appended in clear, so the key is unique per channel without hashing again.
    """
    return f"{content_digest(user_id, event, data)}.{channel}"


def content_digest(user_id: str, event: str, data: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(f"{user_id}\x1f{event}\x1f".encode())
    digest.update(_canonical.encode(data))
    return digest.hexdigest()[:32]


class _Run:
    """The state of one decision: inputs, trace, and lazily built CEL variables."""

    def __init__(
        self,
        intent: Intent,
        user: UserState,
        now: dt.datetime,
        history: Sequence[HistoryEntry],
        policy: CompiledPolicy,
        tracer: Tracer,
    ) -> None:
        self.intent = intent
        self.user = user
        self.now = now
        self.history = history
        self.policy = policy
        self.tracer = tracer
        self.tracing = tracer.recording  # False: no trace-only detail is even formatted
        self.tz_name = user.timezone or policy.defaults.timezone
        self.tz = zone(self.tz_name)
        self._activation: Any = None
        self._data_hash: str | None = None
        self._sent: list[tuple[dt.datetime, str, str, str]] | None = None
        self._fingerprints: dict[str, HistoryEntry] | None = None

    # -- trace and CEL --

    def step(
        self,
        step: TraceKind,
        name: str | None,
        origin: Origin | None,
        value: Any,
        *,
        expr: str | None = None,
        channel: str | None = None,
        detail: str | None = None,
    ) -> None:
        if not self.tracing:
            return
        self.tracer.add(
            TraceStep(
                step=step,
                rule=name,
                file=origin.file if origin else None,
                line=origin.line if origin else None,
                expr=expr,
                value=value,
                channel=channel,
                detail=detail,
            )
        )

    def activation(self) -> Any:
        if self._activation is None:
            needed = self.policy.cel_variables
            variables = CelInput(
                now=self.now,
                intent=_intent_map(self.intent) if "intent" in needed else None,
                user=user_map(self.user, self.tz_name) if "user" in needed else None,
                history=[_history_map(h) for h in self.history] if "history" in needed else None,
            )
            from gateway.policy.cel import runtime

            self._activation = runtime(self.policy.runtime).activation(variables)
        return self._activation

    def evaluate(self, condition: Condition, name: str, step: TraceKind, channel: str | None = None) -> bool:
        try:
            value = condition.program.evaluate(self.activation())
            problem = None if isinstance(value, bool) else f"evaluated to {value!r}, not a bool"
        except CelEvalError as exc:
            value, problem = None, str(exc)
        if problem is None:
            self.step(step, name, condition.origin, value, expr=condition.source, channel=channel)
            return bool(value)
        counted = "match" if condition.on_error else "no_match"
        self.step(
            step,
            name,
            condition.origin,
            {"error": problem, "counted_as": counted},
            expr=condition.source,
            channel=channel,
            detail=f"evaluation failed; on_error counts it as {counted}",
        )
        return condition.on_error

    # -- the decision --

    def decide(self) -> Decision:
        intent, policy = self.intent, self.policy
        rule = self.select_rule()
        priority = intent.priority
        plan = policy.plan(rule, priority)
        tier = plan.tier
        self.tracer.add(plan.tier_step)
        if plan.bypass_step is not None:
            self.tracer.add(plan.bypass_step)

        constraints = self.active_constraints(rule)
        whole = self.whole_intent_suppression(rule, tier)
        candidates: dict[str, _Candidate] = {}
        suppressed: list[Suppression] = []
        for channel in rule.channels:
            outcome = whole(channel) if whole else self.check_channel(plan, channel, constraints)
            if isinstance(outcome, Suppression):
                suppressed.append(outcome)
            else:
                candidates[channel] = outcome
        for channel in intent.channels or ():
            if channel not in rule.channels:
                detail = f"rule {rule.name} does not deliver {channel} (it uses {', '.join(rule.channels)})"
                suppressed.append(
                    Suppression(channel=channel, reason="policy", detail=detail, rule=rule.name)
                )
                self.step(
                    "override", rule.name, rule.where("channels"), False, channel=channel, detail=detail
                )

        split = self.apply_strategy(plan, rule, candidates, suppressed)
        now_channels, standby_channels, live_chain = split.now, split.standby, split.chain

        deliveries: list[Delivery] = []
        standby: list[Delivery] = []
        for channel in now_channels + standby_channels:
            scheduled = self.schedule(candidates[channel], plan)
            if isinstance(scheduled, Suppression):
                suppressed.append(scheduled)
                if channel in live_chain:
                    live_chain.remove(channel)
            elif channel in standby_channels:
                standby.append(scheduled)
            else:
                deliveries.append(scheduled)
        if len(suppressed) > 1:
            order = plan.order
            suppressed.sort(key=lambda s: order.get(s.channel, len(order)))
        return Decision(
            policy_version=policy.version,
            event=intent.event,
            user_id=intent.user_id,
            category=rule.category,
            tier=tier.name,
            rule=rule.name,
            priority=priority,
            evaluated_at=self.now,
            deliveries=deliveries,
            suppressed=suppressed,
            fallback=live_chain,
            standby=standby,
            estimated_cost=round(sum(d.estimated_cost for d in deliveries), 6),
            trace=self.tracer.steps if self.tracing else [],
        )

    def apply_strategy(
        self, plan: Plan, rule: Rule, candidates: dict[str, _Candidate], suppressed: list[Suppression]
    ) -> _Split:
        """The tier's strategy over the channels that passed their checks. `all` sends every
        candidate; `first` sends the chain's first live channel and holds the rest for
        fallback, unless an earlier notification's chain already covers this one (a duplicate
        on the chain). Suppressions it makes are appended to `suppressed`; the candidates
        they replace are dropped from `candidates`."""
        strategy = plan.strategy
        chain = plan.chain
        live_chain = [c for c in chain if c in candidates]
        strategy_origin = plan.strategy_origin

        duplicates = [s.channel for s in suppressed if s.reason == "duplicate" and s.channel in chain]
        if strategy == "first" and duplicates and live_chain:
            # The earlier notification's own chain covers this one: escalating past the
            # duplicate would send a second alert on another channel.
            detail = (
                f"{', '.join(duplicates)} already carried this message; the earlier notification's "
                f"fallback chain covers {', '.join(live_chain)}, so they are not used again"
            )
            for channel in live_chain:
                candidates.pop(channel)
                suppressed.append(
                    Suppression(channel=channel, reason="duplicate", detail=detail, rule=rule.name)
                )
            self.step("strategy", rule.name, strategy_origin, "first", detail=detail)
            live_chain = []
        if strategy == "first" and live_chain:
            now_channels = [c for c in candidates if c not in live_chain or c == live_chain[0]]
            standby_channels = live_chain[1:]
            if self.tracing:
                self.step(
                    "strategy",
                    rule.name,
                    strategy_origin,
                    "first",
                    detail=f"send {live_chain[0]} now; on failure fall back along {' -> '.join(live_chain)}",
                )
        else:
            now_channels, standby_channels = list(candidates), []
        return _Split(now_channels, standby_channels, live_chain)

    def select_rule(self) -> Rule:
        intent = self.intent
        for rule in self.policy.candidates(intent.event):
            if rule.priorities is not None and intent.priority not in rule.priorities:
                if self.tracing:
                    self.step(
                        "match",
                        rule.name,
                        rule.origin,
                        False,
                        detail=f"priority {intent.priority} is not among {sorted(rule.priorities)}",
                    )
                continue
            if rule.condition is not None and not self.evaluate(rule.condition, rule.name, "condition"):
                continue
            if self.tracing:
                self.step(
                    "match",
                    rule.name,
                    rule.origin,
                    True,
                    expr=" | ".join(rule.patterns),
                    detail=f"category {rule.category}",
                )
            return rule
        raise NoMatchingRule(intent.event, self.tracer.steps if self.tracing else [])

    def active_constraints(self, rule: Rule) -> list[Constraint]:
        active = []
        for constraint in self.policy.constraints:
            if not constraint.in_scope(self.intent.event, self.intent.priority, rule.category):
                continue
            if constraint.condition is not None and not self.evaluate(
                constraint.condition, constraint.name, "constraint"
            ):
                continue
            active.append(constraint)
        return active

    def whole_intent_suppression(self, rule: Rule, tier: Tier) -> Any:
        """Suppressions that apply to every channel at once: replays and stale intents."""
        intent, now = self.intent, self.now
        if intent.idempotency_key is not None:
            since = now - self.policy.defaults.idempotency_window
            for entry in self.history:
                if entry.idempotency_key == intent.idempotency_key and entry.at > since:
                    first = f" as notification {entry.notification_id}" if entry.notification_id else ""
                    detail = (
                        f"idempotency key {intent.idempotency_key!r} was accepted at "
                        f"{entry.at.isoformat()}{first}"
                    )
                    self.step(
                        "idempotency", "idempotency_window", self.policy.defaults.origin, True, detail=detail
                    )
                    return _all_channels("duplicate", detail, "idempotency_window")
        if intent.send_at is not None and intent.send_at + tier.expiry <= now:
            detail = (
                f"send_at {intent.send_at.isoformat()} plus tier {tier.name}'s expiry "
                f"{format_duration(tier.expiry)} has passed: dropped rather than sent late"
            )
            self.step("expiry", tier.name, tier.origin, True, detail=detail)
            return _all_channels("expired", detail, rule.name)
        return None

    def check_channel(
        self, plan: Plan, channel: str, constraints: list[Constraint]
    ) -> Suppression | _Candidate:
        """The channel's checks in their fixed order (CHANNEL_CHECKS); the first to suppress wins."""
        at = _ChannelCheck(plan, channel, self.policy.channels[channel], constraints)
        for check in CHANNEL_CHECKS:
            suppressed = check(self, at)
            if suppressed is not None:
                return suppressed
        route = at.route
        if route is None:  # _route always sets it; a check order without it is a bug
            raise RuntimeError("CHANNEL_CHECKS must include _route")
        return _Candidate(
            channel=channel,
            definition=at.definition,
            template=f"{at.template}/{channel}",
            providers=list(route.providers),
            recipients=at.recipients,
            cost=round(route.unit_cost * at.recipients, 6),
            fingerprint=at.fingerprint,
        )

    def suppress(
        self,
        channel: str,
        reason: SuppressionReason,
        detail: str,
        name: str,
        origin: Origin,
        step: TraceKind,
        expr: str | None,
        value: Any,
        digest: str | None,
    ) -> Suppression:
        self.step(step, name, origin, value, expr=expr, channel=channel, detail=detail)
        return Suppression(channel=channel, reason=reason, detail=detail, rule=name, digest=digest)

    def recipients(self, definition: ChannelDef) -> int:
        contacts = self.user.contacts
        kind = definition.address
        if kind == "devices":
            return sum(1 for d in contacts.devices if d.active)
        if kind == "email":
            return int(contacts.email is not None)
        if kind == "phone":
            return int(contacts.phone is not None)
        if kind == "webhook":
            return int(contacts.webhook is not None)
        return 1  # inbox: every user has a feed

    def fingerprint(self, channel: str) -> str:
        if self._data_hash is None:
            self._data_hash = content_digest(self.intent.user_id, self.intent.event, self.intent.data)
        return f"{self._data_hash}.{channel}"

    def entry_fingerprint(self, entry: HistoryEntry) -> str | None:
        if entry.fingerprint is not None:
            return entry.fingerprint
        if entry.data is not None:
            return fingerprint(self.intent.user_id, entry.event, entry.channel, entry.data)
        return None

    def check_caps(
        self, plan: Plan, channel: str, preference: Preference | None
    ) -> tuple[str, Origin, str, str | None] | None:
        """The first cap this delivery would break: the category's, the bundle's, the user's."""
        rule = plan.rule
        sent = self.sent()
        for cap in plan.caps[channel]:
            since = self.now - cap.window
            count = sum(
                1 for at, ch, event, category in sent if at > since and cap.counts(event, ch, category)
            )
            if count >= cap.limit:
                scope = f"{cap.category} " if cap.category else ""
                detail = (
                    f"cap {cap.name}: {count} {scope}{channel} messages in the last "
                    f"{format_duration(cap.window)}, limit {cap.limit}"
                )
                digest = rule.digest if cap.overflow == "digest" else None
                if digest:
                    detail += f"; folded into the next {digest}"
                return cap.name, cap.origin, detail, digest
        own = _preference_cap(preference)
        if own is not None:
            since = self.now - own.window
            count = sum(
                1 for at, ch, event, category in sent if at > since and own.counts(event, ch, category)
            )
            if count >= own.limit:
                detail = (
                    f"the user's preference caps {preference.event} on {preference.channel} at "  # type: ignore[union-attr]
                    f"{own.limit} a day; {count} sent in the last 24h"
                )
                digest = rule.digest
                if digest:
                    detail += f"; folded into the next {digest}"
                return own.name, rule.origin, detail, digest
        return None

    def sent(self) -> list[tuple[dt.datetime, str, str, str]]:
        """History that counts toward caps, (at, channel, event, category): built once per decision.

        Pending batch items are not sent yet, and urgent messages never use up a cap.
        """
        if self._sent is None:
            self._sent = [
                (h.at, h.channel, h.event, self.entry_category(h))
                for h in self.history
                if not h.batched and h.priority != "urgent"
            ]
        return self._sent

    def fingerprints(self) -> dict[str, HistoryEntry]:
        """The latest entry of each content fingerprint in the history: built once per decision."""
        if self._fingerprints is None:
            latest: dict[str, HistoryEntry] = {}
            event = self.intent.event
            for entry in self.history:
                if entry.event != event:
                    continue  # a fingerprint covers the event: only the same event can match
                fp = self.entry_fingerprint(entry)
                if fp is not None and (fp not in latest or entry.at > latest[fp].at):
                    latest[fp] = entry
            self._fingerprints = latest
        return self._fingerprints

    def entry_category(self, entry: HistoryEntry) -> str:
        return entry.category or self.policy.category_of(entry.event) or ""

    def schedule(self, candidate: _Candidate, plan: Plan) -> Delivery | Suppression:
        """When a delivery goes: scheduled time, batch window, delivery window, quiet hours."""
        rule, bypass, tier = plan.rule, plan.bypass, plan.tier
        channel, now, tz = candidate.channel, self.now, self.tz
        at: dt.datetime = now
        reason: DeferralReason | None = None
        if self.intent.send_at is not None and self.intent.send_at > now:
            at, reason = self.intent.send_at, "scheduled"
            self.step(
                "schedule",
                rule.name,
                rule.origin,
                at,
                channel=channel,
                detail="the intent asks for a later send time",
            )
        batch = None
        if rule.batch is not None and "batching" not in bypass:
            batch = self.batch(rule, rule.batch, channel)
            if not batch.full:
                at, reason = max(at, batch.closes_at), "batched"
            if self.tracing:
                self.step(
                    "batch",
                    rule.name,
                    rule.batch.origin,
                    batch.size,
                    channel=channel,
                    detail=f"batch {batch.key}: {batch.size} of max {batch.max_size}, "
                    + (
                        "full: sent now"
                        if batch.full
                        else f"sent when the window closes at {batch.closes_at.isoformat()}"
                    ),
                )
        quiet = self.quiet_window() if plan.quiet[channel] else _QUIET_DEFAULT_NONE
        window = rule.delivery_window if "delivery_window" not in bypass else None
        for _ in range(_MAX_RESCHEDULES):
            moved = False
            if window is not None:
                opens = window.next_open(at, tz)
                if opens != at:
                    at, reason, moved = opens, "delivery_window", True
                    if self.tracing:
                        self.step(
                            "delivery_window",
                            rule.name,
                            rule.where("delivery_window"),
                            opens,
                            channel=channel,
                            detail=f"outside {window.describe()} ({self.tz_name})",
                        )
            if not quiet.empty:
                ends = quiet.end_after(at, tz)
                if ends is not None:
                    at, reason, moved = ends, "quiet_hours", True
                    if self.tracing:
                        self.step(
                            "quiet_hours",
                            rule.name,
                            rule.where("quiet_hours"),
                            ends,
                            channel=channel,
                            detail=f"inside quiet hours {quiet.describe()} ({self.tz_name}): "
                            "deferred to their end",
                        )
            if not moved:
                break
        else:
            detail = "no send time satisfies both the delivery window and the quiet hours"
            self.step("schedule", rule.name, rule.origin, False, channel=channel, detail=detail)
            return Suppression(channel=channel, reason="policy", detail=detail, rule=rule.name)
        return Delivery(
            channel=channel,
            send_at=None if at == now else at,
            deferred=reason,
            tier=tier.name,
            queue=tier.queue,
            template=candidate.template,
            providers=candidate.providers,
            recipients=candidate.recipients,
            estimated_cost=candidate.cost,
            expires_at=at + tier.expiry,
            rule=rule.name,
            fingerprint=candidate.fingerprint,
            batch=batch,
        )

    def quiet_window(self) -> DailyWindow:
        if self.user.quiet_hours is not None:
            return _daily_window(self.user.quiet_hours.start, self.user.quiet_hours.end)
        return self.policy.defaults.quiet_hours

    def batch(self, rule: Rule, spec: Batching, channel: str) -> Batch:
        """The batch this delivery joins: the open one of its key, or a new one from now.

        Items still waiting are the batched entries whose window has not closed. Every
        `max` items the batch fills and goes at once; the count starts again from there,
        and later items wait for the same window to close (a batch never exceeds `max`).
        """
        group = self.intent.event if spec.by == "event" else rule.category
        waiting = [
            closes
            for h in self.history
            if h.batched
            and h.channel == channel
            and (closes := h.batch_closes_at or h.at + spec.window) > self.now
            and (h.event == group if spec.by == "event" else self.entry_category(h) == group)
        ]
        if waiting:
            closes_at = min(waiting)
        else:  # whole milliseconds, as the history keeps it, so every item names the same close
            opened = self.now + spec.window
            closes_at = opened.replace(microsecond=opened.microsecond // 1000 * 1000)
        size = len(waiting) % spec.max_size + 1
        return Batch(
            key=f"{self.intent.user_id}:{group}:{channel}",
            window_seconds=int(spec.window.total_seconds()),
            max_size=spec.max_size,
            size=size,
            closes_at=closes_at,
            full=size >= spec.max_size,
        )


_ADDRESS_NAMES = {
    "devices": "active push device",
    "email": "email address",
    "phone": "phone number",
    "webhook": "webhook URL",
    "inbox": "inbox",
}


@lru_cache(maxsize=4096)
def _daily_window(start: str, end: str) -> DailyWindow:
    return DailyWindow.parse(start, end)


def _all_channels(reason: SuppressionReason, detail: str, name: str) -> Any:
    def outcome(channel: str) -> Suppression:
        return Suppression(channel=channel, reason=reason, detail=detail, rule=name)

    return outcome


def _pattern_rank(pattern: str) -> tuple[int, int]:
    if pattern == "*":
        return (0, 0)
    if pattern.endswith(".*"):
        return (1, pattern.count("."))
    return (2, pattern.count(".") + 1)


def _preference(preferences: Sequence[Preference], event: str, channel: str) -> Preference | None:
    """The user's most specific row for (event, channel); on a tie, a disabling row wins."""
    best: Preference | None = None
    best_rank: tuple[int, int, int, int] | None = None
    for pref in preferences:
        if pref.channel != "*" and pref.channel != channel:
            continue
        if not glob_event(pref.event, event):
            continue
        rank = (*_pattern_rank(pref.event), int(pref.channel != "*"), int(not pref.enabled))
        if best_rank is None or rank > best_rank:
            best, best_rank = pref, rank
    return best


_USER = Origin("user preferences", 0)


def preference_cap(preferences: Sequence[Preference], event: str, channel: str) -> Cap | None:
    """The user's own frequency cap for this event and channel, as a cap like the policy's."""
    return _preference_cap(_preference(preferences, event, channel))


def _preference_cap(preference: Preference | None) -> Cap | None:
    if preference is None or preference.frequency_cap is None:
        return None
    return Cap(
        name="user-preference",
        category=None,
        channels=None if preference.channel == "*" else frozenset({preference.channel}),
        events=(preference.event,),
        limit=preference.frequency_cap,
        window=dt.timedelta(days=1),
        overflow="suppress",
        origin=_USER,
    )


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _intent_map(intent: Intent) -> dict[str, Any]:
    return _drop_none(
        {
            "event": intent.event,
            "user_id": intent.user_id,
            "data": intent.data,
            "priority": intent.priority,
            "channels": intent.channels,
            "idempotency_key": intent.idempotency_key,
            "send_at": intent.send_at,
            "locale": intent.locale,
        }
    )


def user_map(user: UserState, tz_name: str) -> dict[str, Any]:
    """`user` as CEL sees it: decisions and schedule segments read the same map."""
    contacts = user.contacts
    return _drop_none(
        {
            "user_id": user.user_id,
            "timezone": tz_name,
            "locale": user.locale,
            "contacts": _drop_none(
                {
                    "email": contacts.email,
                    "phone": contacts.phone,
                    "webhook": contacts.webhook,
                    "devices": [
                        {"platform": d.platform, "token": d.token, "active": d.active}
                        for d in contacts.devices
                    ],
                }
            ),
            "preferences": [
                _drop_none(
                    {
                        "event": p.event,
                        "channel": p.channel,
                        "enabled": p.enabled,
                        "frequency_cap": p.frequency_cap,
                    }
                )
                for p in user.preferences
            ],
            "quiet_hours": {"start": user.quiet_hours.start, "end": user.quiet_hours.end}
            if user.quiet_hours
            else None,
        }
    )


def _history_map(entry: HistoryEntry) -> dict[str, Any]:
    return _drop_none(
        {
            "event": entry.event,
            "channel": entry.channel,
            "at": entry.at,
            "fingerprint": entry.fingerprint,
            "category": entry.category,
            "priority": entry.priority,
            "batched": entry.batched,
        }
    )


# --- the checks of one channel, in their fixed order ---------------------------------------


@dataclass(slots=True)
class _ChannelCheck:
    """One channel under check, and what earlier checks found that later ones and the
    candidate need (the preference, the recipients, the template, the route, the fingerprint)."""

    plan: Plan
    channel: str
    definition: ChannelDef
    constraints: list[Constraint]
    preference: Preference | None = None
    recipients: int = 0
    template: str = ""
    route: ProviderRoute | None = None
    fingerprint: str = ""

    def suppress(
        self,
        run: _Run,
        reason: SuppressionReason,
        detail: str,
        name: str,
        origin: Origin,
        *,
        step: TraceKind,
        expr: str | None = None,
        value: Any = False,
        digest: str | None = None,
    ) -> Suppression:
        return run.suppress(self.channel, reason, detail, name, origin, step, expr, value, digest)


def _intent_override(run: _Run, at: _ChannelCheck) -> Suppression | None:
    channels, rule = run.intent.channels, at.plan.rule
    if channels is None or at.channel in channels:
        return None
    detail = f"not among the intent's channels ({', '.join(channels)})"
    return at.suppress(run, "policy", detail, rule.name, rule.where("channels"), step="override")


def _constraints(run: _Run, at: _ChannelCheck) -> Suppression | None:
    for constraint in at.constraints:
        if at.channel in constraint.deny:
            return at.suppress(
                run,
                constraint.reason,
                constraint.detail,
                constraint.name,
                constraint.origin,
                step="constraint",
                expr=constraint.condition.source if constraint.condition else None,
                value=True,
            )
    return None


def _mute(run: _Run, at: _ChannelCheck) -> Suppression | None:
    rule = at.plan.rule
    if at.channel not in rule.mute:
        return None
    detail = f"{rule.category} messages are muted on {at.channel} by policy"
    return at.suppress(run, "muted", detail, rule.name, rule.where("mute"), step="mute", value=True)


def _consent(run: _Run, at: _ChannelCheck) -> Suppression | None:
    rule, intent = at.plan.rule, run.intent
    preference = at.preference = _preference(run.user.preferences, intent.event, at.channel)
    if preference.enabled if preference is not None else not at.definition.opt_in:
        return None
    why = (
        f"preference {{event: {preference.event}, channel: {preference.channel}}} disables it"
        if preference is not None
        else f"{at.channel} is opt-in and the user has not opted in"
    )
    if "opt_out" not in at.plan.bypass:
        return at.suppress(run, "opted_out", why, rule.name, rule.origin, step="consent")
    if run.tracing:
        detail = f"{why}, but priority {intent.priority} bypasses opt-outs"
        run.step("consent", rule.name, rule.origin, "bypassed", channel=at.channel, detail=detail)
    return None


def _address(run: _Run, at: _ChannelCheck) -> Suppression | None:
    at.recipients = run.recipients(at.definition)
    if at.recipients:
        return None
    detail = f"the user has no {_ADDRESS_NAMES[at.definition.address]}"
    return at.suppress(run, "no_address", detail, at.plan.rule.name, at.plan.rule.origin, step="address")


def _template(run: _Run, at: _ChannelCheck) -> Suppression | None:
    rule = at.plan.rule
    at.template = rule.template or run.intent.event
    if (at.template, at.channel) in run.policy.templates:
        return None
    detail = f"no template templates/{at.template}/{at.channel}.yaml"
    return at.suppress(run, "policy", detail, rule.name, rule.where("template"), step="template")


def _route(run: _Run, at: _ChannelCheck) -> Suppression | None:
    tier = at.plan.tier
    at.route = run.policy.route(at.plan.rule, tier, at.channel)
    if at.route.problem is None:
        return None
    return at.suppress(run, "policy", at.route.problem, tier.name, tier.origin, step="cost")


def _dedup(run: _Run, at: _ChannelCheck) -> Suppression | None:
    rule, intent = at.plan.rule, run.intent
    at.fingerprint = run.fingerprint(at.channel)
    if rule.dedup is None:
        return None
    last = run.fingerprints().get(at.fingerprint)
    if last is None or last.at <= run.now - rule.dedup:
        return None
    carrier = f" (notification {last.notification_id})" if last.notification_id else ""
    detail = (
        f"the same {intent.event} with identical data went to {at.channel} at "
        f"{last.at.isoformat()}{carrier}, within the {format_duration(rule.dedup)} dedup window"
    )
    return at.suppress(run, "duplicate", detail, rule.name, rule.where("dedup"), step="dedup", value=True)


def _caps(run: _Run, at: _ChannelCheck) -> Suppression | None:
    if "caps" in at.plan.bypass:
        return None
    capped = run.check_caps(at.plan, at.channel, at.preference)
    if capped is None:
        return None
    name, origin, detail, digest = capped
    return at.suppress(run, "frequency_capped", detail, name, origin, step="cap", value=True, digest=digest)


# docs/policies.md calls this "a fixed order": it is this tuple.
CHANNEL_CHECKS: tuple[Callable[[_Run, _ChannelCheck], Suppression | None], ...] = (
    _intent_override,
    _constraints,
    _mute,
    _consent,
    _address,
    _template,
    _route,
    _dedup,
    _caps,
)
