"""What an intent's messages would say, per channel, without sending anything.

The preview renders exactly what a worker would: the decision picks the channels and their
templates (including standby channels of the fallback chain), then each is rendered with the
same catalog, locale chain and context. A message that cannot render is the caller's data
missing a variable the template needs: a 422 naming the template and the variable.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import ClientError
from gateway.model import Decision, Delivery, Intent, UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.templating.catalog import CompiledTemplate, RenderError, context
from gateway.templating.limits import push_payload_bytes, sms_length


class SmsInfo(msgspec.Struct, frozen=True, kw_only=True):
    encoding: str
    units: int
    segments: int


class PreviewMessage(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    template: str
    file: str
    locale: str | None  # the variant used: None is the default
    standby: bool  # sent only if the fallback chain reaches this channel
    fields: dict[str, Any]
    sms: SmsInfo | None = None
    payload_bytes: int | None = None  # push: the size FCM/APNs would count


class PreviewSuppression(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    reason: str
    detail: str


class Preview(msgspec.Struct, frozen=True, kw_only=True):
    policy_version: str
    event: str
    locale: str | None  # what was asked: the intent's locale, else the user's
    messages: list[PreviewMessage]
    suppressed: list[PreviewSuppression]


def render_messages(
    decision: Decision, intent: Intent, user: UserState, policy: CompiledPolicy
) -> list[tuple[Delivery, bool, CompiledTemplate, dict[str, Any]]]:
    """Render every message the decision may send (standby channels too), or raise a 422.

    Intake calls this before accepting an intent, so a producer whose data lacks a variable
    a template needs hears so at once rather than through a failed delivery later.
    """
    locale = intent.locale or user.locale
    ctx = context(intent.event, intent.data, locale=locale, user_id=user.user_id, timezone=user.timezone)
    rendered: list[tuple[Delivery, bool, CompiledTemplate, dict[str, Any]]] = []
    failures: list[str] = []
    planned = [(d, False) for d in decision.deliveries] + [(d, True) for d in decision.standby]
    for delivery, standby in planned:
        try:
            template, fields = policy.messages.render(delivery.template, locale, ctx)
            rendered.append((delivery, standby, template, fields))
        except RenderError as exc:
            failures.append(f"{delivery.channel}: {exc}")
    if failures:
        raise ClientError(
            "the intent's data cannot render its messages: " + "; ".join(failures),
            field="intent.data",
            code="template_error",
        )
    return rendered


def preview(decision: Decision, intent: Intent, user: UserState, policy: CompiledPolicy) -> Preview:
    messages = []
    for delivery, standby, template, fields in render_messages(decision, intent, user, policy):
        channel = template.channel
        sms = sms_length(fields.get("body", "")) if channel == "sms" else None
        messages.append(
            PreviewMessage(
                channel=delivery.channel,
                template=delivery.template,
                file=template.file,
                locale=template.locale,
                standby=standby,
                fields=fields,
                sms=SmsInfo(encoding=sms.encoding, units=sms.units, segments=sms.segments) if sms else None,
                payload_bytes=push_payload_bytes(fields) if channel == "push" else None,
            )
        )
    return Preview(
        policy_version=decision.policy_version,
        event=decision.event,
        locale=intent.locale or user.locale,
        messages=messages,
        suppressed=[
            PreviewSuppression(channel=s.channel, reason=s.reason, detail=s.detail)
            for s in decision.suppressed
        ],
    )
