"""Addresses and secrets as logs may show them: enough to recognise, never enough to use.

`a***@example.com`, `+1415***0100`, `tok…9f2c`. Credentials are wrapped in `Secret`, whose
repr and str are masked, so an exception message or a debug log cannot leak them.
"""

from __future__ import annotations

import logging
import re
import urllib.parse


def redact(kind: str, value: str) -> str:
    if kind == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "phone":
        return f"{value[:5]}***{value[-4:]}" if len(value) > 9 else "***"
    if kind in ("device", "token"):
        return f"tok…{value[-4:]}" if len(value) > 8 else "tok…"
    if kind == "webhook":
        return re.sub(r"(//[^/]+).*", r"\1/…", value)
    return "***"


def mask_url(url: str) -> str:
    """A connection URL (database, Redis) with its password as `***`: where, never how to get in.
    A URL too broken to split is masked by pattern, so even it is echoed without the password."""
    by_pattern = re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return by_pattern
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return by_pattern  # no password where a URL keeps one; maybe where a broken one does
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


class Secret:
    """A credential that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class RedactUrls(logging.Filter):
    """Cut the path and query off URLs in httpx's request log (`HTTP Request: POST <url> ...`).

    A user's webhook URL is an address and often a credential (a token in its path); httpx
    logs every request's URL at INFO. The host is kept, so a log still says where it went.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact("webhook", str(a)) if _looks_like_url(a) else a for a in record.args)
        return True


def _looks_like_url(value: object) -> bool:
    text = str(value) if type(value).__name__ == "URL" or isinstance(value, str) else ""
    return text.startswith(("http://", "https://"))


def _drop(record: logging.LogRecord) -> bool:
    return False


# Loggers that dump what they carry at DEBUG, silenced whatever the level:
# - hpack (HTTP/2 header compression, under httpx's HTTP/2) logs every header it encodes
#   or decodes: `:path` (an APNs device token), `authorization` (a provider token);
# - aiosqlite logs every statement with its parameters: addresses, tokens, message text.
QUIET_LOGGERS = ("hpack.hpack", "hpack.table", "aiosqlite")


def redact_http_logs() -> None:
    """Install `RedactUrls` on httpx's logger and silence the dumps of `QUIET_LOGGERS`, once
    per process."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactUrls) for f in logger.filters):
        logger.addFilter(RedactUrls())
    for name in QUIET_LOGGERS:
        quiet = logging.getLogger(name)
        if _drop not in quiet.filters:
            quiet.addFilter(_drop)
