"""Sortable unique ids (ULID layout): 48 bits of milliseconds then 80 random bits.

Time-ordered ids keep B-tree inserts at the end of the index (SQLite and PostgreSQL both
write faster that way) and make ids roughly sortable by creation, which operators like
when reading logs. Crockford base32, 26 characters, with a short type prefix.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return f"{prefix}_{''.join(reversed(chars))}"
