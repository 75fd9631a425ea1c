"""A `DiffReport` for people (text, Markdown for a pull-request comment) and for tools (JSON),
and the `--fail-on` thresholds that turn it into an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from gateway.policy.diff import DiffReport, EventDiff

Format = Literal["text", "markdown", "json"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "json")
MAX_CLASSES = 10  # changed classes shown with their example; the JSON has them all


class Threshold(msgspec.Struct, frozen=True):
    """`cost-up=N` (percent), `urgent-changed`, `any-change`."""

    kind: Literal["cost-up", "urgent-changed", "any-change"]
    percent: float = 0.0


def parse_threshold(raw: str) -> Threshold:
    name, _, value = raw.partition("=")
    if name == "cost-up":
        try:
            return Threshold("cost-up", float(value))
        except ValueError:
            raise ValueError(f"--fail-on {raw!r}: give a percentage, e.g. cost-up=10") from None
    if name in ("urgent-changed", "any-change") and not value:
        return Threshold(name)  # type: ignore[arg-type]
    raise ValueError(f"--fail-on {raw!r} is not valid: choose cost-up=PERCENT, urgent-changed or any-change")


def breaches(report: DiffReport, thresholds: Sequence[Threshold]) -> list[str]:
    """The thresholds the report crosses, each as a sentence; empty when all hold."""
    found = []
    for t in thresholds:
        if t.kind == "any-change" and report.changed:
            found.append(f"{report.changed} of {report.samples} decisions changed")
        elif t.kind == "urgent-changed":
            urgent = sum(e.changed for e in report.events if e.priority == "urgent")
            if urgent:
                found.append(f"{urgent} urgent decisions changed route")
        elif t.kind == "cost-up":
            before, after = report.cost_before, report.cost_after
            up = (after - before) / before * 100 if before else (100.0 if after > 0 else 0.0)
            if up > t.percent:
                found.append(f"estimated cost up {up:.1f}% (more than {t.percent:g}%)")
    return found


def render(report: DiffReport, fmt: Format) -> str:
    if fmt == "json":
        payload = msgspec.to_builtins(report)
        payload["cost_before"], payload["cost_after"] = report.cost_before, report.cost_after
        return msgspec.json.encode(payload).decode()
    return _markdown(report) if fmt == "markdown" else _text(report)


def _changes(e: EventDiff) -> list[str]:
    parts = [f"+{c} ({n})" for c, n in sorted(e.channels_added.items())]
    parts += [f"-{c} ({n})" for c, n in sorted(e.channels_removed.items())]
    for label, values in (
        ("tier", e.tier_changes),
        ("deferral", e.deferral_changes),
        ("suppression", e.suppression_changes),
    ):
        parts += [f"{label} {k} ({n})" for k, n in sorted(values.items())]
    return parts


def _text(report: DiffReport) -> str:
    lines = [
        f"policy diff {report.before} -> {report.after}: "
        f"{report.changed} of {report.samples} decisions changed",
    ]
    changed = [e for e in report.events if e.changed]
    if changed:
        lines.append("\nchanged routes (event, priority: changed/samples: what)")
        lines += [
            f"  {e.event} {e.priority}: {e.changed}/{e.samples}: {'; '.join(_changes(e))}" for e in changed
        ]
    lines.append(f"\nper day, at {report.per_day:g} intents a day (messages, cost before -> after)")
    for v in report.volumes:
        lines.append(
            f"  {v.channel}: {v.messages_before:g} -> {v.messages_after:g} messages, "
            f"{v.cost_before:.4f} -> {v.cost_after:.4f}"
        )
    lines.append(f"  total cost: {report.cost_before:.4f} -> {report.cost_after:.4f}")
    for c in report.classes[:MAX_CLASSES]:
        lines.append(f"\n{c.count} x {c.event} {c.priority}\n  before: {c.before}\n  after:  {c.after}")
        lines.append(f"  example ({c.example.source}): user {c.example.user_id} at {c.example.at}")
        lines += _side_by_side(c.example.before, c.example.after, indent="    ")
    return "\n".join(lines)


def _markdown(report: DiffReport) -> str:
    lines = [
        f"### Policy diff `{report.before}` → `{report.after}`",
        "",
        f"**{report.changed}** of {report.samples} decisions changed.",
        "",
    ]
    changed = [e for e in report.events if e.changed]
    if changed:
        lines += ["| event | priority | changed | what |", "|---|---|---|---|"]
        lines += [
            f"| `{e.event}` | {e.priority} | {e.changed}/{e.samples} | {'<br>'.join(_changes(e))} |"
            for e in changed
        ]
        lines.append("")
    lines += [
        f"Per day, at {report.per_day:g} intents a day:",
        "",
        "| channel | messages before | after | cost before | after |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {v.channel} | {v.messages_before:g} | {v.messages_after:g} | "
        f"{v.cost_before:.4f} | {v.cost_after:.4f} |"
        for v in report.volumes
    ]
    lines.append(f"| **total** | | | {report.cost_before:.4f} | {report.cost_after:.4f} |")
    for c in report.classes[:MAX_CLASSES]:
        lines += [
            "",
            f"<details><summary>{c.count} x <code>{c.event}</code> {c.priority}: "
            f"{c.before} → {c.after}</summary>",
            "",
            f"Example ({c.example.source}): user `{c.example.user_id}` at {c.example.at}",
            "",
            "| before | after |",
            "|---|---|",
        ]
        lines += [f"| {b} | {a} |" for b, a in _pairs(c.example.before, c.example.after)]
        lines += ["", "</details>"]
    return "\n".join(lines)


def _pairs(before: list[str], after: list[str]) -> list[tuple[str, str]]:
    width = max(len(before), len(after))
    return [(before[i] if i < len(before) else "", after[i] if i < len(after) else "") for i in range(width)]


def _side_by_side(before: list[str], after: list[str], indent: str) -> list[str]:
    column = min(60, max((len(line) for line in before), default=0))
    lines = [f"{indent}{'before':<{column}} | after"]
    for b, a in _pairs(before, after):
        mark = " " if b == a else "*"
        lines.append(f"{indent}{b[:column]:<{column}} {mark} {a}")
    return lines
