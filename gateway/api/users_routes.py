"""Recipients: `/v1/users/{id}`, its preferences and its devices (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, Router, delete, get, post, put
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter

from gateway.api.auth import admin_only
from gateway.api.openapi import ADMIN, BODY, PARAMS, UserIdInPath, errors
from gateway.errors import ClientError, NotFound
from gateway.model import Device, Preference, UserState, token_problem
from gateway.services import Services
from gateway.webhook_urls import resolved_problem

DeviceToken = Annotated[str, PathParameter(description="The device's push token, as registered")]


def check_token(device: Device, field: str) -> None:
    problem = token_problem(device)
    if problem is not None:
        raise ClientError(problem, field=field, code="invalid_token")


def users_router(services: Services) -> Router:
    recipients = services.recipients

    async def existing(user_id: str) -> UserState:
        user = await recipients.get_user(user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", field="user_id", code="unknown_user")
        return user

    @put(
        "/{user_id:str}",
        summary="Create or replace a recipient (contacts, devices, preferences, quiet hours)",
        description="201 when the recipient is new, 200 when replaced; the body's `user_id` must be "
        "the path's (422 `user_mismatch`). Addresses a provider refused for good stay refused.",
        responses={
            201: ResponseSpec(data_container=UserState, description="A new recipient"),
            **errors(ADMIN, BODY),
        },
    )
    async def put_user(user_id: UserIdInPath, data: JSONBody[UserState]) -> Response[UserState]:
        if data.user_id != user_id:
            raise ClientError(
                f"the body's user_id {data.user_id!r} differs from the path's {user_id!r}",
                field="user_id",
                code="user_mismatch",
            )
        for i, device in enumerate(data.contacts.devices):
            check_token(device, f"contacts.devices[{i}].token")
        if data.contacts.webhook is not None:
            allowed = services.settings.webhook_allowed_networks
            problem = await resolved_problem(data.contacts.webhook, allowed)
            if problem is not None:
                raise ClientError(problem, field="contacts.webhook", code="unsafe_url")
        created = await recipients.put_user(data, services.clock())
        return Response(await existing(user_id), status_code=201 if created else 200)

    @get(
        "/{user_id:str}",
        summary="A recipient as the gateway knows it (unusable addresses left out)",
        description="Addresses that bounced, complained or were refused for good are left out.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def get_user(user_id: UserIdInPath) -> UserState:
        return await existing(user_id)

    @delete(
        "/{user_id:str}",
        summary="Forget a recipient",
        description="Removes the recipient's state: contacts, devices and preferences.",
        status_code=204,
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def delete_user(user_id: UserIdInPath) -> None:
        if not await recipients.delete_user(user_id):
            raise NotFound(f"no user {user_id!r}", field="user_id", code="unknown_user")

    @get(
        "/{user_id:str}/preferences",
        summary="A recipient's preferences, most specific row wins",
        description="Each row turns an event (exact or `prefix.*`) on a channel (or `*`) on or "
        "off, optionally with a frequency cap.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def get_preferences(user_id: UserIdInPath) -> list[Preference]:
        return (await existing(user_id)).preferences

    @put(
        "/{user_id:str}/preferences",
        summary="Replace a recipient's preferences",
        description="The list replaces every preference row of an existing recipient.",
        responses=errors(ADMIN, BODY, 404),
    )
    async def put_preferences(user_id: UserIdInPath, data: JSONBody[list[Preference]]) -> list[Preference]:
        if not await recipients.put_preferences(user_id, data):
            raise NotFound(f"no user {user_id!r}", field="user_id", code="unknown_user")
        return (await existing(user_id)).preferences

    @get(
        "/{user_id:str}/devices",
        summary="A recipient's push devices",
        description="Devices whose token a push provider refused for good are left out.",
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def get_devices(user_id: UserIdInPath) -> list[Device]:
        return (await existing(user_id)).contacts.devices

    @post(
        "/{user_id:str}/devices",
        summary="Register (or re-activate) a push device",
        description="201 when the device is new, 200 when it was known (a refused token is "
        "re-activated); the answer lists the recipient's devices.",
        status_code=201,
        responses={
            200: ResponseSpec(data_container=list[Device], description="A known device"),
            **errors(ADMIN, BODY, 404),
        },
    )
    async def add_device(user_id: UserIdInPath, data: JSONBody[Device]) -> Response[list[Device]]:
        check_token(data, "token")
        added = await recipients.add_device(user_id, data, services.clock())
        if added is None:
            raise NotFound(f"no user {user_id!r}", field="user_id", code="unknown_user")
        return Response((await existing(user_id)).contacts.devices, status_code=201 if added else 200)

    @delete(
        "/{user_id:str}/devices/{token:str}",
        summary="Remove a push device",
        description="404 names `token` when the recipient has no such device.",
        status_code=204,
        responses=errors(ADMIN, PARAMS, 404),
    )
    async def remove_device(user_id: UserIdInPath, token: DeviceToken) -> None:
        if not await recipients.remove_device(user_id, token):
            raise NotFound(
                f"user {user_id!r} has no device with that token", field="token", code="unknown_device"
            )

    return Router(
        path="/v1/users",
        tags=["recipients"],
        guards=[admin_only],
        route_handlers=[
            put_user,
            get_user,
            delete_user,
            get_preferences,
            put_preferences,
            get_devices,
            add_device,
            remove_device,
        ],
    )
