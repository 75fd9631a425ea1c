"""A Decision as a person reads it: what goes where and when, what did not and why, and
the trace of rules and CEL expressions that made it so. `notigate explain` prints this;
`--json` prints the contract's JSON instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.model import Decision, Delivery, TraceStep


def render_decision(decision: Decision, *, trace: bool = True) -> str:
    lines = [
        f"{decision.event} for {decision.user_id} (priority {decision.priority})",
        f"  rule {decision.rule}, category {decision.category}, tier {decision.tier}",
        f"  policy {decision.policy_version}, evaluated at {_when(decision.evaluated_at)}",
        "",
    ]
    lines.append("Deliveries" if decision.deliveries else "Deliveries: none")
    lines += [_delivery(d) for d in decision.deliveries]
    if decision.standby:
        lines.append("Standby (sent only if the channels before them in the fallback chain fail)")
        lines += [_delivery(d) for d in decision.standby]
    if decision.suppressed:
        lines.append("Suppressed")
        width = max(len(s.channel) for s in decision.suppressed)
        for s in decision.suppressed:
            folded = f" -> {s.digest}" if s.digest else ""
            lines.append(f"  {s.channel:<{width}}  {s.reason:<16} {s.detail}{folded}  [{s.rule}]")
    lines.append(f"Fallback: {' -> '.join(decision.fallback) if decision.fallback else 'none'}")
    lines.append(f"Estimated cost: ${decision.estimated_cost:.4f}")
    if trace and decision.trace:
        lines += ["", "Trace"]
        lines += [_step(s) for s in decision.trace]
    return "\n".join(lines)


def _when(value: dt.datetime | None) -> str:
    return "now" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _delivery(d: Delivery) -> str:
    when = "now" if d.send_at is None else f"{_when(d.send_at)} ({d.deferred})"
    recipients = f"{d.recipients} recipient{'s' if d.recipients != 1 else ''}"
    batch = f", batch {d.batch.key} {d.batch.size}/{d.batch.max_size}" if d.batch else ""
    return (
        f"  {d.channel:<7} {when:<38} queue {d.queue:<9} {d.template:<34} "
        f"{' -> '.join(d.providers):<16} {recipients}, ${d.estimated_cost:.4f}{batch}"
    )


def _step(step: TraceStep) -> str:
    where = f"{step.file}:{step.line}" if step.file else "-"
    subject = f"{step.step} {step.rule or ''}".strip()
    channel = f" [{step.channel}]" if step.channel else ""
    expr = f"  {step.expr}" if step.expr else ""
    detail = f"  ({step.detail})" if step.detail else ""
    return f"  {where:<34} {subject}{channel}{expr} = {_value(step.value)}{detail}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dt.datetime):
        return _when(value)
    if isinstance(value, dict) and "error" in value:
        return f"error: {value['error']}"
    return str(value)
