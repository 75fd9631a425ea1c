"""Schedules over the API: recurring ones listed, paused and resumed; one-off ones listed and cancelled.

- `GET /v1/schedules`, `GET /v1/schedules/{name}`: each policy schedule with its next
  occurrence (UTC) in every zone users are in, whether it is paused, and its last runs.
- `POST /v1/schedules/{name}/pause` and `/resume` (admin): hold a schedule off without a
  deploy; stored in the database, read by every scheduler before each page of users.
- `GET /v1/scheduled`: notifications with deliveries still waiting for their send time.
- `POST /v1/notifications/{id}/cancel`: cancel what has not been sent. A producer's key
  may cancel only the notifications it created (another's is a 404, as on reads).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from gateway.api.auth import admin_only
from gateway.api.openapi import ADMIN, BODY, KEYED, PARAMS, Cursor, NotificationId, errors
from gateway.api.paging import id_cursor
from gateway.cron import next_occurrence
from gateway.errors import NotFound
from gateway.model import NotificationStatus, zone
from gateway.policy.compiled import Schedule
from gateway.services import Services
from gateway.store.cancel import CancelStore
from gateway.store.keys import ApiKey
from gateway.store.schedules import Run, ScheduleState, ScheduleStore

Keyed = Request[ApiKey, ApiKey, Any]
MAX_ZONES = 100  # zones shown per schedule; the rest are counted


class ZoneNext(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str
    next_at: dt.datetime | None  # UTC
    next_local: str | None  # the local time with its offset (the idempotency keys' form)


class ScheduleRun(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str
    occurrence: dt.datetime
    local: str
    status: str  # running, done, missed, paused
    users: int
    fired: int
    failed: int
    detail: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    category: str
    description: str
    cron: str
    event: str
    priority: str
    segment: str
    misfire_seconds: float
    data: dict[str, Any]
    file: str
    line: int
    paused: bool
    paused_by: str | None
    state_changed_at: dt.datetime | None
    zones: list[ZoneNext]
    more_zones: int
    last_runs: list[ScheduleRun]


class ScheduleList(msgspec.Struct, frozen=True, kw_only=True):
    schedules: list[ScheduleInfo]


class WaitingNotification(msgspec.Struct, frozen=True, kw_only=True):
    notification_id: str
    event: str
    user_id: str
    created_at: dt.datetime
    next_send_at: dt.datetime | None
    waiting_deliveries: int


class ScheduledPage(msgspec.Struct, frozen=True, kw_only=True):
    notifications: list[WaitingNotification]
    next_cursor: str | None


class Cancellation(msgspec.Struct, frozen=True, kw_only=True):
    notification_id: str
    cancelled: list[str]  # delivery ids this call cancelled; empty on a repeat
    notification: NotificationStatus


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


def _run(run: Run) -> ScheduleRun:
    """The stored run as the API shows it (its id, schedule and page cursor stay inside)."""
    return msgspec.convert(run, ScheduleRun, from_attributes=True)


ScheduleName = Annotated[str, PathParameter(description="The schedule's name in the policy")]


def schedule_router(services: Services) -> Router:
    store = ScheduleStore(services.database)
    cancels = CancelStore(services.database)

    def find(name: str) -> Schedule:
        schedule = next((s for s in services.policy.schedules if s.name == name), None)
        if schedule is None:
            known = ", ".join(s.name for s in services.policy.schedules) or "none"
            raise NotFound(f"no schedule {name!r} in the policy (schedules: {known})", field="name")
        return schedule

    async def describe(
        schedule: Schedule, state: ScheduleState | None, zones: list[str], now: dt.datetime
    ) -> ScheduleInfo:
        shown = []
        for tz_name in zones[:MAX_ZONES]:
            upcoming = next_occurrence(schedule.cron, zone(tz_name), now)
            shown.append(
                ZoneNext(
                    timezone=tz_name,
                    next_at=upcoming.at if upcoming else None,
                    next_local=upcoming.key if upcoming else None,
                )
            )
        return ScheduleInfo(
            name=schedule.name,
            category=schedule.category,
            description=schedule.description,
            cron=schedule.cron,
            event=schedule.event,
            priority=schedule.priority,
            segment=schedule.segment.source,
            misfire_seconds=schedule.misfire.total_seconds(),
            data=dict(schedule.data),
            file=schedule.origin.file,
            line=schedule.origin.line,
            paused=state is not None and state.paused,
            paused_by=state.changed_by if state else None,
            state_changed_at=state.changed_at if state else None,
            zones=shown,
            more_zones=max(0, len(zones) - MAX_ZONES),
            last_runs=[_run(r) for r in await store.recent(schedule.name)],
        )

    async def zones() -> list[str]:
        return await store.zones(services.policy.defaults.timezone) or [services.policy.defaults.timezone]

    @get(
        "/schedules",
        summary="The policy's recurring schedules: next occurrence per zone, paused, last runs",
        description=f"Each schedule of the policy with its next occurrence in up to {MAX_ZONES} of "
        "the recipients' zones, whether it is paused and by whom, and its latest runs.",
        responses=errors(KEYED),
    )
    async def list_schedules() -> ScheduleList:
        states, present, now = await store.states(), await zones(), services.clock()
        return ScheduleList(
            schedules=[await describe(s, states.get(s.name), present, now) for s in services.policy.schedules]
        )

    @get(
        "/schedules/{name:str}",
        summary="One recurring schedule",
        description="As in the list; 404 for a name the policy does not have.",
        responses=errors(KEYED, PARAMS, 404),
    )
    async def get_schedule(name: ScheduleName) -> ScheduleInfo:
        schedule = find(name)
        states = await store.states()
        return await describe(schedule, states.get(name), await zones(), services.clock())

    async def set_paused(name: str, request: Keyed, paused: bool) -> ScheduleInfo:
        schedule = find(name)
        now = services.clock()
        state = await store.set_paused(name, paused, request.user.name, now)
        return await describe(schedule, state, await zones(), now)

    @post(
        "/schedules/{name:str}/pause",
        status_code=200,
        summary="Hold a schedule off (admin)",
        guards=[admin_only],
        description="A paused schedule fires nowhere until resumed; occurrences missed meanwhile "
        "are not caught up beyond the schedule's misfire window.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def pause(name: ScheduleName, request: Keyed) -> ScheduleInfo:
        return await set_paused(name, request, True)

    @post(
        "/schedules/{name:str}/resume",
        status_code=200,
        summary="Let a paused schedule fire again (admin)",
        guards=[admin_only],
        description="Resuming a schedule that is not paused changes nothing.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def resume(name: ScheduleName, request: Keyed) -> ScheduleInfo:
        return await set_paused(name, request, False)

    @get(
        "/scheduled",
        summary="Notifications with deliveries still waiting for their send time",
        description="Soonest first, a page at a time: deliveries held by `send_at`, quiet hours or "
        "a batch window. A key sees its own notifications (an admin key, all).",
        responses=errors(KEYED, PARAMS),
    )
    async def scheduled(
        request: Keyed,
        user_id: Annotated[str | None, QueryParameter(description="Only this recipient's")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Notifications per page")] = 50,
        cursor: Cursor = None,
    ) -> ScheduledPage:
        key = request.user
        page, next_cursor = await cancels.waiting(
            services.clock(),
            user_id=user_id,
            producer=None if key.admin else key.name,
            limit=limit,
            cursor=id_cursor(cursor, "n"),
        )
        return ScheduledPage(
            notifications=[
                WaitingNotification(
                    notification_id=w.notification_id,
                    event=w.event,
                    user_id=w.user_id,
                    created_at=w.created_at,
                    next_send_at=w.next_send_at,
                    waiting_deliveries=w.deliveries,
                )
                for w in page
            ],
            next_cursor=next_cursor,
        )

    @post(
        "/notifications/{notification_id:str}/cancel",
        status_code=200,
        summary="Cancel a notification's deliveries that have not been sent (idempotent)",
        description="Deliveries still waiting (scheduled, pending, retrying) become `cancelled`; "
        "those sent or under way are left as they are. The body's `reason` is optional. A key may "
        "cancel only its own notifications (another's is a 404).",
        responses=errors(KEYED, BODY, 404),
    )
    async def cancel(
        notification_id: NotificationId, request: Keyed, data: JSONBody[CancelRequest | None] = None
    ) -> Cancellation:
        key = request.user
        producer = await services.deliveries.producer_of(notification_id)
        if producer is None or not (key.admin or producer == key.name):
            raise NotFound(f"no notification {notification_id!r}", field="notification_id")
        reason = (data.reason if data else None) or f"cancelled by {key.name}"
        cancelled = await cancels.cancel(notification_id, reason, services.clock())
        status = await services.deliveries.status(notification_id)
        if status is None:  # deleted between the two reads
            raise NotFound(f"no notification {notification_id!r}", field="notification_id")
        return Cancellation(notification_id=notification_id, cancelled=cancelled, notification=status)

    return Router(
        path="/v1",
        tags=["schedules"],
        route_handlers=[list_schedules, get_schedule, pause, resume, scheduled, cancel],
    )
