"""Delivery tracking over HTTP: provider webhooks and one-click unsubscribe.

None of these routes takes an API key (`gateway/api/auth.py` excludes them): a provider or a
mail client calls them. The webhooks are authenticated by the provider's signature, checked
before anything is read; the unsubscribe links by their own HMAC. A bad signature is 401
`bad_signature` and a WARNING naming the route and the reason (never the body, a key or an
address); a webhook whose key is not configured is 503 `webhook_not_configured`, naming the
variable to set. See docs/tracking.md.
"""

from __future__ import annotations

import html
import logging
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import PathParameter

from gateway.api.auth import PUBLIC
from gateway.api.openapi import BODY, PARAMS, errors, raw_body
from gateway.errors import ClientError, Unauthorized, Unavailable
from gateway.metrics import WEBHOOK_EVENTS_SKIPPED
from gateway.redact import redact
from gateway.services import Services
from gateway.store.prices import PriceStore
from gateway.tracking import inbound_sms, sendgrid, twilio, unsubscribe
from gateway.tracking.events import EventRecorder, Recorded
from gateway.tracking.twilio_price import TwilioPrices

log = logging.getLogger("gateway.api.tracking")


class WebhookAnswer(msgspec.Struct, frozen=True):
    stored: int
    duplicates: int
    unmatched: int
    marked: int
    opted_out: int
    resent: int
    skipped: int = 0  # records that could not be read (logged, counted), the rest stored


class Unsubscribed(msgspec.Struct, frozen=True):
    unsubscribed: bool
    category: str
    channel: str
    changed: bool  # False when the category was already off (or the user is gone)


UnsubscribeToken = Annotated[str, PathParameter(description="The signed token of the unsubscribe link")]


def _answer(done: Recorded, skipped: int = 0) -> WebhookAnswer:
    return WebhookAnswer(
        done.stored, done.duplicates, done.unmatched, done.marked, done.opted_out, done.resent, skipped
    )


def _not_configured(variable: str, what: str) -> Unavailable:
    return Unavailable(
        f"{what} is not configured: set {variable} on the API processes", code="webhook_not_configured"
    )


def _refused(request: Request[Any, Any, Any], reason: str) -> Unauthorized:
    client = request.client.host if request.client else "unknown"
    log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, reason)
    return Unauthorized(reason, code="bad_signature")


def tracking_router(services: Services) -> Router:
    settings = services.settings
    recorder = EventRecorder(
        services.database,
        services.recipients,
        services.current_policy,
        services.clock,
        dispatch=services.dispatcher.dispatch,
    )
    token = settings.twilio_auth_token
    prices = TwilioPrices(PriceStore(services.database), token, settings.twilio_base_url) if token else None

    @post(
        "/webhooks/sendgrid",
        summary="SendGrid's Signed Event Webhook",
        description="SendGrid's JSON array of events, signed with its ECDSA key (the "
        "`X-Twilio-Email-Event-Webhook-Signature` and `-Timestamp` headers; no API key). Each event "
        "is stored once; bounces and spam reports retire the address. 503 until "
        "`NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY` is set.",
        status_code=200,
        security=[],
        responses=errors(BODY, 401, 503),
        operation_class=raw_body(
            "application/json",
            Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
            "SendGrid's events, as it posts them (`event`, `sg_message_id`, `email`, `timestamp`, ...)",
        ),
    )
    async def sendgrid_events(request: Request[Any, Any, Any]) -> WebhookAnswer:
        key = settings.sendgrid_webhook_public_key
        if not key:
            raise _not_configured("NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY", "the SendGrid event webhook")
        body = await request.body()
        try:
            sendgrid.verify(
                key,
                body,
                request.headers.get(sendgrid.SIGNATURE_HEADER),
                request.headers.get(sendgrid.TIMESTAMP_HEADER),
                services.clock(),
            )
        except sendgrid.SignatureError as exc:
            raise _refused(request, str(exc)) from None
        try:
            parsed = sendgrid.parse(body)
        except sendgrid.PayloadError as exc:
            raise ClientError(str(exc), code="invalid_payload") from None
        if parsed.skipped:
            WEBHOOK_EVENTS_SKIPPED.labels(provider=sendgrid.PROVIDER).inc(len(parsed.skipped))
            log.warning(
                "skipped %d SendGrid event(s) that cannot be read: %s",
                len(parsed.skipped),
                "; ".join(parsed.skipped),
            )
        return _answer(await recorder.record(parsed.events), len(parsed.skipped))

    async def twilio_form(request: Request[Any, Any, Any], what: str) -> dict[str, str]:
        """The form Twilio posted, once its signature is checked against our public URL."""
        token = settings.twilio_auth_token
        if token is None or not token:
            raise _not_configured("TWILIO_AUTH_TOKEN", what)
        form = {k: str(v) for k, v in (await request.form()).items()}
        query = request.scope.get("query_string", b"").decode()
        url = settings.public_base() + request.url.path + (f"?{query}" if query else "")
        try:
            twilio.verify(token, url, form, request.headers.get(twilio.SIGNATURE_HEADER))
        except twilio.SignatureError as exc:
            raise _refused(request, str(exc)) from None
        return form

    @post(
        twilio.PATH.removeprefix("/v1"),
        summary="Twilio's message status callback",
        description="Twilio's form-encoded `MessageStatus` callback, signed with the account's "
        "Auth Token (`X-Twilio-Signature`, checked against `NOTIGATE_PUBLIC_URL`; no API key). "
        "503 until `TWILIO_AUTH_TOKEN` is set.",
        status_code=200,
        security=[],
        responses=errors(BODY, 401, 503),
        operation_class=raw_body(
            "application/x-www-form-urlencoded",
            Schema(type=OpenAPIType.OBJECT, additional_properties=Schema(type=OpenAPIType.STRING)),
            "Twilio's status callback form (`MessageSid`, `MessageStatus`, `ErrorCode`, ...)",
        ),
    )
    async def twilio_status(request: Request[Any, Any, Any]) -> WebhookAnswer:
        form = await twilio_form(request, "the Twilio status callback")
        try:
            event = twilio.parse(form, services.clock())
        except twilio.PayloadError as exc:
            raise ClientError(str(exc), code="invalid_payload") from None
        answer = _answer(await recorder.record([event] if event else []))
        if prices is not None:  # Twilio prices an SMS once sent: read it now (twilio_price.py)
            await prices.settle(form)
        return answer

    @post(
        inbound_sms.PATH.removeprefix("/v1"),
        summary="Twilio's incoming message webhook: STOP, START and HELP",
        description="The texts people send to our Twilio number, signed like the status callback "
        "(`X-Twilio-Signature`; no API key). STOP turns SMS off for that phone, START back on; "
        "answered in TwiML (HELP with `NOTIGATE_SMS_HELP_TEXT`). 503 until `TWILIO_AUTH_TOKEN` is set.",
        status_code=200,
        media_type=MediaType.XML,
        security=[],
        responses=errors(BODY, 401, 503),
        operation_class=raw_body(
            "application/x-www-form-urlencoded",
            Schema(type=OpenAPIType.OBJECT, additional_properties=Schema(type=OpenAPIType.STRING)),
            "Twilio's incoming message form (`MessageSid`, `From`, `Body`, `OptOutType`, ...)",
        ),
    )
    async def twilio_inbound(request: Request[Any, Any, Any]) -> Response[str]:
        form = await twilio_form(request, "the Twilio incoming message webhook")
        try:
            sms = inbound_sms.parse(form)
        except inbound_sms.PayloadError as exc:
            raise ClientError(str(exc), code="invalid_payload") from None
        if sms.keyword in ("stop", "start"):
            changed = await services.recipients.set_sms_opt_out(
                sms.phone, sms.keyword == "stop", f"texted {sms.keyword.upper()}", services.clock()
            )
            log.info("%s texted %s: %d contacts changed", redact("phone", sms.phone), sms.keyword, changed)
        return Response(inbound_sms.answer(sms.keyword, settings.sms_help_text), media_type=MediaType.XML)

    @get(
        "/unsubscribe/{token:str}",
        summary="The page an unsubscribe link opens: a button, never an unsubscribe by itself",
        description="An HTML page with one button that POSTs the one-click form: a GET never "
        "unsubscribes, as mail scanners follow every link. A link that is not ours is a 404.",
        media_type=MediaType.HTML,
        security=[],
        responses=errors(PARAMS, 404, 503),
    )
    async def unsubscribe_page(token: UnsubscribeToken) -> Response[str]:
        # A GET never unsubscribes: mail scanners and link previews follow every link.
        _, category = unsubscribe.verify(settings.unsubscribe_secret, token)
        name = html.escape(category)
        page = (
            "<!doctype html><html><head><meta charset=utf-8><title>Unsubscribe</title></head><body>"
            f"<p>Stop receiving <strong>{name}</strong> emails?</p>"
            f'<form method="post" action="{html.escape(unsubscribe.PATH + token)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            "<button type=submit>Unsubscribe</button></form></body></html>"
        )
        return Response(page, media_type=MediaType.HTML, headers={"Cache-Control": "no-store"})

    @post(
        "/unsubscribe/{token:str}",
        summary="RFC 8058 one-click unsubscribe",
        description="The form body `List-Unsubscribe=One-Click` turns the link's category off for "
        "the link's user (email); repeated clicks change nothing more. An HTML page for a browser "
        "(`Accept: text/html`), JSON otherwise.",
        status_code=200,
        security=[],
        responses=errors(BODY, 404, 503),
        operation_class=raw_body(
            "application/x-www-form-urlencoded",
            Schema(
                type=OpenAPIType.OBJECT,
                properties={"List-Unsubscribe": Schema(type=OpenAPIType.STRING, const="One-Click")},
                required=["List-Unsubscribe"],
            ),
            "RFC 8058's one-click form, as mail clients post it",
        ),
    )
    async def unsubscribe_now(token: UnsubscribeToken, request: Request[Any, Any, Any]) -> Response[Any]:
        user_id, category = unsubscribe.verify(settings.unsubscribe_secret, token)
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            raise ClientError(
                f"the body must be `{unsubscribe.ONE_CLICK}` (RFC 8058)",
                field="List-Unsubscribe",
                code="not_one_click",
            )
        changed = await unsubscribe.opt_out(services.recipients, services.current_policy(), user_id, category)
        if changed:  # a repeated click (or a client retrying the POST) records nothing more
            await recorder.record_unsubscribe(user_id, category)
        if "text/html" in request.headers.get("accept", ""):
            page = (
                "<!doctype html><html><head><meta charset=utf-8><title>Unsubscribed</title></head><body>"
                f"<p>You will no longer receive {html.escape(category)} emails.</p></body></html>"
            )
            return Response(page, media_type=MediaType.HTML)
        return Response(Unsubscribed(unsubscribed=True, category=category, channel="email", changed=changed))

    return Router(
        path="/v1",
        tags=["tracking"],
        route_handlers=[sendgrid_events, twilio_status, twilio_inbound, unsubscribe_page, unsubscribe_now],
        opt=PUBLIC,  # each handler checks its signature
    )
