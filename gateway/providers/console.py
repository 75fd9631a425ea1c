"""The dev profile's provider: writes what would be sent under a local folder, sends nothing.

- email: `<directory>/email/<delivery>-<tag>.eml`, the message SMTP would send (built by
  `gateway.providers.mime`), which any mail client opens;
- every other channel: one JSON line per (delivery, recipient) in `<directory>/<channel>.jsonl`.

`<tag>` is a short hash of the recipient, so the file names show no address.

Each (delivery, recipient) is written exactly once, across processes and crashes, because
a worker that died after sending, before recording, sends the same delivery again; that
is what makes this adapter `idempotent`, and the fault tests count what was written:
- an `.eml` file is hard-linked into place from a temporary file; the link fails if the
  file exists, so a resend finds the copy and writes nothing;
- a `.jsonl` line is appended under an exclusive `flock` on the file, only if no line of
  the file already has its key. The file is the only record: each adapter keeps the keys
  it has read (as digests, `KeyRecord`) and how far it read, and under the lock reads only
  what others appended since. A line a crashed writer left half-written is cut off before
  the next append.

A crashed *process* loses nothing it wrote: the kernel holds the write. Nothing is fsynced,
so a power loss may lose the last writes, which for a dev outbox is not worth paying for:
an fsync per message was a fifth of the dev profile's cost per delivery (219 -> 266
deliveries/s without it, `bench.delivery`).
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import hashlib
import heapq
import logging
import os
import re
import threading
from array import array
from pathlib import Path
from typing import Any

import msgspec

from gateway.batching import ThreadLane
from gateway.providers import mime
from gateway.providers.base import Address, Delivered, Message, Permanent, SendResult
from gateway.providers.settings import DEFAULT_SENDER
from gateway.redact import redact

log = logging.getLogger("gateway.providers.console")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class KeyRecord:
    """The keys a journal has seen, as 64-bit digests: about 8 bytes each (8.4 MB for a
    million) where a set of the strings took ~128, so a worker writing 130 lines a second
    grows by ~70 kB a minute rather than ~1 MB (the whole of a soak's growth, dev profile).

    The newest digests sit in a set; when it reaches an eighth of the rest it is merged into
    one sorted array, searched by bisection. Two different keys share a digest with a
    probability of about n²/2⁶⁵ (one in 370,000 at ten million lines): the second would then
    not be written, a risk a dev outbox can take and a real provider's adapter never does."""

    _MERGE_AT = 4096

    def __init__(self) -> None:
        self._sorted = array("Q")
        self._newest: set[int] = set()

    def __contains__(self, key: str) -> bool:
        digest = _digest(key)
        if digest in self._newest:
            return True
        at = bisect.bisect_left(self._sorted, digest)
        return at < len(self._sorted) and self._sorted[at] == digest

    def __len__(self) -> int:
        return len(self._sorted) + len(self._newest)

    def add(self, key: str) -> None:
        self._newest.add(_digest(key))
        if len(self._newest) >= max(self._MERGE_AT, len(self._sorted) // 8):
            # One int at a time into a new array: no list of every digest is built, so the
            # merge leaves no heap of freed objects behind for the process to keep.
            merged = array("Q", heapq.merge(self._sorted, sorted(self._newest)))
            self._sorted, self._newest = merged, set()

    def clear(self) -> None:
        self._sorted, self._newest = array("Q"), set()


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Journal:
    """A `.jsonl` file where each key appears at most once, whoever appends to it.

    One per file per adapter; several (in one process or many) may share a file: the
    `flock` orders them, and each catches up on the others' lines before deciding.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = KeyRecord()
        self._read_to = 0  # bytes of the file already read into _keys
        self._lock = threading.Lock()  # flock is per open file, not per thread

    def append_once(self, key: str, record: dict[str, Any]) -> bool:
        """Append `record` (with its `key`) unless the file has the key; True when written."""
        line = msgspec.json.encode({"key": key, **record}) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._catch_up(fd)
                if key in self._keys:
                    return False
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                self._keys.add(key)
                self._read_to += len(line)
                return True
            finally:
                os.close(fd)  # releases the flock

    def _catch_up(self, fd: int) -> None:
        """Read the lines appended since we last looked; cut a torn last line (its writer
        died mid-write, under the lock we now hold, so nothing was sent)."""
        size = os.fstat(fd).st_size
        if size < self._read_to:  # the file was replaced or truncated: read it again
            self._keys.clear()
            self._read_to = 0
        new = os.pread(fd, size - self._read_to, self._read_to) if size > self._read_to else b""
        complete = new.rfind(b"\n") + 1
        for raw in new[:complete].splitlines():
            try:
                key = msgspec.json.decode(raw).get("key")
            except (msgspec.DecodeError, AttributeError):
                log.warning("%s: skipping a line that is not a JSON object", self.path.name)
                continue
            if isinstance(key, str):
                self._keys.add(key)
        self._read_to += complete
        if complete < len(new):
            log.warning("%s: cutting a line a crashed writer left unfinished", self.path.name)
            os.ftruncate(fd, self._read_to)


class ConsoleAdapter:
    idempotent = True

    def __init__(self, name: str, channel: str, directory: Path, *, sender: str = DEFAULT_SENDER) -> None:
        self.name = name
        self.channel = channel
        self.directory = directory
        self.sender = sender
        self._journals: dict[str, Journal] = {}
        self._journals_lock = threading.Lock()
        # The writes run on a thread of the adapter's own, many per wake-up (`ThreadLane`).
        self._lane = ThreadLane(f"outbox-{name}")

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        # Like a provider that received the request, a write once handed over is finished even
        # when the caller stops waiting (the pipeline's backstop timeout after a paused or
        # starved process): cancelling it while it waited for a thread would drop it unseen,
        # and a push whose other devices got it would count as delivered. A retry finds it
        # written and writes nothing (the key).
        return await asyncio.shield(self._lane.call(self._write, message, address, idempotency_key))

    def _write(self, message: Message, address: Address, idempotency_key: str) -> SendResult:
        key = f"{_UNSAFE_NAME.sub('_', idempotency_key)}-{address.tag}"
        if message.channel == "email":
            try:
                written = self._write_eml(message, address, key)
            except mime.InvalidRecipient as exc:  # what SMTP would answer, without a server
                return Permanent("invalid_address", f"{self.name}: {exc}", address_invalid=True)
            except ValueError as exc:  # as the SMTP adapter says it
                return Permanent("unsendable", f"{self.name}: the message cannot be written as email: {exc}")
        else:
            written = self._journal(message.channel).append_once(key, self._record(message, address))
        if not written:
            log.info("%s: %s already written; not sending it twice", self.name, key)
        log.info(
            "%s %s -> %s: %s",
            message.channel,
            message.event,
            redact(address.kind, address.value),
            message.fields.get("subject") or message.fields.get("title") or message.fields.get("body") or "",
        )
        return Delivered(provider_message_id=key)

    def _write_eml(self, message: Message, address: Address, key: str) -> bool:
        folder = self.directory / "email"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}.eml"
        if target.exists():
            return False
        mail = mime.compose(message, address, self.sender)  # refused before any file is made
        temporary = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        with temporary.open("wb") as file:
            # An internationalized address (RFC 6532) is written as UTF-8, as SMTPUTF8 sends it.
            file.write(mail.flatten(utf8=not address.value.isascii()))
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def _journal(self, channel: str) -> Journal:
        name = _UNSAFE_NAME.sub("_", channel)
        with self._journals_lock:
            journal = self._journals.get(name)
            if journal is None:
                journal = self._journals[name] = Journal(self.directory / f"{name}.jsonl")
            return journal

    def _record(self, message: Message, address: Address) -> dict[str, Any]:
        return {
            "delivery_id": message.delivery_id,
            "notification_id": message.notification_id,
            "event": message.event,
            "channel": message.channel,
            "user_id": message.user_id,
            "provider": self.name,
            "to": {"kind": address.kind, "value": address.value, "platform": address.platform},
            "locale": message.locale,
            "fields": message.fields,
            "headers": message.headers,
        }

    async def close(self) -> None:
        self._lane.close()
