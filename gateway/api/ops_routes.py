"""Operations: dead letters, listed and replayed (admin keys only)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, Router, get, post
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from gateway.api.auth import admin_only
from gateway.api.openapi import ADMIN, PARAMS, Cursor, errors
from gateway.api.paging import id_cursor
from gateway.errors import NotFound
from gateway.model import DeadLetter, DeadLetterPage
from gateway.services import Services

DeadLetterId = Annotated[str, PathParameter(description="A dead letter's id, from the list")]


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    dead_letter: DeadLetter
    delivery_id: str


def ops_router(services: Services) -> Router:
    store = services.deliveries

    @get(
        "/dead-letters",
        summary="Deliveries that ran out of retries, newest first",
        description="Admin keys only; each letter names its delivery, channel, last error and "
        "whether it was replayed.",
        responses=errors(ADMIN, PARAMS),
    )
    async def list_dead_letters(
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Letters per page")] = 50,
        cursor: Cursor = None,
        include_replayed: Annotated[
            bool, QueryParameter(description="Also list letters already replayed")
        ] = False,
    ) -> DeadLetterPage:
        return await store.dead_letters(limit, id_cursor(cursor, "dl"), include_replayed)

    @get(
        "/dead-letters/{dead_letter_id:str}",
        summary="One dead letter",
        description="Admin keys only.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def get_dead_letter(dead_letter_id: DeadLetterId) -> DeadLetter:
        letter = await store.dead_letter(dead_letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {dead_letter_id!r}", field="dead_letter_id")
        return letter

    @post(
        "/dead-letters/{dead_letter_id:str}/replay",
        status_code=202,
        summary="Send a dead-lettered delivery again, with a fresh retry budget",
        description="Admin keys only. 202 with the new delivery's id; a letter already replayed "
        "answers 200 with the delivery that replay made, and sends nothing again.",
        responses={
            200: ResponseSpec(data_container=Replayed, description="Already replayed: that delivery"),
            **errors(ADMIN, PARAMS, 404),
        },
    )
    async def replay(dead_letter_id: DeadLetterId) -> Response[Replayed]:
        replayed = await store.replay(dead_letter_id, services.clock())
        if replayed is None:
            letter = await store.dead_letter(dead_letter_id)
            if letter is None:
                raise NotFound(f"no dead letter {dead_letter_id!r}", field="dead_letter_id")
            return Response(
                Replayed(dead_letter=letter, delivery_id=letter.replay_delivery_id or ""), status_code=200
            )
        letter, job = replayed
        services.dispatcher.dispatch([job])
        return Response(Replayed(dead_letter=letter, delivery_id=job.deliveries[0]), status_code=202)

    return Router(
        path="/v1",
        tags=["operations"],
        guards=[admin_only],
        route_handlers=[list_dead_letters, get_dead_letter, replay],
    )
