"""SMS through Twilio Programmable Messaging, with the `twilio` SDK's asynchronous client.

One `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` per message: form-encoded `To`,
`From`, `Body`, `ValidityPeriod` (the seconds left of the tier's expiry, 1 to 36,000: Twilio
drops the message if it is still queued then) and `StatusCallback` (the `status_callback`
setting, else our tracking route under `NOTIGATE_PUBLIC_URL` when that is set; see
docs/tracking.md), Basic auth with the Account SID and Auth Token. The call runs on the
event loop (aiohttp, through `AsyncTwilioHttpClient` and `messages.create_async`), so no
thread is held per message.

Not `idempotent`: Twilio documents no idempotency key for creating a Message. The header
`I-Twilio-Idempotency-Token` is one Twilio *sends* on its own webhooks so that receivers can
drop its retries; the Messages API reads no such key, and the SDK's `create_async` takes no
headers to carry one. A repeat with the same delivery id is a second SMS, so a worker that
died mid-send records `outcome_unknown` instead of sending again.

Outcomes, from Twilio's REST error codes (the JSON body `{"code", "message", "more_info",
"status"}`; https://www.twilio.com/docs/api/errors/<code>). Twilio's `message` is never
copied into our errors: it quotes the phone number.

| Twilio answer                                             | result (failure class)                       |
|-----------------------------------------------------------|----------------------------------------------|
| 201 Created, a Message resource                           | delivered (message id: its `sid`, SM...;     |
|                                                           | `num_segments`, and `price` when given)      |
| 21211 invalid 'To' phone number                           | permanent `invalid_number`, address invalid  |
| 21614 'To' is not a valid mobile number                   | permanent `not_mobile`, address invalid      |
| 21635 'To' cannot be a landline                           | permanent `not_mobile`, address invalid      |
| 21610 the recipient replied STOP (unsubscribed)           | permanent `unsubscribed`, address invalid    |
| 21612 'To' not reachable from this sender (cannot route)  | permanent `unroutable` (address)             |
| 21617 body longer than 1,600 characters                   | permanent `body_too_long` (message)          |
| 20003 authentication failed (wrong SID or token), or an   | retryable `auth_failed` (configuration)      |
| HTTP 401 without a Twilio code                            |                                              |
| 21606 'From' is not a message-capable number of ours      | retryable `invalid_sender` (configuration)   |
| 21608 unverified 'To' on a trial account                  | retryable `unverified_recipient` (config.)   |
| 21408 sending to this region not enabled (geo permission) | retryable `region_disabled` (configuration)  |
| 20429 too many requests, or HTTP 429                      | retryable `rate_limited` (health), with      |
|                                                           | Retry-After                                  |
| HTTP 5xx (20500, 20503, ...)                              | retryable `http_<status>` (health)           |
| any other 4xx                                             | permanent `rejected` (message), naming       |
|                                                           | Twilio's code                                |
| connection refused, DNS, TLS                              | retryable `unreachable` (health)             |
| no answer within the spec's timeout                       | retryable `timeout` (health), *ambiguous*    |
| a 2xx that is no Message resource (not JSON, no `sid`),   | retryable `malformed_response` (health),     |
| an answer that is not HTTP, a connection dropped mid-answer| *ambiguous*                                 |

*Ambiguous*: Twilio may have created the Message, so it is not sent again (see
`gateway.providers.base`). A timeout is counted ambiguous whatever the phase: the SDK's
one deadline covers connecting and answering alike, and a connection that cannot be made
usually fails fast (`unreachable`) rather than by the deadline.

21610 marks the address although the number works (as `opted_out`, see
`gateway/delivery/pipeline.py`): Twilio refuses every later message to it until its owner
texts START, so later decisions should see `no_address` rather than pay for a refused
attempt each time; the START text (`gateway/tracking/inbound_sms.py`) makes it usable again.
Carrier errors (30001 to 30010) are not answers to this call: Twilio reports them on the
status callback, where the temporary ones send the message again (`gateway/tracking/twilio.py`).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from gateway.providers.base import (
    MALFORMED,
    TIMEOUT,
    UNREACHABLE,
    AdapterDeps,
    Address,
    Delivered,
    Limits,
    Message,
    Permanent,
    PermanentClass,
    Retryable,
    SendResult,
    retry_after_seconds,
)
from gateway.providers.settings import TWILIO_API, TwilioSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret

DEFAULT_BASE_URL = TWILIO_API


@dataclass(frozen=True, slots=True)
class TwilioError:
    code: str
    meaning: str
    address_invalid: bool = False
    failure: PermanentClass = "message"


@dataclass(frozen=True, slots=True)
class TwilioSetupError:
    """An error that says our account or sender is wrong: the next provider may do."""

    code: str
    meaning: str


# Twilio error code -> our permanent result (retryable codes are handled by status below).
PERMANENT_ERRORS: Mapping[int, TwilioError] = {
    21211: TwilioError("invalid_number", "the 'To' number is not a valid phone number", True),
    21614: TwilioError("not_mobile", "the 'To' number is not a mobile number", True),
    21635: TwilioError("not_mobile", "the 'To' number is a landline", True),
    21610: TwilioError("unsubscribed", "the recipient replied STOP; they must text START first", True),
    21612: TwilioError(
        "unroutable", "Twilio cannot route to this 'To' number from this sender", failure="address"
    ),
    21617: TwilioError("body_too_long", "the body is longer than Twilio's 1,600 characters"),
}
CONFIGURATION_ERRORS: Mapping[int, TwilioSetupError] = {
    20003: TwilioSetupError("auth_failed", "Twilio refused the Account SID or Auth Token"),
    21606: TwilioSetupError("invalid_sender", "settings.from is not a message-capable number of the account"),
    21608: TwilioSetupError("unverified_recipient", "a trial account may only text verified numbers"),
    21408: TwilioSetupError(
        "region_disabled", "sending to this region is not enabled in the geo permissions"
    ),
}
RATE_LIMITED = 20429
# ValidityPeriod's documented range is 1..36000 seconds (also Twilio's default).
MAX_VALIDITY = 36_000

# The SDK's HTTP client logs each request's URL (which holds the Account SID) and each
# response's headers at INFO, through the logger it is given. Ours is a logger of its own
# that drops every record, so no log level the app (or a test's caplog) sets can make it
# print the account; the app's other loggers, and the SDK's own `twilio.*` loggers, are left
# alone. Our results say what happened, so nothing is lost.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.addFilter(lambda record: False)

# The headers of the last answer the SDK received in this task: the SDK's exceptions carry
# the status and Twilio's code but not the headers, and a 429's Retry-After lives there.
_answer_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "twilio_answer_headers", default=None
)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's aiohttp client (a custom HTTP client is the SDK's documented extension point),
    with two changes: it keeps the answer's headers for `TwilioAdapter.send`, and it sends
    Basic auth as a header it builds itself, since aiohttp 3.14 deprecates the `BasicAuth`
    object the SDK would build (the bytes on the wire are the same)."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's HttpClient.request signature
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            headers = {**(headers or {}), "Authorization": _basic_auth(*auth)}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        _answer_headers.set(response.headers)
        return response


def status_callback_url(environ: Mapping[str, str]) -> str | None:
    """Where Twilio reports each message's status (`gateway/tracking/twilio.py`): our public
    URL's callback route, when `NOTIGATE_PUBLIC_URL` says where Twilio can reach us."""
    base = (environ.get("NOTIGATE_PUBLIC_URL") or "").rstrip("/")
    return f"{base}/v1/webhooks/twilio/status" if base else None


def _whole(created: Any) -> int | None:
    """The Message's `num_segments` (a string in Twilio's JSON), when readable."""
    try:
        return int(created.num_segments)
    except (AttributeError, TypeError, ValueError):
        return None


def price_of(message: Any) -> float | None:
    """The Message's `price` in USD, as a positive amount (Twilio writes charges negative, and
    usually only once the message is sent, so it is often null at creation)."""
    unit = getattr(message, "price_unit", None)
    try:
        price = abs(float(message.price))
    except (AttributeError, TypeError, ValueError):
        return None
    return price if unit in (None, "USD") else None


def sdk_client(account_sid: str, auth_token: str, base_url: str) -> tuple[Any, _HttpClient]:
    """The SDK's client on our HTTP client, its requests sent to `base_url`; built inside a
    running loop (aiohttp opens its session there). Close the HTTP client when done.

    Where requests go: the SDK has no client option for a host, but each API domain holds
    its root in the public `base_url` attribute that every URL is built from
    (`Domain.absolute_url`), the hook SignalWire's Twilio-compatible client sets too. That
    keeps the SDK's own paths, auth and parsing, where a custom HTTP client rewriting hosts
    (Twilio support's other suggestion) would have to parse URLs. Edge and region routing
    (TWILIO_EDGE/TWILIO_REGION, read from the process environment) would rewrite that host
    again, so it is off: a regional endpoint is chosen by giving its URL as base_url.
    """
    http = _HttpClient(pool_connections=True, logger=_sdk_log)
    client = Client(username=account_sid, password=auth_token, account_sid=account_sid, http_client=http)
    client.api.base_url = base_url
    client.edge = None
    client.region = None
    return client, http


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class TwilioAdapter:
    idempotent = False
    settings = TwilioSettings
    secrets = TwilioSettings.credentials
    limits = Limits(body_chars=1600)  # characters of `Body` Twilio accepts (21617 beyond)

    def __init__(
        self,
        name: str,
        channel: str,
        *,
        account_sid: Secret,
        auth_token: Secret,
        sender: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        status_callback: str | None = None,
    ) -> None:
        self.name = name
        self.channel = channel
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.status_callback = status_callback
        self._http: _HttpClient | None = None
        self._client: Any = None

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> TwilioAdapter:
        settings = spec.typed(TwilioSettings)
        return cls(
            spec.name,
            spec.channel,
            account_sid=spec.credential("account_sid"),
            auth_token=spec.credential("auth_token"),
            sender=settings.sender,
            base_url=settings.base_url,
            timeout=spec.timeout,
            status_callback=settings.status_callback or status_callback_url(spec.environ),
        )

    def _twilio(self) -> Any:
        """The SDK client, built on first use: aiohttp opens its session inside a running loop."""
        if self._client is None:
            self._client, self._http = sdk_client(
                self.account_sid.reveal(), self.auth_token.reveal(), self.base_url
            )
        return self._client

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        body = message.fields.get("body") or message.fields.get("text")
        if not body:
            return Permanent("no_body", f"{self.name}: the rendered message has neither `body` nor `text`")
        options: dict[str, Any] = {"to": address.value, "from_": self.sender, "body": str(body)}
        lifetime = message.lifetime()
        if lifetime is not None:
            # Twilio drops a message still queued after ValidityPeriod: an OTP is not sent late.
            options["validity_period"] = min(MAX_VALIDITY, max(1, math.ceil(lifetime)))
        if self.status_callback:
            options["status_callback"] = self.status_callback
        client = self._twilio()
        reset = _answer_headers.set(None)
        try:
            # The deadline is ours: AsyncTwilioHttpClient hands aiohttp only the per-call
            # timeout, which the SDK leaves None, and None means no limit at all there.
            async with asyncio.timeout(self.timeout):
                created = await client.messages.create_async(**options)
        except TimeoutError:
            return Retryable(
                f"{self.name}: no answer from Twilio within {self.timeout:g}s", code=TIMEOUT, ambiguous=True
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._refused(exc, _answer_headers.get())
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # The SDK reading a 2xx that is not a Message resource: not JSON (JSONDecodeError),
            # or JSON that is not an object (it calls `.get` on whatever it parsed).
            return Retryable(
                f"{self.name}: Twilio's answer is not a Message resource ({type(exc).__name__})",
                code=MALFORMED,
                ambiguous=True,
            )
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: the request never left
            return Retryable(
                f"{self.name}: cannot connect to Twilio ({type(exc).__name__})", code=UNREACHABLE
            )
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientResponseError,
            aiohttp.ClientPayloadError,
        ) as exc:
            return Retryable(
                f"{self.name}: Twilio's answer is not valid HTTP ({type(exc).__name__})",
                code=MALFORMED,
                ambiguous=True,
            )
        except aiohttp.ClientError as exc:
            return Retryable(
                f"{self.name}: the connection to Twilio failed ({type(exc).__name__})", code=UNREACHABLE
            )
        finally:
            _answer_headers.reset(reset)
        sid = getattr(created, "sid", None)
        if not isinstance(sid, str) or not sid:
            return Retryable(
                f"{self.name}: Twilio's answer is not a Message resource (no sid)",
                code=MALFORMED,
                ambiguous=True,
            )
        return Delivered(provider_message_id=sid, segments=_whole(created), price=price_of(created))

    def _refused(
        self, exc: TwilioRestException | TwilioServiceException, headers: Mapping[str, str] | None
    ) -> SendResult:
        status = int(exc.status)
        # Without a Twilio error body the SDK puts the HTTP status in `code`: that is no Twilio code.
        code = exc.code if isinstance(exc.code, int) and exc.code != status else None
        reference = f"error {code}" if code is not None else "no Twilio error code"
        if code == RATE_LIMITED or status == 429:
            retry_after = retry_after_seconds(headers.get("Retry-After") if headers is not None else None)
            return Retryable(
                f"{self.name}: Twilio says too many requests (429)", retry_after, code="rate_limited"
            )
        if status >= 500:
            return Retryable(
                f"{self.name}: Twilio failed with HTTP {status} ({reference})", code=f"http_{status}"
            )
        setup = CONFIGURATION_ERRORS.get(code) if code is not None else None
        if setup is None and code is None and status == 401:
            setup = CONFIGURATION_ERRORS[20003]
        if setup is not None:
            return Retryable(
                f"{self.name}: Twilio {reference}: {setup.meaning}", code=setup.code, failure="configuration"
            )
        known = PERMANENT_ERRORS.get(code) if code is not None else None
        if known is not None:
            return Permanent(
                known.code,
                f"{self.name}: Twilio error {code}: {known.meaning}",
                address_invalid=known.address_invalid,
                failure=known.failure,
            )
        more = f", see https://www.twilio.com/docs/api/errors/{code}" if code is not None else ""
        return Permanent(
            "rejected", f"{self.name}: Twilio refused the message with HTTP {status} ({reference}{more})"
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None
