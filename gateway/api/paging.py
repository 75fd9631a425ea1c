"""Keyset page cursors that are ids: a cursor the API did not hand out answers 422.

A list's `next_cursor` is the id of the last row of its page; the next page is the rows
below it. Compared as text, a garbage cursor (`zzz`, `../`) would silently give an empty
or wrong page, so it is refused like the inbox's opaque cursors are
(`gateway.store.inbox.decode_cursor`), with the same code.
"""

from __future__ import annotations

from gateway.errors import ClientError
from gateway.ids import is_id


def id_cursor(cursor: str | None, prefix: str) -> str | None:
    if cursor is None or is_id(cursor, prefix):
        return cursor
    raise ClientError(
        "this cursor is not one the list handed out: pass `next_cursor` from the previous page unchanged",
        field="cursor",
        code="invalid_cursor",
    )
