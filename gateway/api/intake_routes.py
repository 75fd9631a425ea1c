"""Intake: `POST /v1/intents` (one), `POST /v1/intents/bulk` (many), `GET /v1/notifications/{id}`."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from gateway.api.auth import require_event
from gateway.errors import ClientError, NotFound
from gateway.model import Accepted, BulkAccepted, BulkIntent, BulkItem, Intent, NotificationStatus, to_json
from gateway.quota import QuotaSpec
from gateway.services import Services
from gateway.store.keys import ApiKey

BULK_CHUNK = 500


def intake_router(services: Services) -> Router:
    settings = services.settings

    def quota(key: ApiKey, count: int) -> QuotaSpec:
        return QuotaSpec(key.id, key.rate, key.burst, count, name=key.name)

    def check_size(data: dict[str, Any], field: str) -> None:
        size = len(to_json(data))
        if size > settings.max_data_bytes:
            raise ClientError(
                f"`{field}` is {size} bytes encoded; the limit is {settings.max_data_bytes}",
                field=field,
                code="data_too_large",
            )

    @post(
        "/intents",
        status_code=202,
        summary="Accept an intent: decided, stored and queued before this answers",
        responses={
            200: ResponseSpec(
                data_container=Accepted,
                description="The idempotency key was seen: the first notification's id",
            )
        },
    )
    async def accept(data: JSONBody[Intent], request: Request[ApiKey, ApiKey, Any]) -> Response[Accepted]:
        key = request.user
        require_event(key, data.event)
        check_size(data.data, "data")
        # The quota is taken with the rest of the intent's micro-batch: one Redis round trip.
        result = await services.intake.accept(data, producer=key.name, quota=quota(key, 1))
        return Response(
            Accepted(notification_id=result.notification_id), status_code=200 if result.replay else 202
        )

    @post(
        "/intents/bulk",
        status_code=202,
        summary="One intent for many users (up to 10,000), stored in batches; one notification id each",
        request_max_body_size=settings.max_bulk_bytes,
    )
    async def accept_bulk(data: JSONBody[BulkIntent], request: Request[ApiKey, ApiKey, Any]) -> BulkAccepted:
        key = request.user
        require_event(key, data.event)
        check_size(data.data, "data")
        intents = data.intents()
        spec = quota(key, len(intents))
        if (wait := (await services.quota.take_many([spec]))[0]) > 0:
            raise spec.refusal(wait)
        items: list[BulkItem] = []
        for start in range(0, len(intents), BULK_CHUNK):
            for result in await services.intake.accept_many(
                intents[start : start + BULK_CHUNK], producer=key.name
            ):
                items.append(
                    BulkItem(
                        user_id=result.user_id,
                        notification_id=result.notification_id,
                        status="replayed" if result.replay else "accepted",
                    )
                )
        replayed = sum(1 for item in items if item.status == "replayed")
        return BulkAccepted(accepted=len(items) - replayed, replayed=replayed, notifications=items)

    @get("/notifications/{notification_id:str}", summary="A notification's deliveries and every attempt")
    async def notification(
        notification_id: FromPath[str], request: Request[ApiKey, ApiKey, Any]
    ) -> NotificationStatus:
        key = request.user
        status = await services.deliveries.status(notification_id)
        # Another producer's notification is as invisible as a missing one.
        if status is None or not (
            key.admin or await services.deliveries.producer_of(notification_id) == key.name
        ):
            raise NotFound(f"no notification {notification_id!r}", field="notification_id")
        return status

    return Router(path="/v1", route_handlers=[accept, accept_bulk, notification], tags=["intake"])
