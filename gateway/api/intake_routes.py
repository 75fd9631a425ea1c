"""Intake: `POST /v1/intents` (one), `POST /v1/intents/bulk` (many), `GET /v1/notifications/{id}`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter

from gateway.api.auth import require_event
from gateway.api.openapi import BODY, KEYED, PARAMS, NotificationId, errors
from gateway.errors import ClientError, NotFound
from gateway.ids import new_id
from gateway.model import Accepted, BulkAccepted, BulkIntent, BulkStatus, Intent, NotificationStatus, to_json
from gateway.quota import QuotaSpec
from gateway.services import Services
from gateway.store.bulk_requests import NewBulk
from gateway.store.keys import ApiKey

BulkId = Annotated[
    str, PathParameter(description="A bulk request's id, as `POST /v1/intents/bulk` answered it")
]


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
        description="The policy decides channels, timing and providers; the notification, its "
        "deliveries and their queue jobs are stored in one commit before the 202. An "
        "`idempotency_key` seen from this key within the policy's window answers 200 with the "
        "first notification's id. Data a template cannot render is a 422 naming the template "
        "and variable. The key must be allowed the event (403), and its quota not spent (429); "
        "while deliveries are behind, `low` priority intents are answered 429 `overloaded`.",
        responses={
            200: ResponseSpec(
                data_container=Accepted,
                description="The idempotency key was seen: the first notification's id",
            ),
            **errors(KEYED, BODY, 403, 429),
        },
    )
    async def accept(data: JSONBody[Intent], request: Request[ApiKey, ApiKey, Any]) -> Response[Accepted]:
        key = request.user
        require_event(key, data.event)
        check_size(data.data, "data")
        if data.priority == "low":
            await services.admission.admit("low")
        # The quota is taken with the rest of the intent's micro-batch: one Redis round trip.
        result = await services.intake.accept(data, producer=key.name, quota=quota(key, 1))
        return Response(
            Accepted(notification_id=result.notification_id), status_code=200 if result.replay else 202
        )

    @post(
        "/intents/bulk",
        status_code=202,
        summary="One intent for many users (up to 10,000): stored at once, expanded by workers",
        description="Answers once the request is durable; workers then decide and store one "
        "notification per recipient against their own state, at the pace deliveries allow. With "
        "an `idempotency_key` the same request again answers 200 with the first bulk request's "
        "id. The whole list counts against the key's quota at once (429 when it does not fit), "
        "and while deliveries are behind, bulk requests are answered 429 `overloaded`. Progress: "
        "`GET /v1/intents/bulk/{bulk_id}`.",
        request_max_body_size=settings.max_bulk_bytes,
        responses={
            200: ResponseSpec(
                data_container=BulkAccepted,
                description="The idempotency key was seen: the first bulk request's id",
            ),
            **errors(KEYED, BODY, 403, 429),
        },
    )
    async def accept_bulk(
        data: JSONBody[BulkIntent], request: Request[ApiKey, ApiKey, Any]
    ) -> Response[BulkAccepted]:
        """Answers once the request is durable; workers then decide and store one notification
        per recipient (each with the idempotency key `<key>:<user_id>`, or
        `<length of key>:<key>/<user_id>` when the key holds a `:`; the bulk id stands in
        without a key), at the pace deliveries allow. Progress: `GET /v1/intents/bulk/{bulk_id}`.
        While deliveries are behind, bulk requests are answered 429 `overloaded`."""
        key = request.user
        require_event(key, data.event)
        check_size(data.data, "data")
        await services.admission.admit("bulk")
        user_ids = list(dict.fromkeys(data.user_ids))
        spec = quota(key, len(user_ids))
        if (wait := (await services.quota.take_many([spec]))[0]) > 0:
            raise spec.refusal(wait)
        await services.intake.probe(data.intents()[0])
        stored = msgspec.to_builtins(data)
        del stored["user_ids"]
        bulk_id, replay = await services.bulk.create(
            NewBulk(
                id=new_id("b"),
                producer=key.name,
                idempotency_key=data.idempotency_key,
                event=data.event,
                priority=data.priority,
                intent=stored,
                user_ids=user_ids,
            ),
            services.clock(),
        )
        return Response(
            BulkAccepted(bulk_id=bulk_id, recipients=len(user_ids), status_url=f"/v1/intents/bulk/{bulk_id}"),
            status_code=200 if replay else 202,
        )

    @get(
        "/intents/bulk/{bulk_id:str}",
        summary="A bulk request's progress: expanded, delivered, failed",
        description="How many recipients were expanded into notifications or refused, and their "
        "deliveries by status. A key sees only its own bulk requests (an admin key, all).",
        responses=errors(KEYED, PARAMS, 404),
    )
    async def bulk_status(bulk_id: BulkId, request: Request[ApiKey, ApiKey, Any]) -> BulkStatus:
        key = request.user
        progress = await services.bulk.progress(bulk_id)
        if progress is None or not (key.admin or progress.producer == key.name):
            raise NotFound(f"no bulk request {bulk_id!r}", field="bulk_id")
        return BulkStatus(
            bulk_id=progress.id,
            event=progress.event,
            priority=progress.priority,
            state=progress.state,  # type: ignore[arg-type]
            recipients=progress.recipients,
            expanded=progress.expanded,
            refused=progress.refused,
            first_refusal=progress.first_refusal,
            created_at=progress.created_at,
            expanded_at=progress.expanded_at,
            deliveries=progress.deliveries,
        )

    @get(
        "/notifications/{notification_id:str}",
        summary="A notification's deliveries and every attempt",
        description="Each delivery's status, provider and attempts. A key sees only the "
        "notifications it sent (an admin key sees all): another producer's is a 404.",
        responses=errors(KEYED, PARAMS, 404),
    )
    async def notification(
        notification_id: NotificationId, request: Request[ApiKey, ApiKey, Any]
    ) -> NotificationStatus:
        key = request.user
        status = await services.deliveries.status(notification_id)
        # Another producer's notification is as invisible as a missing one.
        if status is None or not (
            key.admin or await services.deliveries.producer_of(notification_id) == key.name
        ):
            raise NotFound(f"no notification {notification_id!r}", field="notification_id")
        return status

    return Router(
        path="/v1", route_handlers=[accept, accept_bulk, bulk_status, notification], tags=["intake"]
    )
