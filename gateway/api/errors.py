"""Every error response, in the contract's shape, from one place.

`{"error": {"code": "machine_readable", "message": "human sentence", "field": "intent.priority"}}`
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from gateway.errors import NotigateError, RateLimited
from gateway.quota import retry_after

log = logging.getLogger("gateway.api")


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`")
_LEADING_FIELD = re.compile(r"^`([A-Za-z_][A-Za-z0-9_]*)`")


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(ErrorDetail(code=code, message=message, field=field)), status_code=status, headers=headers
    )


def _body_path(key: str | None) -> str | None:
    """Litestar names the body `data`; the contract names fields from the body's root."""
    if not key:
        return None
    if key == "data":
        return None
    return key[5:] if key.startswith("data.") else key


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    if not extra:
        detail = str(exc.detail)
        if "malformed" in detail.lower() or "json" in detail.lower():
            return error_response(400, "malformed_json", f"the body is not valid JSON: {detail}")
        return error_response(400, "bad_request", detail)
    first = extra[0] if isinstance(extra[0], dict) else {}
    message = str(first.get("message", exc.detail))
    if first.get("key") == "data" and message == "'data'":  # Litestar's KeyError for no body
        return error_response(422, "missing_body", "the request needs a JSON body")
    if first.get("source") not in (None, "body"):  # a query, path or header parameter, named plainly
        name = str(first.get("key"))
        return error_response(422, "invalid_value", f"`{name}`: {message}", name)
    field = _body_path(first.get("key")) or _path_from_cause(exc)
    code = "invalid_value"
    if match := _MISSING.search(message):
        field, code = _join(field, match.group(1)), "missing_field"
        message = f"`{field}` is required"
    elif match := _UNKNOWN.search(message):
        field, code = _join(field, match.group(1)), "unknown_field"
        message = f"`{field}` is not a known field"
    elif match := _LEADING_FIELD.match(message):
        field = _join(field, match.group(1))
    elif field:
        message = f"`{field}`: {message}"
    else:
        message = f"the body: {message}"
    return error_response(422, code, message, field)


_AT = re.compile(r" - at `\$(?:\.data)?([^`]*)`")


def _path_from_cause(exc: Exception) -> str | None:
    """Litestar names only `$.`-style paths; a body that is a list (`$[1].event`) loses its path."""
    seen: BaseException | None = exc.__cause__
    while seen is not None:
        match = _AT.search(str(seen))
        if match and match.group(1):
            return match.group(1).lstrip(".")
        seen = seen.__cause__
    return None


def _join(base: str | None, name: str) -> str:
    return f"{base}.{name}" if base else name


def notigate_error(request: Request[Any, Any, Any], exc: NotigateError) -> Response[ErrorBody]:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(retry_after(exc.retry_after))}  # rounded up: never too soon
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.field, headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if status == 400 and (_caused_by_decoding(exc) or "malformed" in str(exc.detail).lower()):
        return error_response(400, "malformed_json", f"the body is not valid JSON: {exc.detail}")
    return error_response(status, _STATUS_CODES.get(status, f"http_{status}"), str(exc.detail), None, headers)


def _caused_by_decoding(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, msgspec.DecodeError) and not isinstance(seen, msgspec.ValidationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "the gateway failed to handle this request; it has been logged",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: validation_error,
    NotigateError: notigate_error,
    HTTPException: http_error,
    Exception: internal_error,
}
