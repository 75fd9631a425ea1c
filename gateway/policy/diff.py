"""What a policy change does: the same corpus decided under two bundles, compared.

Pure: `compare()` takes two compiled policies and a corpus and returns a `DiffReport`; the
command line (`gateway/policy/diff_command.py`) finds the bundles and prints the report as
text, Markdown or JSON. Each sample is decided by `decide()`, the function intake runs, so
the report says what production would do differently, not what the YAML looks like.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway.model import Decision
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.corpus import Sample
from gateway.policy.engine import NoMatchingRule, decide

Channel = str


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """What one decision does, reduced to what a reviewer compares."""

    rule: str
    tier: str
    deliveries: dict[Channel, str]  # channel -> "tier/queue" plus " deferred:<reason>" when held
    suppressed: dict[Channel, str]  # channel -> reason
    messages: dict[Channel, int]  # messages sent per channel (recipients)
    cost: dict[Channel, float]

    def label(self) -> str:
        sent = ", ".join(f"{c} ({how})" for c, how in sorted(self.deliveries.items())) or "nothing"
        held = ", ".join(f"{c}: {why}" for c, why in sorted(self.suppressed.items()))
        return f"{self.rule} [{self.tier}]: {sent}" + (f"; suppressed {held}" if held else "")


class Example(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    intent: dict[str, Any]
    user_id: str
    at: str
    before: list[str]  # the trace, one line a step
    after: list[str]


class ChangedClass(msgspec.Struct, frozen=True, kw_only=True):
    """Samples whose route changed the same way: counted, with one example."""

    event: str
    priority: str
    before: str
    after: str
    count: int
    example: Example


class EventDiff(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    priority: str
    samples: int
    changed: int
    channels_added: dict[Channel, int]
    channels_removed: dict[Channel, int]
    tier_changes: dict[str, int]  # "standard -> critical" on a channel
    deferral_changes: dict[str, int]
    suppression_changes: dict[str, int]


class ChannelVolume(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    messages_before: float  # per day
    messages_after: float
    cost_before: float
    cost_after: float


class DiffReport(msgspec.Struct, frozen=True, kw_only=True):
    before: str
    after: str
    samples: int
    changed: int
    per_day: float  # intents a day the volumes are scaled to
    events: list[EventDiff]
    volumes: list[ChannelVolume]
    classes: list[ChangedClass]

    @property
    def cost_before(self) -> float:
        return sum(v.cost_before for v in self.volumes)

    @property
    def cost_after(self) -> float:
        return sum(v.cost_after for v in self.volumes)


def route_of(sample: Sample, policy: CompiledPolicy) -> tuple[Route, Decision | None]:
    try:
        decision = decide(sample.intent, sample.user, sample.now, sample.history, policy)
    except NoMatchingRule:
        return Route(rule="(no rule)", tier="-", deliveries={}, suppressed={}, messages={}, cost={}), None
    deliveries, messages, cost = {}, {}, {}
    for d in decision.deliveries:
        held = f" deferred:{d.deferred}" if d.deferred else ""
        deliveries[d.channel] = f"{d.tier}/{d.queue}{held}"
        messages[d.channel] = d.recipients
        cost[d.channel] = d.estimated_cost
    suppressed: dict[str, str] = {s.channel: s.reason for s in decision.suppressed}
    route = Route(
        rule=decision.rule,
        tier=decision.tier,
        deliveries=deliveries,
        suppressed=suppressed,
        messages=messages,
        cost=cost,
    )
    return route, decision


def compare(
    before: CompiledPolicy, after: CompiledPolicy, samples: Sequence[Sample], *, per_day: float | None = None
) -> DiffReport:
    """Decide every sample under both bundles and gather what changed, per event and priority."""
    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    classes: dict[tuple[str, str, str, str], list[Any]] = {}
    volume: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for sample in samples:
        old, old_decision = route_of(sample, before)
        new, new_decision = route_of(sample, after)
        key = (sample.intent.event, sample.intent.priority)
        groups[key].add(old, new)
        for channel in old.messages.keys() | new.messages.keys():
            v = volume[channel]
            v[0] += old.messages.get(channel, 0)
            v[1] += new.messages.get(channel, 0)
            v[2] += old.cost.get(channel, 0.0)
            v[3] += new.cost.get(channel, 0.0)
        if old != new:
            signature = (*key, old.label(), new.label())
            if signature in classes:
                classes[signature][0] += 1
            else:
                classes[signature] = [1, _example(sample, old_decision, new_decision)]
    scale = (per_day / len(samples)) if per_day and samples else 1.0
    return DiffReport(
        before=before.version,
        after=after.version,
        samples=len(samples),
        changed=sum(g.changed for g in groups.values()),
        per_day=per_day or float(len(samples)),
        events=[g.report(event, priority) for (event, priority), g in sorted(groups.items())],
        volumes=[
            ChannelVolume(
                channel=c,
                messages_before=round(v[0] * scale, 2),
                messages_after=round(v[1] * scale, 2),
                cost_before=round(v[2] * scale, 6),
                cost_after=round(v[3] * scale, 6),
            )
            for c, v in sorted(volume.items())
        ],
        classes=[
            ChangedClass(event=k[0], priority=k[1], before=k[2], after=k[3], count=n, example=example)
            for k, (n, example) in sorted(classes.items(), key=lambda item: (-item[1][0], item[0]))
        ],
    )


class _Group:
    """The changes seen for one event and priority."""

    def __init__(self) -> None:
        self.samples = 0
        self.changed = 0
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, old: Route, new: Route) -> None:
        self.samples += 1
        if old == new:
            return
        self.changed += 1
        for channel in new.deliveries.keys() - old.deliveries.keys():
            self.counts["added"][channel] += 1
        for channel in old.deliveries.keys() - new.deliveries.keys():
            self.counts["removed"][channel] += 1
        for channel in old.deliveries.keys() & new.deliveries.keys():
            was, now = old.deliveries[channel].split(" "), new.deliveries[channel].split(" ")
            if was[0] != now[0]:
                self.counts["tier"][f"{channel}: {was[0]} -> {now[0]}"] += 1
            if was[1:] != now[1:]:
                self.counts["deferral"][f"{channel}: {_held(was)} -> {_held(now)}"] += 1
        for channel in old.suppressed.keys() | new.suppressed.keys():
            was_s, now_s = old.suppressed.get(channel, "-"), new.suppressed.get(channel, "-")
            if was_s != now_s:
                self.counts["suppression"][f"{channel}: {was_s} -> {now_s}"] += 1

    def report(self, event: str, priority: str) -> EventDiff:
        return EventDiff(
            event=event,
            priority=priority,
            samples=self.samples,
            changed=self.changed,
            channels_added=dict(self.counts["added"]),
            channels_removed=dict(self.counts["removed"]),
            tier_changes=dict(self.counts["tier"]),
            deferral_changes=dict(self.counts["deferral"]),
            suppression_changes=dict(self.counts["suppression"]),
        )


def _held(parts: list[str]) -> str:
    return parts[1].removeprefix("deferred:") if len(parts) > 1 else "at once"


def _example(sample: Sample, before: Decision | None, after: Decision | None) -> Example:
    return Example(
        source=sample.source,
        intent=msgspec.to_builtins(sample.intent),
        user_id=sample.user.user_id,
        at=sample.now.isoformat(),
        before=_trace(before),
        after=_trace(after),
    )


def _trace(decision: Decision | None) -> list[str]:
    if decision is None:
        return ["no rule matches"]
    lines = [f"rule {decision.rule}, tier {decision.tier}"]
    for step in decision.trace:
        # Only the bundle-relative part of the path: the two bundles live in different places.
        where = f" ({'/'.join(Path(step.file).parts[-2:])}:{step.line})" if step.file else ""
        channel = f" {step.channel}" if step.channel else ""
        detail = f": {step.detail}" if step.detail else ""
        lines.append(f"{step.step}{channel} = {step.value}{where}{detail}")
    lines += [
        f"send {d.channel} ({d.tier}/{d.queue}{', ' + d.deferred if d.deferred else ''})"
        for d in decision.deliveries
    ]
    lines += [f"suppress {s.channel}: {s.reason}" for s in decision.suppressed]
    return lines
