"""JSON request bodies, checked at the edge before any route sees them.

Every route that takes a JSON body reads it through `GatewayRequest.json()`, so every one
refuses alike, in the error shape, naming the field where there is one:
- a body that says it is not JSON (`text/plain`, a form) answers 415; none at all is taken
  as JSON, as curl and most clients send it;
- bytes that are not UTF-8, and nesting deeper than `MAX_DEPTH`, answer 400 (the decoder
  would raise UnicodeDecodeError or RecursionError: a 500);
- a NUL character in any string or object key answers 422 naming its path (`data.note`,
  `intents[2].user_id`): PostgreSQL cannot store one, and a value one store holds and the
  other refuses would make the same request succeed or fail by deployment.
The checks cost a byte search on an ordinary body; the walk that names the path runs only
when the bytes say there is something to find.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from gateway.errors import ClientError, MalformedBody, UnsupportedMediaType

MAX_DEPTH = 32  # objects and arrays within one another; the deepest legitimate body is ~6


class GatewayRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is checked as the module docstring says."""

    async def json(self) -> Any:
        body = await self.body()
        media_type = self.content_type[0]
        if media_type and not _is_json(media_type):
            raise UnsupportedMediaType(
                f"the body is {media_type}; send JSON with content-type: application/json"
            )
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"the body is not valid UTF-8 (byte {exc.start})") from None
        try:
            value = await super().json()
        except RecursionError:
            raise _too_deep() from None
        check_value(value, body)
        return value


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _too_deep() -> MalformedBody:
    return MalformedBody(f"the body nests objects and arrays deeper than {MAX_DEPTH} levels")


def check_value(value: Any, body: bytes) -> None:
    """Refuse deep nesting and NUL characters; `body` (the value's encoding) lets an ordinary
    body skip the walk: fewer brackets than the limit cannot nest deeper, and no escaped NUL
    (raw control characters are not valid JSON) means none in any string."""
    deep = body.count(b"[") + body.count(b"{") > MAX_DEPTH
    nul = b"\\u0000" in body
    if deep or nul:
        _walk(value)


def _walk(value: Any) -> None:
    """Depth-first without recursion (the value may be nested ~1,000 deep)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise _nul(path)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    raise _nul(child_path.replace("\x00", "\\u0000"))
                stack.append((child, child_path, depth + 1))
        else:
            stack.extend((child, f"{path}[{n}]", depth + 1) for n, child in enumerate(item))


def _nul(path: str) -> ClientError:
    return ClientError(
        f"`{path}` holds a NUL character (\\u0000), which the store cannot hold",
        field=path or None,
        code="invalid_character",
    )
