"""The dev console provider: prints what would be sent and keeps a copy, sending nothing.

Each (delivery, recipient) is written once to `<directory>/<channel>/<delivery>-<n>.json`
through a hard link from a temporary file, which fails if the file exists: sending the
same delivery again (a worker that died after sending, before recording) finds the copy
and reports success without writing a second one. That makes the dev pipeline exactly
once per address, which the fault tests check file by file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import msgspec

from gateway.providers.base import Address, Delivered, Message, SendResult
from gateway.redact import redact

log = logging.getLogger("gateway.providers.console")


class ConsoleAdapter:
    idempotent = True

    def __init__(self, name: str, channel: str, directory: Path) -> None:
        self.name = name
        self.channel = channel
        self.directory = directory

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        return await asyncio.to_thread(self._write, message, address, idempotency_key)

    def _write(self, message: Message, address: Address, idempotency_key: str) -> SendResult:
        folder = self.directory / message.channel
        folder.mkdir(parents=True, exist_ok=True)
        tag = hashlib.sha256(f"{address.kind}:{address.value}".encode()).hexdigest()[:10]
        target = folder / f"{idempotency_key}-{tag}.json"
        record = {
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
        temporary = folder / f".{target.name}.{os.getpid()}.tmp"
        temporary.write_bytes(msgspec.json.format(msgspec.json.encode(record), indent=2))
        try:
            os.link(temporary, target)
        except FileExistsError:
            log.info("%s: %s already written; not sending it twice", self.name, target.name)
        finally:
            temporary.unlink(missing_ok=True)
        log.info(
            "%s %s -> %s: %s",
            message.channel,
            message.event,
            redact(address.kind, address.value),
            message.fields.get("subject") or message.fields.get("title") or message.fields.get("body") or "",
        )
        return Delivered(provider_message_id=target.stem)

    async def close(self) -> None:
        return None
