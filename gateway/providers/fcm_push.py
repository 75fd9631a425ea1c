"""Push through Firebase Cloud Messaging (firebase-admin, FCM HTTP v1): Android, iOS and web.

One device per `send()` (the pipeline fans out per device), through the SDK's async path,
`messaging.send_each_async`. A device address is an FCM registration token, or a Firebase
installation ID (FID) from apps that opted in to FID registration: 22 characters of
base64url starting with c-f, sent as `message.fid` instead of `message.token`. Each adapter
has its own named firebase_admin App, deleted in `close()`, so several adapters (and tests)
can coexist in one process.

The message carries the notification (`title`, `body` of the rendered fields), the
template's `data` with every value as a string (FCM's data map holds strings only), and our
`notigate_delivery_id` / `notigate_notification_id`, so the app can report opens. An urgent
message (`message.priority == "urgent"`) asks for Android priority `high`, APNs priority 10
and web push urgency `high`; otherwise FCM's own defaults apply (notification messages are
already high priority). The tier's remaining expiry and the delivery's collapse key go to
each platform (`_platform_options`).

FCM has no idempotency key: a repeat of the same request delivers twice, so `idempotent` is
False and the delivery id only travels in `data`.

Outcomes, by FCM v1's documented `ErrorCode` (the `FcmError` detail of Google's error body),
else by the Google API `status`:

| FCM answer                                       | result (failure class)                        |
|--------------------------------------------------|-----------------------------------------------|
| 200 with `name`                                  | delivered (message id: the `name`)            |
| UNREGISTERED (404)                               | permanent `unregistered`, address invalid     |
| INVALID_ARGUMENT (400) about the token           | permanent `invalid_token`, address invalid    |
| INVALID_ARGUMENT (400) about the payload         | permanent `invalid_argument` (message)        |
| SENDER_ID_MISMATCH (403)                         | permanent `sender_id_mismatch`, address inv.  |
| THIRD_PARTY_AUTH_ERROR (401; APNs/web push cert) | retryable `third_party_auth` (configuration)  |
| PERMISSION_DENIED (403), NOT_FOUND (404) project | retryable `permission_denied`, `not_found`    |
|                                                  | (configuration)                               |
| token endpoint refuses the service account       | retryable `auth` (configuration; names the    |
|                                                  | variable)                                     |
| QUOTA_EXCEEDED (429), RESOURCE_EXHAUSTED         | retryable (health), with Retry-After if given |
| UNAVAILABLE (503), INTERNAL (500), other 5xx     | retryable (health)                            |
| UNAUTHENTICATED (401, our access token refused)  | retryable `auth_rejected` (health: the token  |
|                                                  | is dropped and fetched again; a key that no   |
|                                                  | longer works fails at the token endpoint)     |
| other 4xx                                        | permanent `rejected` (message)                |
| token endpoint 5xx / `temporarily_unavailable`   | retryable `auth_unavailable` (health)         |
| connection refused, connect timeout (FCM or      | retryable `unreachable`, `timeout` (health)   |
| token endpoint)                                  |                                               |
| no answer in time once sent; 200 that is not JSON| retryable `timeout`, `malformed_response`     |
| or has no `name`; not HTTP                       | (health), *ambiguous*: FCM may have it        |

INVALID_ARGUMENT covers both a bad token and a bad payload (a reserved data key, a message too
big). It marks the address invalid only when the answer points at the token: a
`google.rpc.BadRequest` field violation on `message.token`, or, when the answer names no
field, a message mentioning the registration token ("The registration token is not a valid
FCM registration token"). Anything else is a payload problem: the token stays usable.

Three things the SDK does on its own that the pipeline must not suffer, changed in one place
(`_own_transport`) because firebase-admin 7.7 has no public option for them:
- it retries 500/503 four times with backoff (5 sends, 7 s for one failing device), while the
  pipeline retries and fails over itself: our client is the SDK's `HttpxAsyncClient` with
  `max_retries=0`;
- it fetches the OAuth token with blocking `requests` inside the event loop, and on any 401
  refreshes twice and sends again: the token is refreshed here in a thread before sending, and
  the client only applies it;
- it has no option for the FCM endpoint: `base_url` (tests) rewrites the send URL, only when
  it differs from Google's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import uuid
import warnings
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import httpx
import requests
from firebase_admin import credentials, exceptions, messaging
from google.auth.credentials import TokenState

from gateway.errors import ConfigError
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
    Retryable,
    SendResult,
    retry_after_seconds,
)
from gateway.providers.settings import FCM_API, FcmSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret, redact

DEFAULT_BASE_URL = FCM_API
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
# A Firebase installation ID: 128 bits, the first four 0111, as 22 characters of base64url.
# Registration tokens are far longer (150+ characters, with a colon).
FID = re.compile(r"[cdef][A-Za-z0-9_-]{21}")
APNS_COLLAPSE_ID_MAX = 64  # bytes, Apple's limit for apns-collapse-id (our ids are ASCII)

# FCM ErrorCode (or Google status) -> (our code, address invalid). INVALID_ARGUMENT is decided
# by `_names_token`; the retryable codes are below.
PERMANENT_CODES: Mapping[str, tuple[str, bool]] = {
    "UNREGISTERED": ("unregistered", True),
    "SENDER_ID_MISMATCH": ("sender_id_mismatch", True),
}
# FCM ErrorCode (or Google status) -> our code, for answers that say our project, service
# account or APNs/web-push credentials are wrong: the next provider may do.
CONFIGURATION_CODES: Mapping[str, str] = {
    "THIRD_PARTY_AUTH_ERROR": "third_party_auth",
    "APNS_AUTH_ERROR": "third_party_auth",  # the legacy name of THIRD_PARTY_AUTH_ERROR
}
RETRYABLE_CODES: Mapping[str, str] = {
    "QUOTA_EXCEEDED": "quota_exceeded",
    "RESOURCE_EXHAUSTED": "quota_exceeded",
    "UNAVAILABLE": "unavailable",
    "INTERNAL": "internal",
}


class _CachedTokenAuth(httpx.Auth):
    """Puts the current access token on each request and never fetches one: google-auth's
    refresh is blocking `requests`, so `FcmAdapter.send` does it in a thread beforehand."""

    def __init__(self, credential: Any) -> None:
        self.credential = credential

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.credential.apply(request.headers)
        yield request


class FcmAdapter:
    idempotent = False
    settings = FcmSettings
    secrets = FcmSettings.credentials
    limits = Limits(payload_bytes=4096)  # FCM: "the maximum payload for both message types"
    device_tokens = "fcm"  # the pipeline gives this adapter only devices registered with FCM tokens

    def __init__(
        self,
        name: str,
        channel: str,
        *,
        service_account: Secret,
        credential_var: str,
        project_id: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.channel = channel
        self.credential_var = credential_var
        info = _service_account_info(name, service_account, credential_var)
        try:
            certificate = credentials.Certificate(info)
        except ValueError:
            # The SDK's message quotes the parser's error, which may quote the key: name the fix.
            raise ConfigError(
                f"provider {name!r}: {credential_var} is not a usable service-account key; it needs "
                "type=service_account, private_key (PEM), client_email and token_uri"
            ) from None
        self.project_id = project_id or info.get("project_id")
        if not self.project_id:
            raise ConfigError(
                f"provider {name!r} needs settings.project_id (FIREBASE_PROJECT_ID), or a project_id "
                f"in the service account of {credential_var}"
            )
        self.credential = certificate.get_credential()
        self.app = firebase_admin.initialize_app(
            certificate,
            {"projectId": self.project_id, "httpTimeout": timeout},
            name=f"notigate-{name}-{uuid.uuid4().hex}",
        )
        # The token fetch: its own session, bounded by our timeout (google-auth's default is 120 s).
        self._token_session = requests.Session()
        self._token_request = functools.partial(
            google.auth.transport.requests.Request(self._token_session), timeout=timeout
        )
        self._refresh_lock = asyncio.Lock()
        self._client = _own_transport(
            self.app, _CachedTokenAuth(self.credential), base_url.rstrip("/"), self.project_id, timeout
        )
        self._closed = False

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> FcmAdapter:
        settings = spec.typed(FcmSettings)
        return cls(
            spec.name,
            spec.channel,
            service_account=spec.credential("service_account"),
            credential_var=spec.credential_vars["service_account"],
            project_id=settings.project_id,
            base_url=settings.base_url,
            timeout=spec.timeout,
        )

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        if address.kind != "device":
            return Permanent("wrong_address", f"{self.name}: FCM sends to devices, not to a {address.kind}")
        try:
            fcm_message = _fcm_message(message, address)
        except (TypeError, ValueError) as exc:
            return Permanent("invalid_message", f"{self.name}: {exc}")
        failure = await self._fresh_token()
        if failure is not None:
            return failure
        try:
            batch = await messaging.send_each_async([fcm_message], app=self.app)
        except ValueError as exc:  # the SDK's own validation of the message, before sending
            return Permanent("invalid_message", f"{self.name}: {_scrub(str(exc), address)}")
        except exceptions.FirebaseError as exc:  # UnknownError: an answer the SDK could not read
            return self._failure(exc, address)
        response = batch.responses[0]
        if response.success:
            return Delivered(provider_message_id=response.message_id)
        if response.exception is None:
            return Retryable(
                f"{self.name}: FCM answered 200 without a message name", code=MALFORMED, ambiguous=True
            )
        return self._failure(response.exception, address)

    async def _fresh_token(self) -> SendResult | None:
        """Refresh the access token off the event loop when it is missing or about to expire.

        A stale token (minutes from expiry) still works: if its refresh fails for a reason
        that may pass, the send goes ahead with it rather than failing now.
        """
        if self.credential.token_state is TokenState.FRESH:
            return None
        async with self._refresh_lock:
            state = self.credential.token_state
            if state is TokenState.FRESH:
                return None
            try:
                await asyncio.to_thread(self.credential.refresh, self._token_request)
            except google.auth.exceptions.RefreshError as exc:
                if getattr(exc, "retryable", False):
                    return self._unless_stale(
                        state,
                        Retryable(
                            f"{self.name}: Google's token endpoint is unavailable", code="auth_unavailable"
                        ),
                    )
                return Retryable(
                    f"{self.name}: Google's token endpoint refused the service account in "
                    f"{self.credential_var}; check the key is current and its service account enabled",
                    code="auth",
                    failure="configuration",
                )
            except google.auth.exceptions.TransportError as exc:
                if isinstance(exc.__cause__, requests.Timeout):
                    failure = Retryable(
                        f"{self.name}: the token endpoint did not answer in time", code=TIMEOUT
                    )
                else:
                    failure = Retryable(f"{self.name}: cannot reach the token endpoint", code=UNREACHABLE)
                return self._unless_stale(state, failure)
        return None

    @staticmethod
    def _unless_stale(state: TokenState, failure: Retryable) -> Retryable | None:
        return None if state is TokenState.STALE else failure

    def _failure(self, exc: exceptions.FirebaseError, address: Address) -> SendResult:
        cause = exc.cause
        if isinstance(cause, httpx.ConnectTimeout | httpx.PoolTimeout):  # nothing was sent
            return Retryable(f"{self.name}: could not connect to FCM in time", code=TIMEOUT)
        if isinstance(cause, httpx.TimeoutException):
            return Retryable(f"{self.name}: FCM did not answer in time", code=TIMEOUT, ambiguous=True)
        if isinstance(cause, httpx.RemoteProtocolError | ValueError | TypeError | AttributeError | KeyError):
            # Not HTTP, or a 200 whose body is not a JSON object (the SDK fails reading it).
            return Retryable(f"{self.name}: FCM's answer cannot be read", code=MALFORMED, ambiguous=True)
        if isinstance(cause, httpx.TransportError):
            return Retryable(f"{self.name}: cannot connect to FCM ({type(cause).__name__})", code=UNREACHABLE)
        response = exc.http_response
        if not isinstance(response, httpx.Response):
            return Retryable(f"{self.name}: {type(exc).__name__} without an answer", code="unknown")
        status = response.status_code
        error = _google_error(response)
        reason = _fcm_error_code(error) or str(error.get("status") or exc.code or "").upper()
        detail = _scrub(str(error.get("message") or ""), address)[:200]
        said = f"{self.name}: FCM answered {status} {reason}" + (f" ({detail})" if detail else "")
        if reason in PERMANENT_CODES:
            code, address_invalid = PERMANENT_CODES[reason]
            return Permanent(code, said, address_invalid=address_invalid)
        if reason in CONFIGURATION_CODES:
            return Retryable(said, code=CONFIGURATION_CODES[reason], failure="configuration")
        if reason == "INVALID_ARGUMENT":
            if _names_token(error):
                return Permanent("invalid_token", said, address_invalid=True)
            return Permanent("invalid_argument", said)
        if reason in RETRYABLE_CODES or status == 429 or status >= 500:
            return Retryable(
                said,
                retry_after_seconds(response.headers.get("retry-after")),
                code=RETRYABLE_CODES.get(reason, f"http_{status}"),
            )
        if reason == "UNAUTHENTICATED":
            self.credential.token = None  # revoked early: fetch a new one on the next send
            return Retryable(said, code="auth_rejected")
        if reason == "PERMISSION_DENIED":
            return Retryable(
                f"{said}: the service account of {self.credential_var} may not send for project "
                f"{self.project_id!r} (it needs the Firebase Cloud Messaging API and the "
                "cloudmessaging.messages.create permission)",
                code="permission_denied",
                failure="configuration",
            )
        if reason == "NOT_FOUND":
            return Retryable(
                f"{said}: check settings.project_id ({self.project_id!r})",
                code="not_found",
                failure="configuration",
            )
        return Permanent("rejected", said)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
        # delete_app() closes the messaging service with asyncio.run(), which cannot run inside
        # our event loop; our client is closed already, so in a thread it has nothing left to do.
        await asyncio.to_thread(firebase_admin.delete_app, self.app)
        self._token_session.close()


def _own_transport(app: Any, auth: httpx.Auth, base_url: str, project_id: str, timeout: float) -> Any:
    """Give the app's messaging service our HTTP client, and point it at `base_url`.

    The one place that reaches into firebase-admin's private state (checked against 7.7): the
    SDK has no option to turn its retries off, to fetch tokens off the event loop, or to choose
    the FCM endpoint (no emulator for FCM, and its httpx mounts override proxies). The client is
    the SDK's own `HttpxAsyncClient`, built with its documented `retry_config`.
    """
    from firebase_admin import _http_client, _retry

    service = messaging._get_messaging_service(app)
    client = _http_client.HttpxAsyncClient(timeout=timeout, retry_config=_retry.HttpxRetry(max_retries=0))
    client.async_client.auth = auth
    service._async_client = client
    if base_url != DEFAULT_BASE_URL:
        service._fcm_url = f"{base_url}/v1/projects/{project_id}/messages:send"
    return client


def _service_account_info(name: str, value: Secret, variable: str) -> dict[str, Any]:
    """The service-account JSON: the variable holds the JSON itself, or the path of its file."""
    text = value.reveal().strip()
    if not text.startswith("{"):
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"provider {name!r}: {variable} is neither service-account JSON (it does not start "
                f"with '{{') nor the path of a readable file ({type(exc).__name__})"
            ) from None
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"provider {name!r}: the service account in {variable} is not valid JSON "
            f"(line {getattr(exc, 'lineno', '?')}); download the key again from the Firebase console"
        ) from None
    if not isinstance(info, dict):
        raise ConfigError(f"provider {name!r}: the service account in {variable} is not a JSON object")
    return info


def _fcm_message(message: Message, address: Address) -> messaging.Message:
    fields = message.fields
    raw = fields.get("data") or {}
    if not isinstance(raw, Mapping):
        raise TypeError(f"the push template's data must be a mapping, not {type(raw).__name__}")
    data = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in raw.items()}
    data["notigate_delivery_id"] = message.delivery_id
    data["notigate_notification_id"] = message.notification_id
    title, body = fields.get("title"), fields.get("body")
    target = {"fid": address.value} if FID.fullmatch(address.value) else {"token": address.value}
    android, apns, webpush = _platform_options(message)
    with warnings.catch_warnings():
        # firebase-admin 7.7 deprecates `token` for `fid`, but apps that have not opted in to
        # installation IDs still register tokens, and FCM still serves them.
        warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
        return messaging.Message(
            notification=messaging.Notification(title=title, body=body) if title or body else None,
            data=data,
            android=android,
            apns=apns,
            webpush=webpush,
            **target,
        )


def _platform_options(
    message: Message,
) -> tuple[messaging.AndroidConfig | None, messaging.APNSConfig | None, messaging.WebpushConfig | None]:
    """Priority, lifetime and collapse key in each platform's own terms.

    FCM keeps a message for an offline device up to 4 weeks by default: the tier's expiry
    goes to Android's `ttl`, APNs' `apns-expiration` (an epoch second) and web push's `TTL`
    header, so a one-time code is dropped rather than shown hours late. The collapse key
    (`android.collapse_key`, `apns-collapse-id`, web push `Topic`) makes a resend of the
    same delivery replace the one shown instead of stacking."""
    urgent = message.priority == "urgent"
    lifetime = message.lifetime()
    ttl = math.ceil(lifetime) if lifetime is not None else None
    key = message.collapse_key
    apns_headers: dict[str, str] = {"apns-priority": "10"} if urgent else {}
    web_headers: dict[str, str] = {"Urgency": "high"} if urgent else {}
    if message.expires_at is not None and ttl is not None:
        apns_headers["apns-expiration"] = str(math.ceil(message.expires_at.timestamp()))
        web_headers["TTL"] = str(ttl)
    if key is not None:
        apns_headers["apns-collapse-id"] = key[:APNS_COLLAPSE_ID_MAX]
        web_headers["Topic"] = _web_topic(key)
    android = None
    if urgent or ttl is not None or key is not None:
        android = messaging.AndroidConfig(priority="high" if urgent else None, ttl=ttl, collapse_key=key)
    return (
        android,
        messaging.APNSConfig(headers=apns_headers) if apns_headers else None,
        messaging.WebpushConfig(headers=web_headers) if web_headers else None,
    )


def _web_topic(key: str) -> str:
    """RFC 8030's Topic: at most 32 characters of the URL-safe base64 alphabet."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)[-32:]


def _google_error(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of Google's error body; empty when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == kind]


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    for detail in _details(error, FCM_ERROR):
        code = detail.get("errorCode")
        if isinstance(code, str) and code:
            return code.upper()
    return None


def _names_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the payload."""
    fields = [
        str(violation.get("field", ""))
        for detail in _details(error, BAD_REQUEST)
        for violation in detail.get("fieldViolations") or []
        if isinstance(violation, dict)
    ]
    if fields:
        return "message.token" in fields
    return "registration token" in str(error.get("message") or "").lower()


def _scrub(text: str, address: Address) -> str:
    return text.replace(address.value, redact("device", address.value)) if address.value else text
