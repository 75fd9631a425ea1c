"""A policy bundle compiled for evaluation: every string parsed, every reference resolved,
every CEL expression compiled. Built once per policy version by `gateway.policy.compiler`;
the engine only reads it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.model import Priority, TraceStep
from gateway.policy.cel import CelProgram
from gateway.policy.cel_functions import glob_event
from gateway.templating.catalog import TemplateCatalog
from gateway.timeutil import DailyWindow, WeeklyWindow

Bypass = Literal["opt_out", "quiet_hours", "caps", "delivery_window", "batching"]
Strategy = Literal["all", "first"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a policy element was written, for traces, coverage and diagnostics."""

    file: str
    line: int
    col: int = 1

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Condition:
    program: CelProgram
    source: str
    on_error: bool  # what an evaluation error counts as: True = match
    origin: Origin


@dataclass(frozen=True, slots=True)
class ChannelDef:
    name: str
    address: Literal["devices", "email", "phone", "inbox", "webhook"]
    opt_in: bool  # True: disabled until the user enables it (SMS by default)
    quiet_hours: bool  # False: never deferred by quiet hours (in-app is silent)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[dt.timedelta, ...]
    max_attempts: int
    jitter: float
    max_delay: dt.timedelta | None


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    queue: str
    latency_target: dt.timedelta
    expiry: dt.timedelta
    cost_ceiling: float | None
    retry: RetryPolicy
    chunk_size: int
    origin: Origin
    summary: str = ""  # for traces: "queue critical, expiry 10m"
    # `ambiguous: at_least_once`: when a provider may have taken the message but did not say,
    # try the next one anyway (a possible duplicate) rather than record the delivery `unknown`.
    at_least_once: bool = False


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    """A channel's provider chain under a tier: affordable providers and the first's cost."""

    providers: tuple[str, ...]
    unit_cost: float
    problem: str | None = None  # why the channel cannot be used under this tier


@dataclass(frozen=True, slots=True)
class PrioritySettings:
    bypass: frozenset[str]
    strategy: Strategy
    fallback: tuple[str, ...]
    origin: Origin


@dataclass(frozen=True, slots=True)
class Cap:
    name: str
    category: str | None  # None: counts every category (the bundle-wide ceilings)
    channels: frozenset[str] | None  # None: every channel
    events: tuple[str, ...] | None
    limit: int
    window: dt.timedelta
    overflow: Literal["suppress", "digest"]
    origin: Origin

    def applies_to(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels

    def counts(self, event: str, channel: str, category: str) -> bool:
        if self.channels is not None and channel not in self.channels:
            return False
        if self.category is not None and category != self.category:
            return False
        return self.events is None or any(glob_event(p, event) for p in self.events)


@dataclass(frozen=True, slots=True)
class Constraint:
    name: str
    category: str | None
    events: tuple[str, ...] | None
    priorities: frozenset[str] | None
    condition: Condition | None
    deny: frozenset[str]
    reason: Literal["policy", "muted"]
    detail: str
    origin: Origin

    def in_scope(self, event: str, priority: str, category: str) -> bool:
        if self.category is not None and self.category != category:
            return False
        if self.priorities is not None and priority not in self.priorities:
            return False
        return self.events is None or any(glob_event(p, event) for p in self.events)


@dataclass(frozen=True, slots=True)
class Batching:
    window: dt.timedelta
    max_size: int
    by: Literal["event", "category"]
    origin: Origin


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: str
    description: str
    origin: Origin
    patterns: tuple[str, ...]
    priorities: frozenset[str] | None
    condition: Condition | None
    tiers: Mapping[str, Tier]  # per priority
    channels: tuple[str, ...]
    mute: frozenset[str]
    bypass: frozenset[str]
    strategy: Strategy | None
    fallback: tuple[str, ...] | None
    dedup: dt.timedelta | None
    batch: Batching | None
    delivery_window: WeeklyWindow | None
    quiet_hours: bool
    template: str | None
    providers: Mapping[str, tuple[str, ...]]
    caps: tuple[Cap, ...]  # the category's caps
    digest: str | None
    locations: Mapping[str, Origin] = field(default_factory=dict)  # per setting, for traces

    def where(self, setting: str) -> Origin:
        return self.locations.get(setting, self.origin)

    def specificity(self, event: str) -> tuple[int, int, int, int] | None:
        """How specifically this rule names `event`, or None when no pattern matches.

        Exact names beat `prefix.*` patterns, longer prefixes beat shorter ones, `*` comes
        last; among equals, a priority filter and then a condition make a rule more specific.
        """
        best: tuple[int, int] | None = None
        for pattern in self.patterns:
            if not glob_event(pattern, event):
                continue
            if pattern == "*":
                rank = (0, 0)
            elif pattern.endswith(".*"):
                rank = (1, pattern.count("."))
            else:
                rank = (2, pattern.count(".") + 1)
            if best is None or rank > best:
                best = rank
        if best is None:
            return None
        return (*best, int(self.priorities is not None), int(self.condition is not None))


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    channel: str
    adapter: str
    cost: float
    platforms: frozenset[str] | None
    origin: Origin


@dataclass(frozen=True, slots=True)
class ProviderCatalog:
    providers: Mapping[str, ProviderInfo]
    routes: Mapping[str, tuple[str, ...]]
    file: str
    loaded: bool = True  # False when providers.yaml was missing or invalid: skip reference checks


@dataclass(frozen=True, slots=True)
class Defaults:
    timezone: str
    idempotency_window: dt.timedelta
    quiet_hours: DailyWindow
    origin: Origin


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str
    kind: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a rule means at one priority, worked out once per policy version, not per decision."""

    rule: Rule
    tier: Tier
    bypass: frozenset[str]
    strategy: Strategy
    chain: tuple[str, ...]  # the fallback chain, each channel once
    strategy_origin: Origin
    tier_step: TraceStep  # trace steps are immutable: every decision shares these
    bypass_step: TraceStep | None
    caps: Mapping[str, tuple[Cap, ...]]  # per channel: the category's caps, then the bundle's
    quiet: Mapping[str, bool]  # per channel: do quiet hours hold it?
    order: Mapping[str, int]  # channel -> position, for ordering suppressions


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring intent: at each `cron` occurrence in a user's own zone, `event` for the segment.

    `data` values may hold `$week`, `$date`, `$occurrence` and `$schedule` placeholders
    (`string.Template`), filled per occurrence by `gateway.scheduler.schedule_intent`.
    """

    name: str
    category: str
    description: str
    cron: str  # five fields, checked by `gateway.cron.parse_cron`
    event: str
    segment: Condition  # over `user` (and `now`, the occurrence)
    data: Mapping[str, object]
    priority: Priority
    misfire: dt.timedelta  # occurrences older than this when reached are recorded missed
    origin: Origin


@dataclass(eq=False)
class CompiledPolicy:
    version: str
    runtime: str
    defaults: Defaults
    channels: Mapping[str, ChannelDef]
    tiers: Mapping[str, Tier]
    priorities: Mapping[Priority, PrioritySettings]
    caps: tuple[Cap, ...]  # bundle-wide
    constraints: tuple[Constraint, ...]
    rules: tuple[Rule, ...]
    providers: ProviderCatalog
    templates: frozenset[tuple[str, str]]  # (template name, channel)
    files: tuple[PolicyFile, ...]
    cel_variables: frozenset[str]  # what any compiled expression reads; only these are built
    messages: TemplateCatalog = field(default_factory=TemplateCatalog)  # set by check()
    schedules: tuple[Schedule, ...] = ()  # recurring intents (`schedules:` of the category files)
    _candidates: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _routes: dict[tuple[str, str, str], ProviderRoute] = field(default_factory=dict, repr=False)
    _plans: dict[tuple[str, str], Plan] = field(default_factory=dict, repr=False)
    _categories: dict[str, str | None] = field(default_factory=dict, repr=False)
    _tier_ranks: dict[str, int] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def digest_events(self) -> frozenset[str]:
        """Events whose deliveries carry the messages folded into them (`overflow: digest`)."""
        return frozenset(r.digest for r in self.rules if r.digest)

    def candidates(self, event: str) -> tuple[Rule, ...]:
        """Rules whose event patterns match, most specific first; cached per event name."""
        found = self._candidates.get(event)
        if found is None:
            ranked = [
                (spec, i, r) for i, r in enumerate(self.rules) if (spec := r.specificity(event)) is not None
            ]
            ranked.sort(key=lambda t: (t[0], -t[1]), reverse=True)
            found = tuple(r for _, _, r in ranked)
            if len(self._candidates) < 10_000:
                self._candidates[event] = found
        return found

    def category_of(self, event: str) -> str | None:
        """The category an event belongs to by its name alone (for hand-written history)."""
        if event not in self._categories:
            rules = self.candidates(event)
            unconditional = [r for r in rules if r.condition is None and r.priorities is None]
            ranked = unconditional or list(rules)
            category = ranked[0].category if ranked else None
            if len(self._categories) < 10_000:
                self._categories[event] = category
            return category
        return self._categories[event]

    def route(self, rule: Rule, tier: Tier, channel: str) -> ProviderRoute:
        """The rule's (or providers.yaml's) chain for a channel, within the tier's cost ceiling."""
        key = (rule.name, tier.name, channel)
        found = self._routes.get(key)
        if found is None:
            chain = rule.providers.get(channel) or self.providers.routes.get(channel, ())
            costs = {name: self.providers.providers[name].cost for name in chain}
            ceiling = tier.cost_ceiling
            affordable = tuple(p for p in chain if ceiling is None or costs[p] <= ceiling)
            if chain and not affordable:
                found = ProviderRoute(
                    (),
                    0.0,
                    f"{channel} costs at least ${min(costs.values()):g} a message, "
                    f"above tier {tier.name}'s ceiling ${ceiling:g}",
                )
            else:
                found = ProviderRoute(affordable, costs[affordable[0]] if affordable else 0.0)
            self._routes[key] = found
        return found

    def plan(self, rule: Rule, priority: Priority) -> Plan:
        found = self._plans.get((rule.name, priority))
        if found is None:
            found = self._plans[(rule.name, priority)] = self._make_plan(rule, priority)
        return found

    def _make_plan(self, rule: Rule, priority: Priority) -> Plan:
        settings = self.priorities[priority]
        tier = rule.tiers[priority]
        bypass = settings.bypass | rule.bypass
        tier_origin = rule.where("tier")
        bypass_origin = rule.where("bypass") if rule.bypass else settings.origin
        chain = tuple(dict.fromkeys(rule.fallback if rule.fallback is not None else settings.fallback))
        return Plan(
            rule=rule,
            tier=tier,
            bypass=bypass,
            strategy=rule.strategy or settings.strategy,
            chain=chain,
            strategy_origin=rule.where("strategy") if rule.strategy else settings.origin,
            tier_step=TraceStep(
                step="tier",
                rule=rule.name,
                file=tier_origin.file,
                line=tier_origin.line,
                expr=None,
                value=tier.name,
                detail=f"priority {priority}: {tier.summary}",
            ),
            bypass_step=TraceStep(
                step="bypass",
                rule=rule.name,
                file=bypass_origin.file,
                line=bypass_origin.line,
                expr=None,
                value=sorted(bypass),
                detail=f"priority {priority} and rule {rule.name} bypass these checks",
            )
            if bypass
            else None,
            caps={
                c: tuple(cap for cap in (*rule.caps, *self.caps) if cap.applies_to(c)) for c in rule.channels
            },
            quiet={
                c: self.channels[c].quiet_hours and rule.quiet_hours and "quiet_hours" not in bypass
                for c in rule.channels
            },
            order={c: i for i, c in enumerate(rule.channels)},
        )

    def tier_rank(self, name: str) -> int:
        """0 for the tier with the shortest latency target: whose jobs the relay pushes first."""
        if not self._tier_ranks:
            ranked = sorted(self.tiers.values(), key=lambda t: t.latency_target)
            self._tier_ranks.update((t.name, i) for i, t in enumerate(ranked))
        return self._tier_ranks.get(name, len(self.tiers))

    @property
    def history_window(self) -> dt.timedelta:
        """How far back any check of this policy looks: how much history a decision needs."""
        spans = [dt.timedelta(days=1)]  # users' own frequency caps
        spans += [cap.window for cap in self.caps]
        for rule in self.rules:
            spans += [cap.window for cap in rule.caps]
            if rule.dedup is not None:
                spans.append(rule.dedup)
            if rule.batch is not None:
                spans.append(rule.batch.window)
        return max(spans)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)
