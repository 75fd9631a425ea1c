"""The gateway's exception hierarchy, mapped to HTTP responses in one place (`api/errors.py`).

A `ClientError` is the caller's to fix and always names a machine-readable `code`, a
sentence a person can act on, and (when one field is at fault) the field's path, e.g.
`intent.priority`. A `ServerError` is ours; its message never carries secrets.
"""

from __future__ import annotations


class NotigateError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class ClientError(NotigateError):
    status = 422
    code = "invalid_request"


class MalformedBody(ClientError):
    """A request body that is not JSON we can read (not UTF-8, nested too deep, broken)."""

    status = 400
    code = "malformed_json"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class Unstorable(ClientError):
    """A value of the request the store cannot hold (a NUL character, a number beyond its
    column, ...): the same request fails the same way every time, so it is the caller's."""

    code = "unstorable_value"


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RateLimited):
    """Sheddable intake (low priority, bulk) refused while deliveries are behind (`admission`)."""

    code = "overloaded"


class ServerError(NotigateError):
    status = 500
    code = "internal_error"


class Unavailable(ServerError):
    """A dependency (database, Redis) cannot be reached; nothing was stored half-way."""

    status = 503
    code = "unavailable"


class HistoryUnavailable(Unavailable):
    """Redis (delivery history, caps, dedup state) cannot be reached."""

    code = "history_unavailable"


class ConfigError(Exception):
    """A setting has a value we cannot use; the message names the variable and the value."""
