"""Turn a claimed delivery into the message its channel sends, from the policy's templates.

The catalog travels with the compiled policy, so a worker renders with the templates of the
policy version it runs, compiled once when that version was loaded; rendering itself is pure
CPU (no file or network I/O on the send path).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.model import UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.providers.base import Message
from gateway.templating.catalog import context
from gateway.tracking import unsubscribe


class TemplateRenderer:
    def __init__(
        self, policy: Callable[[], CompiledPolicy], links: unsubscribe.UnsubscribeLinks | None = None
    ) -> None:
        self.policy = policy
        self.links = links  # List-Unsubscribe links for email (gateway/tracking/unsubscribe.py)

    def render(
        self,
        claimed: Any,
        notification: Any,
        user: UserState | None,
        batch: Sequence[Mapping[str, Any]] | None = None,
    ) -> Message:
        """The delivery's message; RenderError when its template is missing or cannot render.

        `batch` holds a grouped message's items (a digest's); `data` stays the delivery's own.
        """
        locale = notification.locale or (user.locale if user is not None else None)
        template, fields = self.policy().messages.render(
            claimed.template or f"{claimed.event}/{claimed.channel}",
            locale,
            context(
                claimed.event,
                notification.data or {},
                locale=locale,
                user_id=claimed.user_id,
                timezone=user.timezone if user is not None else None,
                notification_id=claimed.notification_id,
                batch=batch,
            ),
        )
        return Message(
            channel=claimed.channel,
            event=claimed.event,
            notification_id=claimed.notification_id,
            delivery_id=claimed.id,
            user_id=claimed.user_id,
            fields=fields,
            locale=template.locale,
            priority=notification.priority,
            category=notification.category,
            headers=unsubscribe.headers_for(self.links, self.policy(), claimed, notification),
            expires_at=claimed.expires_at,
            collapse_key=claimed.id,
        )
