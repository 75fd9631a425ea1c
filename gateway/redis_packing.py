"""Redis commands packed by hiredis's C packer rather than redis-py's Python one.

redis-py's asyncio connection packs a command in Python, joining a growing buffer once per
argument: 54 µs for the 44 arguments of one history script over an intake micro-batch (two
keys for each of 18 users), where `hiredis.pack_command` writes the same bytes in 7 µs (RESP
has one spelling for a command). Intake sends two such scripts per micro-batch and a quota
script, about 11 µs per accepted intent. hiredis is already installed: redis-py reads
replies with it.

Whatever hiredis does not pack as redis-py would goes through redis-py's own packer: a
command whose name holds a space ("CONFIG GET", which redis-py splits), an argument it does
not take (None, a bool: redis-py's error names it), a client with an encoding other than
UTF-8. Only plain TCP connections use this; a `rediss://` or `unix://` URL keeps redis-py's
class for its scheme.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection

_UTF8 = frozenset({"utf-8", "utf8"})


class PackedConnection(Connection):
    """A redis-py asyncio connection whose commands hiredis packs (see the module docstring)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (
            (b" " in name if isinstance(name, bytes) else isinstance(name, str) and " " in name)
            or self.encoder.encoding.lower() not in _UTF8
            or self.encoder.encoding_errors != "strict"
        ):
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # an argument redis-py refuses too, with its own error
            return super().pack_command(*args)
