"""The compiled policy bundle as a person reads it: `GET /v1/policy/bundle` and the console.

`describe()` is a pure function of a `CompiledPolicy`: it reads the structures the compiler
already built (durations as seconds, clock windows as `HH:MM`, every element with the file
and line it was written at) and never re-reads a file. Rules are listed per category in
precedence order, the order `CompiledPolicy.candidates` would try them for an event each
names, so a reader sees which rule wins without running the engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.model import PRIORITIES
from gateway.policy.compiled import Cap, CompiledPolicy, Condition, Origin, Rule, Tier
from gateway.timeutil import DailyWindow, WeeklyWindow

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Where(msgspec.Struct, frozen=True):
    """A place in the bundle: what the console links to."""

    file: str
    line: int


class ConditionView(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    on_error: bool  # what an evaluation error counts as
    where: Where


class RetryView(msgspec.Struct, frozen=True, kw_only=True):
    schedule_seconds: list[float]
    max_attempts: int
    jitter: float
    max_delay_seconds: float | None


class TierView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    queue: str
    latency_target_seconds: float
    expiry_seconds: float
    cost_ceiling: float | None
    chunk_size: int
    retry: RetryView
    where: Where


class PriorityView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    bypass: list[str]
    strategy: str
    fallback: list[str]
    where: Where


class ChannelView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    address: str
    opt_in: bool
    quiet_hours: bool


class CapView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    category: str | None
    channels: list[str] | None
    events: list[str] | None
    limit: int
    window_seconds: float
    overflow: str
    where: Where


class ConstraintView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    category: str | None
    events: list[str] | None
    priorities: list[str] | None
    condition: ConditionView | None
    deny: list[str]
    reason: str
    detail: str
    where: Where


class BatchView(msgspec.Struct, frozen=True, kw_only=True):
    window_seconds: float
    max_size: int
    by: str
    where: Where


class WindowView(msgspec.Struct, frozen=True, kw_only=True):
    days: list[str]
    start: str
    end: str


class RuleView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    category: str
    description: str
    precedence: int  # 1 is tried first among the category's rules for an event they all name
    events: list[str]
    priorities: list[str] | None
    condition: ConditionView | None
    tiers: dict[str, str]  # per priority
    channels: list[str]
    mute: list[str]
    bypass: list[str]
    strategy: str | None
    fallback: list[str] | None
    dedup_seconds: float | None
    batch: BatchView | None
    delivery_window: WindowView | None
    quiet_hours: bool
    template: str | None
    providers: dict[str, list[str]]
    digest: str | None
    where: Where
    settings: dict[str, Where]  # where each setting of the rule was written


class CategoryView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    rules: list[RuleView]
    caps: list[CapView]


class ScheduleView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    category: str
    description: str
    cron: str
    event: str
    priority: str
    segment: str
    data: dict[str, Any]
    where: Where


class ProviderView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    channel: str
    adapter: str
    cost: float
    platforms: list[str] | None
    where: Where


class TemplateView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    channel: str
    locale: str | None
    file: str


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """An event the bundle knows by name: a template exists for it or a rule names it exactly."""

    name: str
    category: str | None
    channels: list[str]  # channels with a template
    locales: list[str]  # template variants besides the default
    example: dict[str, Any] | None  # the templates' example data: a ready `data` for a try


class FileView(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    kind: str
    sha256: str


class DefaultsView(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str
    quiet_hours: WindowView
    idempotency_window_seconds: float
    where: Where


class BundleView(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    cel_runtime: str
    files: list[FileView]
    defaults: DefaultsView
    priorities: list[PriorityView]
    channels: list[ChannelView]
    tiers: list[TierView]
    caps: list[CapView]  # bundle-wide
    constraints: list[ConstraintView]
    categories: list[CategoryView]
    schedules: list[ScheduleView]
    providers: list[ProviderView]
    routes: dict[str, list[str]]  # providers.yaml's chain per channel
    templates: list[TemplateView]
    events: list[EventView]


def describe(policy: CompiledPolicy) -> BundleView:
    return BundleView(
        version=policy.version,
        cel_runtime=policy.runtime,
        files=[FileView(path=f.path, kind=f.kind, sha256=f.sha256) for f in policy.files],
        defaults=DefaultsView(
            timezone=policy.defaults.timezone,
            quiet_hours=_daily(policy.defaults.quiet_hours),
            idempotency_window_seconds=_seconds(policy.defaults.idempotency_window),
            where=_where(policy.defaults.origin),
        ),
        priorities=[
            PriorityView(
                name=name,
                bypass=sorted(p.bypass),
                strategy=p.strategy,
                fallback=list(p.fallback),
                where=_where(p.origin),
            )
            for name in PRIORITIES
            if (p := policy.priorities.get(name)) is not None
        ],
        channels=[
            ChannelView(name=c.name, address=c.address, opt_in=c.opt_in, quiet_hours=c.quiet_hours)
            for c in policy.channels.values()
        ],
        tiers=[_tier(t) for t in sorted(policy.tiers.values(), key=lambda t: t.latency_target)],
        caps=[_cap(c) for c in policy.caps],
        constraints=[
            ConstraintView(
                name=c.name,
                category=c.category,
                events=list(c.events) if c.events is not None else None,
                priorities=_ordered(c.priorities),
                condition=_condition(c.condition),
                deny=sorted(c.deny),
                reason=c.reason,
                detail=c.detail,
                where=_where(c.origin),
            )
            for c in policy.constraints
        ],
        categories=_categories(policy.rules),
        schedules=[
            ScheduleView(
                name=s.name,
                category=s.category,
                description=s.description,
                cron=s.cron,
                event=s.event,
                priority=s.priority,
                segment=s.segment.source,
                data=dict(s.data),
                where=_where(s.origin),
            )
            for s in policy.schedules
        ],
        providers=[
            ProviderView(
                name=p.name,
                channel=p.channel,
                adapter=p.adapter,
                cost=p.cost,
                platforms=sorted(p.platforms) if p.platforms is not None else None,
                where=_where(p.origin),
            )
            for p in policy.providers.providers.values()
        ],
        routes={channel: list(chain) for channel, chain in policy.providers.routes.items()},
        templates=[
            TemplateView(name=t.name, channel=t.channel, locale=t.locale, file=t.file)
            for t in policy.messages.all()
        ],
        events=_events(policy),
    )


def _categories(rules: Iterable[Rule]) -> list[CategoryView]:
    grouped: dict[str, list[Rule]] = {}
    caps: dict[str, dict[str, Cap]] = {}
    for rule in rules:
        grouped.setdefault(rule.category, []).append(rule)
        for cap in rule.caps:
            caps.setdefault(rule.category, {})[cap.name] = cap
    return [
        CategoryView(
            name=name,
            rules=[_rule(r, i + 1) for i, r in enumerate(precedence(members))],
            caps=[_cap(c) for c in caps.get(name, {}).values()],
        )
        for name, members in sorted(grouped.items())
    ]


def precedence(rules: list[Rule]) -> list[Rule]:
    """Most specific first, as `CompiledPolicy.candidates` ranks rules for an event they all
    name (each rule judged on its own most specific pattern); ties keep the files' order."""

    def rank(rule: Rule) -> tuple[int, int, int, int]:
        specific = [rule.specificity(_example_event(p)) for p in rule.patterns]
        return max((s for s in specific if s is not None), default=(0, 0, 0, 0))

    return sorted(rules, key=rank, reverse=True)


def _example_event(pattern: str) -> str:
    """An event the pattern matches, to rank the pattern by: `order.*` -> `order.x`."""
    if pattern == "*":
        return "x"
    return pattern[:-1] + "x" if pattern.endswith(".*") else pattern


def _rule(rule: Rule, place: int) -> RuleView:
    return RuleView(
        name=rule.name,
        category=rule.category,
        description=rule.description,
        precedence=place,
        events=list(rule.patterns),
        priorities=_ordered(rule.priorities),
        condition=_condition(rule.condition),
        tiers={p: rule.tiers[p].name for p in PRIORITIES if p in rule.tiers},
        channels=list(rule.channels),
        mute=sorted(rule.mute),
        bypass=sorted(rule.bypass),
        strategy=rule.strategy,
        fallback=list(rule.fallback) if rule.fallback is not None else None,
        dedup_seconds=_seconds(rule.dedup) if rule.dedup is not None else None,
        batch=BatchView(
            window_seconds=_seconds(rule.batch.window),
            max_size=rule.batch.max_size,
            by=rule.batch.by,
            where=_where(rule.batch.origin),
        )
        if rule.batch is not None
        else None,
        delivery_window=_weekly(rule.delivery_window) if rule.delivery_window is not None else None,
        quiet_hours=rule.quiet_hours,
        template=rule.template,
        providers={c: list(chain) for c, chain in rule.providers.items()},
        digest=rule.digest,
        where=_where(rule.origin),
        settings={name: _where(origin) for name, origin in rule.locations.items()},
    )


def _events(policy: CompiledPolicy) -> list[EventView]:
    names = {t.name for t in policy.messages.all()}
    names |= {p for r in policy.rules for p in r.patterns if "*" not in p}
    views = []
    for name in sorted(names):
        variants = [t for t in policy.messages.all() if t.name == name]
        example = policy.messages.examples.get(name)
        views.append(
            EventView(
                name=name,
                category=policy.category_of(name),
                channels=sorted({t.channel for t in variants}),
                locales=sorted({t.locale for t in variants if t.locale}),
                example=dict(example.data) if example is not None else None,
            )
        )
    return views


def _tier(tier: Tier) -> TierView:
    retry = tier.retry
    return TierView(
        name=tier.name,
        queue=tier.queue,
        latency_target_seconds=_seconds(tier.latency_target),
        expiry_seconds=_seconds(tier.expiry),
        cost_ceiling=tier.cost_ceiling,
        chunk_size=tier.chunk_size,
        retry=RetryView(
            schedule_seconds=[_seconds(d) for d in retry.schedule],
            max_attempts=retry.max_attempts,
            jitter=retry.jitter,
            max_delay_seconds=_seconds(retry.max_delay) if retry.max_delay is not None else None,
        ),
        where=_where(tier.origin),
    )


def _cap(cap: Cap) -> CapView:
    return CapView(
        name=cap.name,
        category=cap.category,
        channels=sorted(cap.channels) if cap.channels is not None else None,
        events=list(cap.events) if cap.events is not None else None,
        limit=cap.limit,
        window_seconds=_seconds(cap.window),
        overflow=cap.overflow,
        where=_where(cap.origin),
    )


def _condition(condition: Condition | None) -> ConditionView | None:
    if condition is None:
        return None
    return ConditionView(source=condition.source, on_error=condition.on_error, where=_where(condition.origin))


def _ordered(priorities: Iterable[str] | None) -> list[str] | None:
    if priorities is None:
        return None
    chosen = set(priorities)
    return [p for p in PRIORITIES if p in chosen]


def _where(origin: Origin) -> Where:
    return Where(origin.file, origin.line)


def _seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _daily(window: DailyWindow) -> WindowView:
    return WindowView(days=list(WEEKDAYS), start=_clock(window.start), end=_clock(window.end))


def _weekly(window: WeeklyWindow) -> WindowView:
    return WindowView(
        days=[WEEKDAYS[d] for d in sorted(window.days)], start=_clock(window.start), end=_clock(window.end)
    )
