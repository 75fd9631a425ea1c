"""What the dev profile "sent": read back from its outbox folder, for tests.

`email/*.eml` files and `<channel>.jsonl` lines (see gateway/providers/console.py), as one
list of `Sent`, whatever the channel.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from gateway.providers.mime import DELIVERY_HEADER


@dataclass(frozen=True)
class Sent:
    channel: str
    delivery_id: str
    to: str  # the address value
    path: Path
    record: dict[str, Any] = field(default_factory=dict)  # a JSON line; empty for email
    email: EmailMessage | None = None  # the parsed .eml; None for other channels


def read_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def sent(directory: Path) -> list[Sent]:
    """Everything in the outbox, emails first, then each channel's lines in file order."""
    found: list[Sent] = []
    for path in sorted((directory / "email").glob("*.eml")) if (directory / "email").is_dir() else []:
        mail = read_eml(path)
        found.append(Sent("email", str(mail[DELIVERY_HEADER]), str(mail["To"]), path, email=mail))
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found.append(Sent(record["channel"], record["delivery_id"], record["to"]["value"], path, record))
    return found


def per_delivery(directory: Path) -> dict[str, int]:
    """How many recipients each delivery was written for."""
    return dict(Counter(s.delivery_id for s in sent(directory)))
