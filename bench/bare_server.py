"""The yardstick for the dry-run endpoint: the same framework and server doing no work.

`uvicorn --factory bench.bare_server:app` serves `POST /bare`, which decodes the very
same request bodies the dry-run endpoint gets into typed msgspec Structs of the same shape
(minus the gateway's field constraints) and answers with a small Struct. Whatever the
dry-run endpoint costs beyond this is the gateway's own work: validation, the decision and
encoding the Decision. `POST /bare/intents` is the same for the intake endpoint.

Deliberately imports nothing from `gateway`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Litestar, post
from msgspec import Struct, field


class BareIntent(Struct, frozen=True, kw_only=True):
    event: str
    user_id: str
    data: dict[str, Any] = field(default_factory=dict)
    priority: str = "normal"
    channels: list[str] | None = None
    idempotency_key: str | None = None
    send_at: dt.datetime | None = None
    locale: str | None = None


class BareDevice(Struct, frozen=True, kw_only=True):
    platform: str
    token: str
    active: bool = True


class BareContacts(Struct, frozen=True, kw_only=True):
    email: str | None = None
    phone: str | None = None
    devices: list[BareDevice] = field(default_factory=list)
    webhook: str | None = None


class BarePreference(Struct, frozen=True, kw_only=True):
    event: str
    channel: str = "*"
    enabled: bool = True
    frequency_cap: int | None = None


class BareQuietHours(Struct, frozen=True, kw_only=True):
    start: str
    end: str


class BareUser(Struct, frozen=True, kw_only=True):
    user_id: str
    timezone: str | None = None
    locale: str | None = None
    contacts: BareContacts = field(default_factory=BareContacts)
    preferences: list[BarePreference] = field(default_factory=list)
    quiet_hours: BareQuietHours | None = None


class BareHistoryEntry(Struct, frozen=True, kw_only=True):
    event: str
    channel: str
    at: dt.datetime
    fingerprint: str | None = None
    category: str | None = None
    priority: str | None = None
    idempotency_key: str | None = None
    notification_id: str | None = None
    batched: bool = False
    data: dict[str, Any] | None = None


class BareRequest(Struct, frozen=True, kw_only=True):
    intent: BareIntent
    user: BareUser | None = None
    at: dt.datetime | None = None
    history: list[BareHistoryEntry] | None = None


class Ack(Struct, frozen=True, kw_only=True):
    event: str
    user_id: str
    history: int


@post("/bare", status_code=200)
async def bare(data: BareRequest) -> Ack:
    return Ack(event=data.intent.event, user_id=data.intent.user_id, history=len(data.history or ()))


class BareAccepted(Struct, frozen=True, kw_only=True):
    notification_id: str
    status: str = "accepted"


@post("/bare/intents", status_code=202)
async def bare_intent(data: BareIntent) -> BareAccepted:
    """The yardstick for `POST /v1/intents`: decode the same body, answer the same shape."""
    return BareAccepted(notification_id=f"n_{data.user_id}")


def app() -> Litestar:
    return Litestar(route_handlers=[bare, bare_intent], debug=False)
