"""The activity view's reads: a user's recent notifications and a notification's timeline.

- `GET /v1/users/{user_id}/notifications`: newest first, keyset pages. An admin key sees
  every producer's; any other key only the notifications it sent itself, as on
  `GET /v1/notifications/{id}`.
- `GET /v1/notifications/{id}/timeline`: each delivery's story in time order (accepted,
  scheduled, attempts per provider, provider events, dead letter and replay), built by
  `gateway.timeline` from the same status the notification route answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, get
from litestar.params import PathParameter, QueryParameter

from gateway.api.openapi import KEYED, PARAMS, Cursor, NotificationId, errors
from gateway.api.paging import id_cursor
from gateway.errors import NotFound
from gateway.model import UserId
from gateway.services import Services
from gateway.store import activity
from gateway.store.keys import ApiKey
from gateway.timeline import NotificationTimeline, timeline

Keyed = Request[ApiKey, Any, Any]


def activity_router(services: Services) -> Router:
    @get(
        "/users/{user_id:str}/notifications",
        summary="A user's recent notifications, newest first",
        description="A page at a time. An admin key sees every producer's; any other key only "
        "the notifications it sent itself.",
        responses=errors(KEYED, PARAMS),
    )
    async def recent(
        user_id: Annotated[UserId, PathParameter(description="The recipient's id")],
        request: Keyed,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="Notifications per page")] = 50,
        cursor: Cursor = None,
    ) -> activity.NotificationPage:
        key = request.user
        return await activity.recent_for_user(
            services.database,
            user_id,
            limit=limit,
            cursor=id_cursor(cursor, "n"),
            producer=None if key.admin else key.name,
        )

    @get(
        "/notifications/{notification_id:str}/timeline",
        summary="Each delivery's story: accepted, scheduled, attempts, provider events, dead letter",
        description="The same notification `GET /v1/notifications/{id}` answers, told in time "
        "order per delivery. Another producer's notification is a 404.",
        responses=errors(KEYED, PARAMS, 404),
    )
    async def notification_timeline(notification_id: NotificationId, request: Keyed) -> NotificationTimeline:
        key = request.user
        status = await services.deliveries.status(notification_id)
        if status is None or not (
            key.admin or await services.deliveries.producer_of(notification_id) == key.name
        ):
            raise NotFound(f"no notification {notification_id!r}", field="notification_id")
        return timeline(status, await activity.dead_letters_of(services.database, notification_id))

    return Router(path="/v1", route_handlers=[recent, notification_timeline], tags=["activity"])
